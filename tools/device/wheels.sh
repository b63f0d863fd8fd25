#!/usr/bin/env bash
# Download the cp312 wheels the GPU device image lacks into .devwhl/ (git-ignored through
# .git/info/exclude), for device commands that carry it: the device cannot reach a package index, and
# its image has torch but not these (/work/.library/device/KINDS.md lists what it has). 9.1 MB (rtree since session 60:
# the benchmarks' surface Chamfer).
#
#   bash tools/device/wheels.sh             # then: run(..., carry=[".devwhl"])
#
# On the device, first thing in a command:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .devwhl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# The tracked tree is ~71 MB with results/ (22 MB), over the 64 MiB a command carries: move results/ out
# of the way (rm -rf results; git checkout -- results afterwards) before a device call.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx "/.devwhl/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.devwhl/" >> .git/info/exclude; }
mkdir -p .devwhl
for p in diffusers==0.42.1 nerfacc==0.5.3 PyMCubes==0.1.6 xatlas==0.0.11 fast-simplification==0.2.0 \
         trimesh==5.2.0 rtree==1.4.1 pyzmq==27.3.0 platformdirs==4.14.9; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .devwhl "$p"
done
ls -la .devwhl
