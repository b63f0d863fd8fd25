"""The add-on end to end: real Blender (bpy 5.0.1) + a real backend process on loopback (CPU, the
tiny-random built-in prior, tiny budgets). One Blender process drives the whole story, as an
artist would: install the zip, Start Backend, Test Connection, Generate (add-on reloaded while the
job runs: it re-attaches), a prompt outside the built-in prior's vocabulary (warning shown), Cancel, Refine a cube, Batch from two markers, a Cycles render of the
result (test-output/addon/e2e/render.png), Stop Backend.

The measured UI-thread time per timer tick and Generate -> first preview are written to
test-output/addon/e2e/measurements.json.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys

import pytest

from tests.blender.runner import OUTPUT, ROOT, addon_zip, check, run_scenario
from tests.helpers import free_port, load_rgb, object_fraction

pytestmark = [pytest.mark.slow, pytest.mark.blender]

WORK = OUTPUT / "e2e"


@pytest.fixture(scope="module")
def results():
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    config = WORK / "config.json"
    config.write_text(json.dumps({"python": sys.executable, "root": str(ROOT), "port": free_port(),
                                  "out": str(WORK)}))
    try:
        data = run_scenario("scenario_e2e.py", [addon_zip(), config], WORK, timeout=900)
    finally:   # never leave a backend behind, whatever happened in Blender
        pid_file = WORK / "backend.pid"
        if pid_file.exists():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
    summary = data.get("summary", {}).get("result", {})
    (WORK / "measurements.json").write_text(json.dumps({
        "first_preview_s": {k: v["result"].get("first_preview_s") for k, v in data.items()
                            if v.get("ok") and isinstance(v.get("result"), dict) and "first_preview_s" in v["result"]},
        **summary}, indent=1, default=str))
    return data


def test_backend_started_from_blender(results):
    check(results, "check_start_backend")


def test_failed_job_is_a_report(results):
    check(results, "check_failed_job_is_reported")


def test_unknown_prompt_warning_shown(results):
    check(results, "check_unknown_prompt_warning")


def test_generate_imports_at_cursor_and_reattaches_after_reload(results):
    check(results, "check_generate_then_reload_reattaches")


def test_cancel_mid_run(results):
    check(results, "check_cancel_mid_run")


def test_refine_selected_cube(results):
    check(results, "check_refine_cube")


def test_batch_two_markers(results):
    check(results, "check_batch_two_markers")


def test_cycles_render(results):
    out = check(results, "check_render_cycles")
    rgb = load_rgb(out["png"])
    assert rgb.shape == (320, 320, 3)
    # The prop is in the picture: against the flat world colour (the corner pixel), it covers a
    # good part of the frame and the middle of it.
    assert object_fraction(rgb, rgb[0, 0]) > 0.05
    assert object_fraction(rgb[120:200, 120:200], rgb[0, 0]) > 0.5


def test_backend_stopped(results):
    check(results, "check_stop_backend")


def test_ui_thread_time_per_tick(results):
    s = check(results, "summary")
    for key in ("ticks_before_reload", "ticks_after_reload"):
        stats = s[key]
        assert stats["ticks"] > 10
        # Event ticks (no import; imports are measured separately) must not stall Blender's UI: the
        # median within a 60 Hz frame, and with a wide margin for a loaded 2-core CI box, the 95th
        # percentile within three frames (both were about 0.3 ms on a loaded 2-core box).
        assert stats["median_ms"] < 16 and stats["p95_ms"] < 50, stats
