"""build_addon.py: the extension zip, its manifest, bundled wheels and the copied shared package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile

import pytest

import build_addon
from tests.blender.runner import ROOT, addon_zip, blender_python


@pytest.fixture(scope="module")
def built():
    path = addon_zip()
    with zipfile.ZipFile(path) as zf:
        yield path, zf, tomllib.loads(zf.read("blender_manifest.toml").decode())


def test_zip_layout_and_manifest(built):
    path, zf, manifest = built
    assert path.name == f"dreamprop-{manifest['version']}.zip"
    names = set(zf.namelist())
    # Self-contained: every module of the add-on (glb.py, the bpy-free GLB reader, included) and of shared/.
    sources = {p.relative_to(ROOT / "blender_addon").as_posix() for p in (ROOT / "blender_addon").rglob("*.py")}
    sources |= {"shared/" + p.relative_to(ROOT / "shared").as_posix() for p in (ROOT / "shared").rglob("*.py")}
    assert "glb.py" in sources and "shared/keyfiles.py" in sources
    assert sources <= names, sources - names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert manifest["blender_version_min"] >= "4.2.0" and manifest["type"] == "add-on"
    assert "network" in manifest["permissions"]
    assert build_addon.validate_manifest(manifest) == []
    assert set(manifest["platforms"]) == set(build_addon.PLATFORMS)
    wheels = [w.removeprefix("./") for w in manifest["wheels"]]
    assert set(wheels) == {n for n in names if n.startswith("wheels/")}
    # pyzmq of the project's environment, for Blender 4.2-5.0 (cp311) and 5.1+ (abi3 >= 3.12), every platform
    import zmq
    assert all(f"pyzmq-{zmq.__version__}-" in w for w in wheels), wheels
    for tag in ("cp311-cp311", "cp312-abi3"):
        for plat in ("manylinux", "win_amd64", "macosx"):
            assert any(tag in w and plat in w for w in wheels), (tag, plat, wheels)


def test_blender_validator_accepts_the_zip(built):
    """Blender's own `extension validate` (its CLI script, from the bpy module)."""
    python = blender_python()
    import glob
    script = glob.glob(str(ROOT / ".venv-blender/lib/python3.*/site-packages/bpy/*/scripts/addons_core/"
                           "bl_pkg/cli/blender_ext.py"))
    if not script:
        pytest.skip("blender_ext.py not found in the bpy module")
    proc = subprocess.run([python, script[0], "validate", str(built[0])], capture_output=True, text=True)
    assert proc.returncode == 0 and "Success" in proc.stdout, proc.stdout + proc.stderr


def test_split_platforms_and_bad_manifest(tmp_path):
    addon_zip()   # fills the wheel cache (.whl/) that --offline uses
    out = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "build_addon.py", "--split-platforms", "--offline", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    zips = sorted(p.name for p in out.glob("*.zip"))
    assert len(zips) == 4 and any(z.endswith("-linux_x64.zip") for z in zips), zips
    with zipfile.ZipFile(out / next(z for z in zips if z.endswith("windows_x64.zip"))) as zf:
        m = tomllib.loads(zf.read("blender_manifest.toml").decode())
        assert m["platforms"] == ["windows-x64"] and all("win_amd64" in w for w in m["wheels"])
    bad = {"schema_version": "1.0.0", "id": "dream-prop", "version": "1.0", "name": "x", "type": "add-on",
           "tagline": "Ends with a period.", "maintainer": "m", "blender_version_min": "4.1.0",
           "license": ["MIT"], "permissions": {}}
    problems = "\n".join(build_addon.validate_manifest(bad))
    for text in ("id 'dream-prop'", "version '1.0'", "tagline", ">= 4.2.0", "SPDX", "network"):
        assert text in problems, (text, problems)


def test_shared_package_is_blender_safe():
    """shared/ is imported by Blender's Python: relative imports, stdlib + pyzmq only."""
    assert build_addon.check_shared_imports() == []
