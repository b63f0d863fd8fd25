"""Plain helpers shared by test modules (fixtures live in conftest.py and the ``pytest_plugins`` it
names; helpers are imported from here, never from a conftest)."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_settings(**overrides):
    """Budgets small enough for CPU tests, every other setting at its default."""
    from shared.settings import GenerationSettings

    values = dict(prompt="a red cube", model="tiny-random", steps=12, resolution_schedule="32x1",
                  samples_per_ray=48, hash_log2_size=12, hash_max_resolution=512, albedo_warmup_steps=4,
                  preview_interval=4, preview_size=32, checkpoint_interval=0, mesh_resolution=48,
                  texture_size=64, face_budget=2000, occupancy_resolution=16, fine_steps=4, fine_resolution=32)
    values.update(overrides)
    return GenerationSettings.from_dict(values)


def random_prior_pair(root: Path, shape_arch: str) -> tuple[Path, Path]:
    """A colour prior (v6) and a shape prior (``shape_arch``) of the project's layout with random weights."""
    from backend.prior.model import build_random

    return build_random(root / "colour", arch="v6", seed=1), build_random(root / "shape", arch=shape_arch, seed=2)


def shape_colour_settings(priors, prompt: str, **overrides):
    """``tiny_settings`` guided by a ``random_prior_pair`` (colour ``model``, ``shape_model``), compass views."""
    colour, shape = priors
    return tiny_settings(model=str(colour), shape_model=str(shape), prompt=prompt, view_naming="compass",
                         albedo_warmup_steps=0, **overrides)


def load_rgb(image) -> np.ndarray:
    """uint8 [H, W, 3] of a PNG given as bytes or a path."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(image) if isinstance(image, bytes) else image).convert("RGB"))


def object_fraction(rgb: np.ndarray, background) -> float:
    """Fraction of pixels that differ from the flat ``background`` colour by more than 8 levels:
    how much of a render the object covers."""
    diff = np.abs(rgb.astype(np.int16) - np.asarray(background, np.int16)).max(axis=-1)
    return float((diff > 8).mean())


GLTF_DIR = Path(__file__).resolve().parent / "gltf"


def gltf_validate(paths) -> list[dict]:
    """The Khronos glTF-Validator's report (its JSON, ``issues`` holding the counts and messages)
    for each GLB file, through node and the npm package that ``make gltf-validator`` (run by
    ``make test``) installs into tests/gltf.
    No node or no package is a test failure, never a skip: CI must not pass without validating."""
    import json
    import shutil
    import subprocess

    import pytest

    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the glTF-Validator tests need Node.js (18 or later)")
    if not (GLTF_DIR / "node_modules" / "gltf-validator" / "package.json").is_file():
        pytest.fail(f"the gltf-validator npm package is missing: run `make gltf-validator` "
                    f"(or `npm ci --prefix {GLTF_DIR}`)")
    out = subprocess.run([node, str(GLTF_DIR / "validate.mjs"), *map(str, paths)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def assert_valid_gltf(paths, *, allow_infos: tuple[str, ...] = ()) -> None:
    """Every file passes the glTF-Validator with no issue at all (no error, warning, info or hint),
    except infos and hints whose codes are in ``allow_infos`` (errors and warnings never pass)."""
    for report in gltf_validate(paths):
        issues = report["issues"]
        left = [(m["code"], m["pointer"], m["message"]) for m in issues["messages"]
                if not (m["severity"] >= 2 and m["code"] in allow_infos)]
        assert issues["numErrors"] == issues["numWarnings"] == 0 and not left, (report["uri"], left)


def take_sds_steps(weights, prompt: str, steps: int):
    """Load ``weights`` (a trained prior folder) through the engine with the prior's preset and take
    ``steps`` SDS steps: every loss finite and the field's parameters moved. Returns the guidance."""
    import torch

    from backend.engine.guidance.models import load_guidance_for
    from backend.engine.trainer import Trainer
    from backend.prior import recommended_settings
    from shared.settings import GenerationSettings

    settings = GenerationSettings.from_dict({**recommended_settings(), "prompt": prompt, "model": str(weights),
                                             "steps": steps})
    guidance = load_guidance_for(settings, "cpu")
    trainer = Trainer(settings, guidance, "cpu")
    before = [p.detach().clone() for p in trainer.field.parameters()]
    for _ in range(steps):
        losses = trainer.train_step()
        assert all(torch.isfinite(v).all() for v in losses.values()), losses
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.field.parameters()))
    return guidance
