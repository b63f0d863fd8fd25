"""The add-on with a local backend, as a new user meets it: real Blender (bpy 5.0.1) pressing Start
Backend / Test Connection against real ``python -m backend serve`` processes on loopback, and the
live proxy mesh the panel asks for, checked with a real short CPU generation.

Each test is one rough edge of issue 16: Test Connection right after Start Backend, the Connection
file preference, CPU workers leaving Blender a core, the first proxy mesh landing early.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys

import pytest

from tests.blender.runner import OUTPUT, ROOT, addon_zip, check, run_scenario
from tests.server_fixtures import free_port

pytestmark = pytest.mark.blender

WORK = OUTPUT / "local-backend"


@pytest.fixture(scope="module")
def results():
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    config = WORK / "config.json"
    config.write_text(json.dumps({"python": sys.executable, "root": str(ROOT), "port": free_port(), "out": str(WORK)}))
    try:
        return run_scenario("scenario_local_backend.py", [addon_zip(), config], WORK, timeout=600)
    finally:   # never leave a backend behind, whatever happened in Blender
        pids = WORK / "backend.pids"
        for pid in pids.read_text().split() if pids.exists() else []:
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass


def test_install(results):
    check(results, "check_install")


def test_test_connection_right_after_start_backend_waits_for_it(results):
    r = check(results, "check_test_connection_right_after_start_waits_for_the_backend")
    assert "starting" in r["operator_report"] and r["timer_report"].startswith("Connected to")


def test_connection_file_preference_reaches_the_started_backend(results):
    r = check(results, "check_connection_file_preference_is_used_by_start_backend")
    assert r["written_by_pid"] == r["backend_pid"]


def test_started_backend_leaves_blender_a_core(results):
    r = check(results, "check_started_backend_leaves_blender_a_core")
    assert r["worker_threads"] == max(1, r["cores"] - 1)


def _proxy_steps(settings: dict) -> list[int]:
    """Steps at which a real CPU generation with these settings produced a proxy mesh."""
    from backend.engine.api import generate
    from shared.settings import GenerationSettings

    events = []
    generate(GenerationSettings.from_dict(settings), device="cpu", callback=events.append)
    return [e.step for e in events if e.stage == "optimise" and e.proxy_glb is not None]


@pytest.mark.slow
def test_live_proxy_lands_early_then_regularly(results, tiny_model_path):
    r = check(results, "check_live_proxy_settings")
    preset = r["preset"]
    interval = preset["proxy_mesh_interval"]   # the built-in prior's preset as the panel sends it
    assert 0 < interval <= 0.2 * preset["steps"], (interval, preset["steps"])

    tiny = r["tiny"]                           # the same preset cut to a CPU test budget
    steps = _proxy_steps(tiny)
    assert steps, "no proxy mesh at all"
    assert steps[0] <= 0.2 * tiny["steps"], steps
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    assert len(steps) >= 4 and gaps == {steps[0]}, steps
