"""The panel's cost estimate against a real server (run by tests/test_addon_estimate.py).

usage: <bpy python> scenario_estimate.py <addon.zip> <config.json> <results.json>
config: {"connection_file": the running server's connection file}

Real Blender (bpy), the add-on installed from its zip, a real ``python -m backend serve --workers 0``
on loopback (started by the pytest side with a memory limit). The add-on's timer is pumped by hand
(background Blender runs no timers) and the panel's estimate box is drawn (as Blender redraws it)
into a layout that keeps the label texts.
"""

from __future__ import annotations

import json
import sys

import bpy

import harness

ZIP, CONFIG, OUT = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]


class Labels:
    """A stand-in UILayout that keeps the text of every label (nested layouts share the list)."""

    def __init__(self, texts):
        object.__setattr__(self, "texts", texts)

    def __setattr__(self, name, value):
        pass

    def __getattr__(self, name):
        def call(*args, **kwargs):
            if name == "label":
                self.texts.append(kwargs.get("text", ""))
            return Labels(self.texts)
        return call


def panel_text() -> list[str]:
    texts: list[str] = []
    harness.module("panels").draw_estimate(Labels(texts), bpy.context.scene.dreamprop.settings)
    return texts


def est():
    return harness.module("estimate").state()


def check_estimate_shown():
    harness.install(ZIP)
    p = harness.prefs()
    p.mode = 'LOCAL'
    p.connection_file = CONFIG["connection_file"]
    pg = bpy.context.scene.dreamprop.settings
    pg.prompt = "a red cube"
    assert panel_text()[0].startswith("Estimate: waiting"), panel_text()
    harness.pump(lambda: panel_text() and est().result, 60, what="the estimate")   # Blender redraws the panel
    return {"settings": json.loads(est().answered_key), "estimate": est().result, "lines": panel_text()}


def check_estimate_follows_the_settings():
    pg = bpy.context.scene.dreamprop.settings
    before = est().result
    for schedule in ("64x1", "128x2", "512x4"):      # quick edits: the debounce sends one request
        pg.resolution_schedule = schedule
        panel_text()
        harness.module("jobs").tick()
    harness.pump(lambda: panel_text() and est().result is not before and est().answered_key == est().key, 60,
                 what="the estimate of the new settings")
    return {"settings": json.loads(est().answered_key), "estimate": est().result, "lines": panel_text()}


if __name__ == "__main__":
    sys.exit(harness.run_checks([check_estimate_shown, check_estimate_follows_the_settings], OUT))
