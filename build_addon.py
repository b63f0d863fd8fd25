#!/usr/bin/env python3
"""Build the Blender extension zip: ``python build_addon.py`` -> ``dist/<id>-<version>.zip``.

The zip holds ``blender_addon/`` (the add-on itself), the project's ``shared/`` package copied in
as the sub-package ``<addon>/shared`` (the add-on imports it relatively), and pyzmq wheels for
every platform and Blender Python the extension supports, listed in the manifest's ``wheels``.

- Wheels are fetched once with ``pip download --only-binary=:all:`` into ``.whl/`` (gitignored) and
  reused from there, so later builds work offline.
- The manifest is validated here (the rules Blender's ``extension validate`` applies that matter to
  us) and, when a Blender binary is on PATH (or given with ``--blender``), with
  ``blender --command extension validate <zip>`` as well.
- ``vocabulary.json`` is generated into the zip on every build from the built-in prior's grammar
  (``backend.prior.vocabulary``; so the build needs the backend environment): the panel offers
  those prompts, and Blender cannot import the backend (torch) to ask it.
- ``--split-platforms`` writes one zip per platform (``<id>-<version>-<platform>.zip``) holding only
  that platform's wheels.

Exit status 0 on success; problems are printed as one line each, no traceback.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON_DIR = ROOT / "blender_addon"
SHARED_DIR = ROOT / "shared"
WHEEL_CACHE = ROOT / ".whl"

# pyzmq for Blender's Python: 3.11 (Blender 4.2-5.0) and 3.13 (5.1+; pyzmq ships cp312-abi3 wheels,
# which Blender's wheel filter accepts on 3.12+). Same version as the project's own environment.
PYZMQ_VERSION = "27.3.0"
PYTHON_VERSIONS = ("3.11", "3.13")
# Blender platform name -> the pip --platform tag to ask for (macOS wheels come as universal2,
# one file serving both Mac platforms).
PLATFORMS = {
    "linux-x64": "manylinux_2_28_x86_64",
    "windows-x64": "win_amd64",
    "macos-arm64": "macosx_11_0_arm64",
    "macos-x64": "macosx_10_15_x86_64",
}
ZIP_DATE = (2024, 1, 1, 0, 0, 0)   # fixed timestamps: the same sources give the same zip
EXCLUDE_DIRS = {"__pycache__", "wheels", "shared", ".pytest_cache"}
EXCLUDE_SUFFIXES = (".pyc", ".pyo", ".blend1", ".zip")


class BuildError(Exception):
    pass


# -- manifest ------------------------------------------------------------------------------------
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def load_manifest(path: Path = ADDON_DIR / "blender_manifest.toml") -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BuildError(f"{path}: {exc}") from None


def validate_manifest(m: dict) -> list[str]:
    """The checks Blender's validator makes that can go wrong for us; returns problems (empty: ok)."""
    problems = []
    for key, kind in (("schema_version", str), ("id", str), ("version", str), ("name", str),
                      ("tagline", str), ("maintainer", str), ("type", str),
                      ("blender_version_min", str), ("license", list)):
        if not isinstance(m.get(key), kind):
            problems.append(f"manifest: '{key}' is missing or not a {kind.__name__}")
    if problems:
        return problems
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", m["id"]) or m["id"].startswith("_"):
        problems.append(f"manifest: id {m['id']!r} must be a Python identifier (letters, digits, _)")
    for key in ("version", "schema_version"):
        if not _SEMVER.match(m[key]):
            problems.append(f"manifest: {key} {m[key]!r} is not semantic versioning (e.g. 1.2.3)")
    if m["type"] != "add-on":
        problems.append(f"manifest: type must be 'add-on', got {m['type']!r}")
    if len(m["tagline"]) > 64 or m["tagline"].rstrip().endswith((".", "!", "?")):
        problems.append("manifest: tagline must be at most 64 characters without final punctuation")
    try:
        if tuple(int(x) for x in m["blender_version_min"].split(".")) < (4, 2, 0):
            problems.append("manifest: blender_version_min must be >= 4.2.0 (the extension platform)")
    except ValueError:
        problems.append(f"manifest: blender_version_min {m['blender_version_min']!r} is not X.Y.Z")
    if not m["license"] or not all(isinstance(x, str) and x.startswith("SPDX:") for x in m["license"]):
        problems.append("manifest: license must be a list of 'SPDX:<id>' strings")
    perms = m.get("permissions", {})
    if "network" not in perms:
        problems.append("manifest: [permissions] network (with a reason) is required: the add-on talks to a server")
    for name, reason in perms.items():
        if not isinstance(reason, str) or not reason or len(reason) > 64 or reason.endswith("."):
            problems.append(f"manifest: permission {name!r} needs a reason of at most 64 characters "
                            "without a final period")
    for name in m.get("platforms", []):
        if name not in PLATFORMS:
            problems.append(f"manifest: unknown platform {name!r}")
    return problems


