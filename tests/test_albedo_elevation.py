"""``albedo_elevation_min``: the colour's (albedo-shaded) renders keep to the elevations a colour prior has seen
while the shape's (lit, textureless) renders go lower, where a solid's underside sags unseen
(results/quality/README.md, "Session 28")."""

from __future__ import annotations

import pytest

from shared.settings import GenerationSettings, SettingError


def _elevations_by_shading(trainer, renders: int) -> dict[str, list[float]]:
    seen: dict[str, list[float]] = {"albedo": [], "lit": []}
    for _ in range(renders):
        render = trainer.render_step()
        seen["albedo" if render.shading == "albedo" else "lit"] += render.cameras.elevation.tolist()
    return seen


def test_albedo_renders_keep_to_their_floor_and_the_shape_renders_go_below(tiny_model_path):
    from backend.engine.trainer import prepare_generation
    from tests.helpers import tiny_settings

    common = dict(albedo_warmup_steps=0, elevation_min=-40.0, elevation_max=10.0, resolution_schedule="16x4")
    floored = prepare_generation(tiny_settings(albedo_elevation_min=0.0, **common), device="cpu").trainer
    seen = _elevations_by_shading(floored, 24)
    assert len(seen["albedo"]) >= 4 and len(seen["lit"]) >= 4      # both shadings drawn (albedo 25% of steps)
    assert min(seen["albedo"]) >= -1e-3
    assert min(seen["lit"]) < -15.0                                   # the shape's cameras keep the whole range
    # Off (the default): the albedo renders come from the whole range too.
    plain = _elevations_by_shading(prepare_generation(tiny_settings(**common), device="cpu").trainer, 24)
    assert min(plain["albedo"]) < -15.0


def test_an_albedo_floor_above_the_highest_camera_is_refused_by_name():
    with pytest.raises(SettingError, match="albedo_elevation_min"):
        GenerationSettings(prompt="a red cube", elevation_max=30.0, albedo_elevation_min=40.0).validate()
