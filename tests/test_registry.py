"""Guidance and geometry types by name: the registry, the settings that pick a type, and what a
guidance receives (the camera of every render, not only its view name)."""

import math

import pytest
import torch

from backend.engine.api import generate, load_guidance_for
from backend.engine.cameras import CameraBatch, spherical_to_position, view_direction
from backend.engine.field import NeRFField
from backend.engine.guidance.base import Guidance, PromptEmbeddings
from backend.engine.registry import find, names, register, unregister
from backend.engine.trainer import Trainer, run_generation
from shared.settings import GEOMETRY_TYPES, GUIDANCE_TYPES, GenerationSettings, SettingError
from tests.helpers import tiny_settings

TARGET = torch.tensor([0.1, 0.9, 0.2])


class TargetColourGuidance(Guidance):
    """Pulls every render towards one colour, and records what each call received."""

    calls: list = []       # per call: rgb shape, views, cameras, loss (class-level: the loader builds the instance)

    def __init__(self, model_path, device, *, half_precision=True):
        self.device, self.name, self.resolution = torch.device(device), "target-colour", 32

    def configure(self, settings):
        self.scale = settings.guidance_scale

    def encode_prompts(self, prompt, negative_prompt, view_suffixes):
        empty = torch.zeros(1, 1, 1)
        return PromptEmbeddings(by_view={"": empty, **{v: empty for v in view_suffixes}}, uncond=empty)

    def __call__(self, rgb, embeddings, views, *, cameras, guidance_scale, t_range):
        loss = ((rgb - TARGET) ** 2).mean()
        self.calls.append({"shape": tuple(rgb.shape), "views": list(views), "cameras": cameras,
                           "loss": float(loss.detach())})
        return {"loss_sds": loss}


@pytest.fixture
def target_guidance():
    """"test-target-colour" registered for one test (and its name accepted by the settings)."""
    TargetColourGuidance.calls = []
    register("guidance", "test-target-colour")(TargetColourGuidance)
    yield TargetColourGuidance
    unregister("guidance", "test-target-colour")


def fixed_camera_settings(**overrides):
    """Two renders per step from a known elevation and distance, no jitter."""
    return tiny_settings(resolution_schedule="32x2", elevation_min=20.0, elevation_max=20.0, distance_min=1.7,
                         distance_max=1.7, camera_perturb=0.0, center_perturb=0.0, up_perturb=0.0, **overrides)


def test_builtin_types_are_the_names_the_settings_declare():
    # shared/settings.py cannot import the engine, so it declares the names; a type added on one
    # side only would be unselectable (or unknown to Blender and the server).
    assert names("guidance") == sorted(GUIDANCE_TYPES)
    assert names("geometry") == sorted(GEOMETRY_TYPES)
    defaults = GenerationSettings()
    assert find("guidance", defaults.guidance_type).__name__ == "StableDiffusionGuidance"
    assert find("geometry", defaults.geometry_type) is NeRFField


@pytest.mark.parametrize("setting,kind", [("guidance_type", "guidance"), ("geometry_type", "geometry")])
def test_unknown_type_names_the_setting_and_the_allowed_names(setting, kind):
    with pytest.raises(SettingError) as e:
        GenerationSettings.from_dict({"prompt": "a red cube", setting: "no-such-type"})
    assert e.value.name == setting
    allowed = GUIDANCE_TYPES if kind == "guidance" else GEOMETRY_TYPES
    assert all(name in e.value.message for name in allowed) and "no-such-type" in e.value.message
    with pytest.raises(SettingError) as e:
        find(kind, "no-such-type")
    assert e.value.name == setting and all(name in e.value.message for name in allowed)


@pytest.mark.parametrize("flag,allowed", [("--guidance-type", GUIDANCE_TYPES), ("--geometry-type", GEOMETRY_TYPES),
                                          ("--hashgrid-backend", ("auto", "torch"))])
def test_cli_flags_come_from_the_schema_and_name_the_allowed_values(flag, allowed, capsys):
    from backend.cli import build_parser, generate_main

    assert flag in build_parser().format_help()
    with pytest.raises(SystemExit) as e:
        generate_main(["a red cube", flag, "nonsense"])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert flag in err and all(name in err for name in allowed)


def test_a_name_is_registered_once():
    class Other(NeRFField):
        pass

    with pytest.raises(ValueError, match="implicit-volume"):
        register("geometry", "implicit-volume")(Other)
    assert find("geometry", "implicit-volume") is NeRFField


