#!/usr/bin/env bash
# Session 37: which lines of a training step make the host wait for the GPU (tools/device/sync_probe.py), for the
# SD-1.5 64 px step and the built-in GPU preset. ~3 minutes.
# Tree: any (the SD-1.5 architecture is built from its config; the built-in part needs both text priors).
# Call: run(command="bash tools/device/sync_probe.sh 280", kind="nvidia-h200", carry=[".devwhl"], timeout_s=300).
source tools/device/common.sh "$1"
OUT=$OUT/sync timeout $(( $(left) - 5 )) python tools/device/sync_probe.py 2>&1 | grep -v "Loading weights\|profiler_st\|There are\|warn("
