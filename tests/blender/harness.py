"""Runs inside the bpy interpreter (.venv-blender): install the built zip like a user, reach the
add-on's modules, pump its timer, collect results for the pytest side.

The pytest side sets BLENDER_USER_RESOURCES (a throw-away Blender config / extensions folder) and
DREAMPROP_DATA_DIR (where the local server writes its connection file) before starting us.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback

import bpy

ADDON_MODULE = "bl_ext.user_default.dreamprop"


def install(zip_path: str) -> None:
    """Extension > Install from Disk, as a user does (wheels installed, add-on enabled)."""
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo='user_default',
                                                      enable_on_install=True)
    assert result == {'FINISHED'}, result
    assert ADDON_MODULE in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())


def module(name: str = ""):
    return importlib.import_module(ADDON_MODULE + ("." + name if name else ""))


def prefs():
    return bpy.context.preferences.addons[ADDON_MODULE].preferences


def reload_addon() -> None:
    """Disable and enable the extension (what Blender does on an add-on reload / update)."""
    import addon_utils

    addon_utils.disable(ADDON_MODULE, default_set=True)
    assert ADDON_MODULE not in bpy.context.preferences.addons
    for name in [m for m in sys.modules if m.startswith(ADDON_MODULE)]:
        del sys.modules[name]   # a fresh import, as after a restart
    addon_utils.enable(ADDON_MODULE, default_set=True)
    assert ADDON_MODULE in bpy.context.preferences.addons


def pump(until, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Call the add-on's timer function (background Blender runs no timers) until ``until()``."""
    jobs = module("jobs")
    deadline = time.monotonic() + timeout
    while True:
        jobs.tick()
        value = until()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                                 f"jobs: {describe_jobs()}; reports: {jobs.state().reports[-5:]}")
        time.sleep(interval)


def run_timer(fn, timeout: float, interval: float = 0.1, what: str = "timer"):
    """Call a ``bpy.app.timers`` function of the add-on as Blender would (with the add-on's main
    timer in between) until it returns None, then unregister it."""
    jobs = module("jobs")
    deadline = time.monotonic() + timeout
    while bpy.app.timers.is_registered(fn):
        jobs.tick()
        if fn() is None:
            bpy.app.timers.unregister(fn)
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"the {what} did not finish within {timeout:g} s; reports: {jobs.state().reports[-5:]}")
        time.sleep(interval)


def world_bounds(*objs):
    """(min, max) corners of the objects' world-space bounding boxes, as numpy arrays."""
    import numpy as np
    from mathutils import Vector

    pts = np.array([tuple(o.matrix_world @ Vector(c)) for o in objs for c in o.bound_box])
    return pts.min(axis=0), pts.max(axis=0)


def describe_jobs() -> list:
    return [dict(kind=j.kind, state=j.state, job_id=j.job_id[:8], step=j.step, total=j.total,
                 message=j.message) for j in bpy.context.scene.dreamprop.jobs]


def run_checks(checks, out_path: str) -> int:
    """Run named check functions; write {name: {"ok", "result"|"error"}} as JSON; exit status."""
    results, failed = {}, 0
    for fn in checks:
        t0 = time.perf_counter()
        try:
            value = fn()
            results[fn.__name__] = {"ok": True, "result": value, "seconds": time.perf_counter() - t0}
        except Exception:
            failed += 1
            results[fn.__name__] = {"ok": False, "error": traceback.format_exc(),
                                    "seconds": time.perf_counter() - t0}
            print(f"FAILED {fn.__name__}:\n{results[fn.__name__]['error']}", file=sys.stderr)
        with open(out_path, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 1 if failed else 0