def test_a_guidance_registered_here_is_picked_by_the_setting_and_drives_the_field(target_guidance):
    settings = fixed_camera_settings(guidance_type="test-target-colour", steps=6, mesh_resolution=32)
    result = generate(settings, device="cpu")
    assert result.metadata["guidance"] == "target-colour"
    calls = target_guidance.calls
    assert len(calls) == 6 and all(c["shape"] == (2, 32, 32, 3) for c in calls)
    # Its loss is the one optimised.
    assert result.metadata["final_losses"]["sds"] == pytest.approx(calls[-1]["loss"])
    # Without registration the same settings are refused by name.
    unregister("guidance", "test-target-colour")
    with pytest.raises(SettingError, match="guidance_type"):
        fixed_camera_settings(guidance_type="test-target-colour")


def test_each_render_reaches_the_guidance_with_its_camera(target_guidance):
    settings = fixed_camera_settings(guidance_type="test-target-colour", steps=3)
    guidance = load_guidance_for(settings, "cpu")
    assert isinstance(guidance, TargetColourGuidance)
    trainer = Trainer(settings, guidance, torch.device("cpu"))
    inside = torch.rand(512, 3) * 0.6 - 0.3          # within the initial blob

    def colour_error() -> float:
        with torch.no_grad():
            return float((trainer.field.albedo(inside) - TARGET).abs().mean())

    before = colour_error()
    for _ in range(3):
        trainer.train_step()
    assert colour_error() < before - 0.01            # its gradient reached the field
    assert len(target_guidance.calls) == 3
    for call in target_guidance.calls:
        cams = call["cameras"]
        assert isinstance(cams, CameraBatch) and cams.c2w.shape == (2, 4, 4)
        assert torch.allclose(cams.elevation, torch.full((2,), 20.0))
        assert torch.allclose(cams.distance, torch.full((2,), 1.7))
        # Stratified azimuths: the two renders of a step are half a turn apart (up to the random offset).
        assert 0.0 < abs(float(cams.azimuth[0] - cams.azimuth[1])) < 360.0
        # The camera the render was made from: its position, and the view name the prompt used.
        expected = spherical_to_position(cams.elevation, cams.azimuth, cams.distance)
        assert torch.allclose(cams.positions.cpu(), expected, atol=1e-5)
        assert call["views"] == [view_direction(e, a, settings.front_threshold, settings.overhead_threshold,
                                                settings.view_naming)
                                 for e, a in zip(cams.elevation.tolist(), cams.azimuth.tolist())]
    azimuths = [a for c in target_guidance.calls for a in c["cameras"].azimuth.tolist()]
    assert len({round(a, 3) for a in azimuths}) == 6          # a new draw every step


def test_a_guidance_of_another_type_than_the_setting_is_refused(target_guidance):
    guidance = TargetColourGuidance("unused", "cpu")
    with pytest.raises(ValueError, match="guidance_type"):
        run_generation(tiny_settings(), device="cpu", guidance=guidance)


def test_a_geometry_registered_here_is_picked_by_the_setting():
    @register("geometry", "test-counting-volume")
    class CountingVolume(NeRFField):
        steps_seen: list = []

        def update_step(self, step):
            self.steps_seen.append(step)
            super().update_step(step)

    try:
        guidance = load_guidance_for(tiny_settings(), "cpu")
        trainer = Trainer(tiny_settings(geometry_type="test-counting-volume"), guidance, torch.device("cpu"))
        assert type(trainer.field) is CountingVolume
        trainer.train_step()
        trainer.train_step()
        assert CountingVolume.steps_seen[-2:] == [0, 1]
    finally:
        unregister("geometry", "test-counting-volume")


def test_hashgrid_backend_setting_reaches_the_encoder():
    guidance = load_guidance_for(tiny_settings(), "cpu")
    for backend, fused in (("auto", True), ("torch", False)):
        trainer = Trainer(tiny_settings(hashgrid_backend=backend), guidance, torch.device("cpu"))
        assert trainer.field.encoding.fused is fused


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_speed_settings_reach_the_gpu_engine():
    """cuda_graphs, checkpoint_rays and hashgrid_backend act on CUDA only (on the CPU the engine
    always runs eagerly, unchunked, in PyTorch)."""
    from backend.engine import hashgrid_triton

    base = tiny_settings(steps=2, resolution_schedule="64x1", checkpoint_rays=1024)
    guidance = load_guidance_for(base, "cuda")
    for changes in ({}, {"cuda_graphs": False, "checkpoint_rays": 0, "hashgrid_backend": "torch"}):
        settings = base.replace(**changes)
        guidance.configure(settings)
        assert guidance.use_cuda_graphs is settings.cuda_graphs
        trainer = Trainer(settings, guidance, torch.device("cuda"))
        assert trainer.renderer.checkpoint_rays == settings.checkpoint_rays
        fused = settings.hashgrid_backend == "auto" and hashgrid_triton.available()
        assert trainer.field.encoding._use_fused(torch.zeros(1, 3, device="cuda")) is fused
        for _ in range(2):
            assert math.isfinite(float(trainer.train_step()["total"]))