def manifest_with_wheels(text: str, platforms: list[str], wheels: list[str]) -> str:
    """Insert ``platforms`` and ``wheels`` into the top-level table (before the first [section])."""
    lines = text.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if line.startswith("[")), len(lines))
    block = (f"platforms = {json.dumps(platforms)}\n"
             "wheels = [\n" + "".join(f"  {json.dumps('./wheels/' + w)},\n" for w in wheels) + "]\n\n")
    return "".join(lines[:at]) + block + "".join(lines[at:])


# -- wheels --------------------------------------------------------------------------------------
def fetch_wheels(version: str = PYZMQ_VERSION, *, offline: bool = False) -> dict[str, list[Path]]:
    """Blender platform -> pyzmq wheel files (all Python versions), downloading what is not cached."""
    WHEEL_CACHE.mkdir(exist_ok=True)
    with _cache_lock():
        return _fetch_wheels_locked(version, offline)


@contextlib.contextmanager
def _cache_lock():
    """The wheel cache to one build at a time (two builds side by side, as the parallel test suite runs
    them, would both download into and index the same folder)."""
    try:
        import fcntl
    except ImportError:             # Windows: builds there are one at a time
        yield
        return
    with open(WHEEL_CACHE / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_wheels_locked(version: str, offline: bool) -> dict[str, list[Path]]:
    index_path = WHEEL_CACHE / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    out: dict[str, list[Path]] = {p: [] for p in PLATFORMS}
    for platform, tag in PLATFORMS.items():
        for py in PYTHON_VERSIONS:
            key = f"pyzmq=={version}|{py}|{tag}"
            name = index.get(key)
            if not name or not (WHEEL_CACHE / name).exists():
                if offline:
                    raise BuildError(f"no cached pyzmq {version} wheel for Python {py} on {platform} in "
                                     f"{WHEEL_CACHE} (run once without --offline)")
                name = _download_wheel(version, py, tag)
                index[key] = name
                index_path.write_text(json.dumps(index, indent=1, sort_keys=True))
            out[platform].append(WHEEL_CACHE / name)
    return out


def _download_wheel(version: str, py: str, tag: str) -> str:
    before = set(os.listdir(WHEEL_CACHE))
    tmp = Path(tempfile.mkdtemp(prefix="download-", dir=WHEEL_CACHE))
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", py, "--platform", tag, f"pyzmq=={version}", "-d", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = list(tmp.glob("*.whl")) if tmp.exists() else []
    if proc.returncode != 0 or len(files) != 1:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise BuildError(f"pip download pyzmq=={version} for Python {py} / {tag} failed: {detail[0]}")
    name = files[0].name
    if name not in before:
        shutil.move(str(files[0]), WHEEL_CACHE / name)
    shutil.rmtree(tmp, ignore_errors=True)
    return name


# -- sources -------------------------------------------------------------------------------------
def addon_files() -> list[tuple[Path, str]]:
    """(source file, path in zip) for the add-on and the copied ``shared`` package."""
    files = []
    for path in sorted(ADDON_DIR.rglob("*")):
        rel = path.relative_to(ADDON_DIR)
        if path.is_dir() or rel.name == "blender_manifest.toml" or rel.name.endswith(EXCLUDE_SUFFIXES):
            continue
        if EXCLUDE_DIRS.intersection(rel.parts[:-1]):
            continue
        files.append((path, rel.as_posix()))
    for path in sorted(SHARED_DIR.glob("*.py")):
        files.append((path, f"shared/{path.name}"))
    return files


def check_shared_imports() -> list[str]:
    """``shared`` runs inside Blender: relative imports, stdlib and pyzmq only (no torch, no numpy)."""
    problems = []
    stdlib = set(sys.stdlib_module_names)
    for path in sorted(SHARED_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        guarded = set()   # imports inside `try: ... except (ImportError|Exception)` are optional
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    h.type is None or any(isinstance(n, ast.Name) and n.id in
                                          ("ImportError", "ModuleNotFoundError", "Exception")
                                          for n in ast.walk(h.type)) for h in node.handlers):
                guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt))
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                if root == "shared":
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: import 'shared' relatively "
                                    "(from . import ...): in Blender it lives under the add-on's package")
                elif root not in stdlib and root != "zmq" and root != "__future__":
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {root!r}, which Blender "
                                    "does not have (only the stdlib and pyzmq are bundled)")
    return problems


