"""pytest side of the Blender tests: build the zip once, find the bpy interpreter, run a scenario
script in a fresh interpreter (bpy's global state never leaks between tests) and read its results.

The bpy interpreter is ``$DREAMPROP_BLENDER_PYTHON`` or ``.venv-blender/bin/python`` (``make
blender-venv``). Without it the Blender tests are skipped, except under CI where that is an error.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
OUTPUT = ROOT / "test-output" / "addon"


def blender_python() -> str:
    env = os.environ.get("DREAMPROP_BLENDER_PYTHON")
    candidates = [Path(env)] if env else [ROOT / ".venv-blender" / "bin" / "python",
                                          ROOT / ".venv-blender" / "Scripts" / "python.exe"]
    for path in candidates:
        if path.exists():
            return str(path)
    message = ("no bpy interpreter: run `make blender-venv` (python3.11 -m venv .venv-blender && "
               ".venv-blender/bin/pip install bpy==5.0.1) or set DREAMPROP_BLENDER_PYTHON")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@functools.cache
def addon_zip() -> Path:
    """Build the extension with build_addon.py, as a user would get it."""
    out = OUTPUT / "dist"
    proc = subprocess.run([sys.executable, str(ROOT / "build_addon.py"), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    zips = sorted(out.glob("dreamprop-*.zip"))
    assert len(zips) == 1, zips
    return zips[0]


def run_scenario(script: str, args: list, workdir: Path, timeout: float, env: dict | None = None) -> dict:
    """Run tests/blender/<script> under bpy; returns {check: {"ok", "result"/"error", "seconds"}}."""
    python = blender_python()
    results = workdir / "results.json"
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    full_env.update({"BLENDER_USER_RESOURCES": str(workdir / "blender-user"),
                     "DREAMPROP_DATA_DIR": str(workdir / "dreamprop-data"),
                     "PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    log = workdir / "blender.log"
    with open(log, "w") as f:
        proc = subprocess.run([python, str(HERE / script), *map(str, args), str(results)], cwd=workdir,
                              env=full_env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    data = json.loads(results.read_text()) if results.exists() else {}
    if proc.returncode != 0 and not any(not r["ok"] for r in data.values()):
        pytest.fail(f"{script} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
    return data


def check(results: dict, name: str):
    """Assert one named check passed; returns its result."""
    assert name in results, f"{name} did not run (an earlier step crashed?): {sorted(results)}"
    r = results[name]
    assert r["ok"], f"{name} failed in Blender:\n{r['error']}"
    return r["result"]
