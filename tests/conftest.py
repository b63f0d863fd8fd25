"""Test-wide set-up: models we build go to a per-session cache (subprocesses inherit it).

Fixtures of other modules come in through ``pytest_plugins``; plain helpers are in tests/helpers.py."""

import os
import tempfile

import pytest

_SESSION_CACHE = os.environ.get("DREAMPROP_TEST_CACHE") or tempfile.mkdtemp(prefix="dreamprop-test-cache-")
os.environ["DREAMPROP_CACHE_DIR"] = _SESSION_CACHE
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes on a 2-core machine: one torch thread each (two each spin against each other).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

pytest_plugins = ["tests.server_fixtures"]


@pytest.fixture(scope="session")
def tiny_model_path():
    """A tiny random SD-layout model saved with save_pretrained (built once per session)."""
    from backend.engine.guidance.models import TINY_RANDOM, resolve_model

    return resolve_model(TINY_RANDOM)

