"""Build one packed site folder (``site.tar.xz``) of the Python packages the GPU device machine lacks.

Why: a device call (the workplace's ``run`` tool, /work/.library/device/README.md) sends the main
checkout plus the paths it carries, 64 MiB in all, and the device cannot reach any package index.
The render farm's GPU benchmark (``python -m backend bench farm --gpu``) needs Ray there, and Ray's
cp312 wheel alone is 79 MB (202 MB unpacked), more than the whole allowance with the repository's
~37 MB. A job server and its actors use only Ray Core, so this script

1. downloads the cp312 manylinux wheels the device image lacks (``pip download --no-deps``, exact
   versions below: Ray, its needs missing from the image, pyzmq) and takes the project's other
   device wheels from ``--wheels`` (by default /work/main/.devwhl: diffusers, trimesh, PyMCubes, ...);
2. installs them into one folder (``pip install --target`` for the device's Python version);
3. drops what a job server never uses: Ray's Java jars (31 MB), its libraries on top of Core
   (rllib, tune, train, serve, data, llm), the dashboard's web client, source maps, test folders,
   console scripts and byte-code caches;
4. strips the symbol tables of Ray's large ELF binaries (``_raylet.so`` 44 -> 32 MB, ``gcs_server``
   40 -> 29 MB, ``raylet`` 35 -> 23 MB; they keep their dynamic symbols, so they load and run as before);
5. packs the folder as one reproducible ``site.tar.xz`` (xz -9, sorted names, zeroed times). Built
   here on 2026-11-29: 240 MB installed, 178 MB pruned, 142 MB stripped, 21.4 MiB packed (about 4
   minutes on this 2-core machine, most of it xz).

On the device::

    mkdir -p /tmp/site && tar -xJf .devsite/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD

``--python-version 3.11`` builds the same pruned bundle for this machine's Python, and ``--smoke``
checks a built folder here with Ray's GPU scheduling (one node on 127.0.0.1 that declares a GPU,
two actors of half a GPU each), importing Ray from that folder alone, before device time is spent::

    python tools/device_site.py --python-version 3.11 --no-wheels --site /tmp/site311 --no-pack --smoke

A development tool: nothing in the project imports it.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Not in the device image (KINDS.md lists its packages); the versions this project's venv runs.
WHEELS = ["ray==2.60.0", "jsonschema==4.26.0", "jsonschema-specifications==2025.9.1", "referencing==0.37.0",
          "rpds-py==2026.9.1", "pyzmq==27.3.0"]
# pip matches manylinux_2_N exactly; the device runs Python 3.12 on a recent glibc.
PLATFORMS = ["manylinux1_x86_64", "manylinux2014_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in range(17, 40)]

# Relative to the site folder: what a job server and its actors never import.
DROP = ["bin", "ray/jars", "ray/rllib", "ray/tune", "ray/train", "ray/serve", "ray/data", "ray/llm",
        "ray/dashboard/client/build"]
DROP_DIR_NAMES = {"tests", "__pycache__"}
DROP_SUFFIXES = (".map", ".pyc")
STRIP = ["ray/_raylet.so", "ray/core/src/ray/gcs/gcs_server", "ray/core/src/ray/raylet/raylet"]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def download(cache: str, python_version: str) -> list[str]:
    os.makedirs(cache, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--implementation",
           "cp", "--python-version", python_version, "-d", cache]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    run(cmd + WHEELS)
    found = []
    for spec in WHEELS:
        name, version = spec.split("==")
        stem = name.replace("-", "_")
        hits = [w for w in glob.glob(os.path.join(cache, "*.whl"))
                if os.path.basename(w).lower().startswith(f"{stem}-{version}-".lower())]
        if len(hits) != 1:
            raise SystemExit(f"expected one wheel of {spec} in {cache}, found {hits}")
        found += hits
    return found


def install(wheels: list[str], site: str, python_version: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
           "--target", site]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    run(cmd + wheels)


def du(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs
               if not os.path.islink(os.path.join(d, f)))


def prune(site: str) -> None:
    before = du(site)
    for rel in DROP:
        path = os.path.join(site, rel)
        if os.path.exists(path):
            shutil.rmtree(path)
    for d, dirs, files in os.walk(site):
        for name in [n for n in dirs if n in DROP_DIR_NAMES]:
            shutil.rmtree(os.path.join(d, name))
            dirs.remove(name)
        for name in files:
            if name.endswith(DROP_SUFFIXES):
                os.remove(os.path.join(d, name))
    pruned = du(site)
    for rel in STRIP:
        run(["strip", os.path.join(site, rel)])
    print(f"site: {before / 1e6:.0f} MB installed, {pruned / 1e6:.0f} MB pruned, {du(site) / 1e6:.0f} MB stripped",
          flush=True)


def pack(site: str, out: str) -> None:
    """One xz -9 tar with sorted names and zeroed owners and times: the same inputs give the same bytes."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    tmp = out + ".part"
    with tarfile.open(tmp, "w:xz", preset=9) as tar:
        for d, dirs, files in os.walk(site):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(d, name)
                tar.add(path, arcname=os.path.relpath(path, site), recursive=False, filter=normalise)
    os.replace(tmp, out)
    print(f"packed {out}: {os.path.getsize(out) / 2**20:.1f} MiB", flush=True)


