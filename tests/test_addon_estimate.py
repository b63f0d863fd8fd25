"""The Blender panel shows the cost estimate of its settings (issue 13.3): real Blender (bpy 5.0.1)
against a real ``python -m backend serve --workers 0`` on loopback, with a memory limit that the
panel's defaults fit and 512x4 renders don't."""

from __future__ import annotations

import json
import shutil

import pytest

from backend.cost import cpu_facts, estimate
from backend.cost.model import GB
from shared.layering import resolve
from tests.blender.runner import OUTPUT, addon_zip, check, run_scenario
from tests.server_fixtures import ServerProc

pytestmark = pytest.mark.blender

WORK = OUTPUT / "estimate"


@pytest.fixture(scope="module")
def served():
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    small = estimate(resolve({"prompt": "a red cube"}), cpu_facts())["peak_memory_bytes"]
    limit_gb = 1.3 * small / GB
    server = ServerProc(str(WORK / "state"), args=["--workers", "0", "--memory-limit-gb", f"{limit_gb:.3f}"]).start()
    config = WORK / "config.json"
    config.write_text(json.dumps({"connection_file": server.connection_file}))
    try:
        results = run_scenario("scenario_estimate.py", [addon_zip(), config], WORK, timeout=300)
        client = server.client()
        try:   # what the server says for the settings the panel last showed
            answers = {name: client.estimate(check(results, name)["settings"]) for name in results if results[name]["ok"]}
        finally:
            client.close()
    finally:
        server.stop()
    return results, answers


def test_panel_shows_the_servers_estimate(served):
    results, answers = served
    r = check(results, "check_estimate_shown")
    truth = answers["check_estimate_shown"]
    assert r["estimate"]["time_s"] == pytest.approx(truth["time_s"], rel=1e-6)
    minutes = truth["time_s"] / 60
    shown = f"{truth['time_s']:.0f} s" if truth["time_s"] < 89.5 else f"{minutes:.1f} min"
    assert r["lines"][0] == (f"Estimate: {shown}, peak memory {truth['peak_memory_bytes'] / GB:.1f} GB of "
                             f"{truth['memory_usable_bytes'] / GB:.1f} GB"), r["lines"]


def test_panel_estimate_follows_the_settings_and_says_what_does_not_fit(served):
    results, answers = served
    r = check(results, "check_estimate_follows_the_settings")
    assert r["settings"]["resolution_schedule"] == "512x4"
    truth = answers["check_estimate_follows_the_settings"]
    assert not truth["fits"] and r["estimate"]["peak_memory_bytes"] == truth["peak_memory_bytes"]
    text = " ".join(r["lines"])      # the panel wraps long messages over several labels
    assert "Won't fit: resolution schedule: render resolution 512 needs ~" in text, r["lines"]
    assert f"{truth['problem']['message'].split('; ')[-1]}" in text, (r["lines"], truth["problem"])