def vocabulary_json() -> bytes:
    """``{model: [prompt, ...]}`` for the models with a fixed vocabulary (the built-in prior)."""
    try:
        sys.path.insert(0, str(ROOT))
        from backend.prior.vocabulary import known_prompts
    except ImportError as exc:
        raise BuildError(f"the built-in prior's vocabulary (vocabulary.json) is read from backend/prior, which "
                         f"needs the backend's environment (make setup; .venv/bin/python build_addon.py): {exc}")
    finally:
        sys.path.remove(str(ROOT))
    return json.dumps({"builtin": known_prompts()}, indent=0, ensure_ascii=False).encode("utf-8")


def write_zip(dest: Path, manifest_text: str, files: list[tuple[Path, str]], wheels: list[Path],
              generated: dict[str, bytes] | None = None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own: two builds into one folder must not write the same half-made file
    handle, name = tempfile.mkstemp(prefix=dest.stem + ".", suffix=".tmp", dir=dest.parent)
    os.close(handle)
    tmp = Path(name)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        def add(arcname: str, data: bytes) -> None:
            info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
        add("blender_manifest.toml", manifest_text.encode("utf-8"))
        for src, arcname in files:
            add(arcname, src.read_bytes())
        for arcname, data in sorted((generated or {}).items()):
            add(arcname, data)
        for wheel in wheels:
            add(f"wheels/{wheel.name}", wheel.read_bytes())
    os.chmod(tmp, 0o644)                # mkstemp's file is private; a zip is for sharing
    os.replace(tmp, dest)


def blender_validate(blender: str, zip_path: Path) -> str | None:
    """Run ``blender --command extension validate``; returns an error line or None."""
    proc = subprocess.run([blender, "--factory-startup", "--command", "extension", "validate", str(zip_path)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return f"blender extension validate {zip_path.name}: " + " | ".join(tail)
    return None


def build(out_dir: Path = ROOT / "dist", *, split_platforms: bool = False, offline: bool = False,
          blender: str | None = None, quiet: bool = False) -> list[Path]:
    manifest_path = ADDON_DIR / "blender_manifest.toml"
    manifest = load_manifest(manifest_path)
    problems = validate_manifest(manifest)
    if "wheels" in manifest or "platforms" in manifest:
        problems.append("manifest: leave 'wheels' and 'platforms' out of the source manifest; "
                        "build_addon.py writes them")
    problems += check_shared_imports()
    if not (ADDON_DIR / "__init__.py").exists():
        problems.append("blender_addon/__init__.py is missing")
    if problems:
        raise BuildError("\n".join(problems))

    wheels = fetch_wheels(offline=offline)
    files = addon_files()
    generated = {"vocabulary.json": vocabulary_json()}
    text = manifest_path.read_text(encoding="utf-8")
    base = f"{manifest['id']}-{manifest['version']}"
    targets: list[tuple[Path, list[str]]] = []
    if split_platforms:
        targets = [(out_dir / f"{base}-{p.replace('-', '_')}.zip", [p]) for p in PLATFORMS]
    else:
        targets = [(out_dir / f"{base}.zip", list(PLATFORMS))]
    written = []
    for dest, platforms in targets:
        chosen = sorted({w for p in platforms for w in wheels[p]}, key=lambda w: w.name)
        text_out = manifest_with_wheels(text, platforms, [w.name for w in chosen])
        final = tomllib.loads(text_out)
        more = validate_manifest(final)
        if more:
            raise BuildError("\n".join(more))
        write_zip(dest, text_out, files, chosen, generated)
        written.append(dest)
        if not quiet:
            print(f"wrote {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} "
                  f"({dest.stat().st_size / 1e6:.1f} MB, {len(chosen)} wheels, {', '.join(platforms)})")

    blender = blender or os.environ.get("BLENDER") or shutil.which("blender")
    if blender:
        for dest in written:
            err = blender_validate(blender, dest)
            if err:
                raise BuildError(err)
        if not quiet:
            print(f"validated with {blender} --command extension validate")
    elif not quiet:
        print("no Blender binary on PATH: validated the manifest here only "
              "(set BLENDER=/path/to/blender or --blender for Blender's own check)")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (default: dist/)")
    ap.add_argument("--split-platforms", action="store_true", help="one zip per platform")
    ap.add_argument("--offline", action="store_true", help="use cached wheels only (.whl/)")
    ap.add_argument("--blender", help="Blender binary for `extension validate` (default: $BLENDER or PATH)")
    args = ap.parse_args(argv)
    try:
        build(args.out.resolve(), split_platforms=args.split_platforms, offline=args.offline,
              blender=args.blender)
    except BuildError as exc:
        print(f"build_addon.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