def exclude_in_git(out: str) -> None:
    """Keep the packed folder out of the checkout's tracked files (it travels as a carried path)."""
    folder = os.path.dirname(os.path.abspath(out))
    try:
        top = subprocess.run(["git", "-C", folder, "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             check=True).stdout.strip()
        exclude = subprocess.run(["git", "-C", folder, "rev-parse", "--git-path", "info/exclude"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return
    if not os.path.isabs(exclude):
        exclude = os.path.join(folder, exclude)
    line = "/" + os.path.relpath(folder, top) + "/"
    have = open(exclude).read().splitlines() if os.path.exists(exclude) else []
    if line not in have:
        with open(exclude, "a") as f:
            f.write(line + "\n")


SMOKE = textwrap.dedent("""
    import os, sys, time
    site = sys.argv[1]
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"    # keep the driver on 127.0.0.1 (backend/server/ray_pool.py)
    import ray
    from ray.cluster_utils import Cluster
    assert os.path.realpath(ray.__file__).startswith(os.path.realpath(site)), ray.__file__
    t0 = time.monotonic()
    # As `python -m backend farm` starts one: a head on 127.0.0.1 that declares a GPU.
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 2, "num_gpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    ray.init(address=cluster.address, log_to_driver=False)

    @ray.remote(num_gpus=0.5, num_cpus=1)
    class Half:
        def where(self):
            return os.getpid(), ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    actors = [Half.remote() for _ in range(2)]
    got = ray.get([a.where.remote() for a in actors], timeout=120)
    assert len({pid for pid, _, _ in got}) == 2, got
    assert all(ids == [0] or ids == ["0"] for _, ids, _ in got), got
    addresses = {n["NodeManagerAddress"] for n in ray.nodes()}
    assert addresses == {"127.0.0.1"}, addresses
    time.sleep(3)        # let the node's agents settle: a missing module kills them (and the raylet) late
    assert all(n["Alive"] for n in ray.nodes()), ray.nodes()
    print(f"smoke ok: ray {ray.__version__} from {os.path.dirname(ray.__file__)}; two 0.5-GPU actors {got} "
          f"in {time.monotonic() - t0:.1f} s")
    ray.shutdown()
    cluster.shutdown()
""")


def smoke(site: str) -> None:
    """Ray imported from ``site`` only (PYTHONPATH=site, nothing of this checkout), GPU actors scheduled."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env["PYTHONPATH"] = site
    subprocess.run([sys.executable, "-c", SMOKE, site], check=True, env=env, cwd="/")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python-version", default="3.12", help="the device's Python (default 3.12)")
    p.add_argument("--wheels", default="/work/main/.devwhl",
                   help="a folder of further wheels for that Python to include (default /work/main/.devwhl)")
    p.add_argument("--no-wheels", action="store_true", help="only the downloaded ones (e.g. for --python-version 3.11)")
    p.add_argument("--cache", default=None, help="download folder (default ~/.cache/dreamprop-devsite/cpXY)")
    p.add_argument("--site", default=None, help="the site folder to build (default: a fresh one next to --out)")
    p.add_argument("--out", default=os.path.join(REPO, ".devsite", "site.tar.xz"))
    p.add_argument("--no-pack", action="store_true", help="build the folder only")
    p.add_argument("--smoke", action="store_true", help="check the built folder with Ray on this machine")
    args = p.parse_args(argv)
    tag = "cp" + args.python_version.replace(".", "")
    cache = args.cache or os.path.join(os.path.expanduser("~/.cache/dreamprop-devsite"), tag)
    site = args.site or os.path.join(os.path.dirname(os.path.abspath(args.out)), f"site-{tag}")
    shutil.rmtree(site, ignore_errors=True)
    wheels = download(cache, args.python_version)
    if not args.no_wheels:
        extra = sorted(glob.glob(os.path.join(args.wheels, "*.whl")))
        if not extra:
            raise SystemExit(f"--wheels {args.wheels}: no wheels there (use --no-wheels to build without them)")
        wheels += extra
    install(wheels, site, args.python_version)
    prune(site)
    if args.smoke:
        smoke(site)
    if not args.no_pack:
        pack(site, args.out)
        exclude_in_git(args.out)
        if args.site is None:
            shutil.rmtree(site)
    return 0


if __name__ == "__main__":
    sys.exit(main())
