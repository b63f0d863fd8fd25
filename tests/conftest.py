"""Test-wide set-up: models we build go to a per-session cache (subprocesses inherit it)."""

import os
import tempfile

import pytest

_SESSION_CACHE = os.environ.get("DREAMPROP_TEST_CACHE") or tempfile.mkdtemp(prefix="dreamprop-test-cache-")
os.environ["DREAMPROP_CACHE_DIR"] = _SESSION_CACHE
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_path():
    """A tiny random SD-layout model saved with save_pretrained (built once per session)."""
    from backend.engine.guidance.models import TINY_RANDOM, resolve_model

    return resolve_model(TINY_RANDOM)


def tiny_settings(**overrides):
    """Budgets small enough for CPU tests, every other setting at its default."""
    from shared.settings import GenerationSettings

    values = dict(prompt="a red cube", model="tiny-random", steps=12, resolution_schedule="32x1",
                  samples_per_ray=48, hash_log2_size=12, hash_max_resolution=512, albedo_warmup_steps=4,
                  preview_interval=4, preview_size=32, checkpoint_interval=0, mesh_resolution=48,
                  texture_size=64, face_budget=2000, occupancy_resolution=16)
    values.update(overrides)
    return GenerationSettings.from_dict(values)
