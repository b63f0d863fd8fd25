#!/usr/bin/env bash
# Session 36: why the built-in prior's steps with its shape prior and with four views are faster on a GPU than one
# view with the prior alone (results/speed/NOTES.md, session 36). Step times of five configurations in two passes,
# each guidance's CUDA-graph state, and one profiled block of steps each (kernel launches, syncs per step).
# Before the call (64 MiB of tree): rm -rf results/quality results/image backend/prior/report* backend/view_prior/weights
# (the shape prior's weights must travel); after: git checkout -- results backend/view_prior backend/prior.
# Call: run(command="bash tools/device/builtin_step_probe.sh 300", kind="nvidia-h200", carry=[".devwhl"], timeout_s=330).
source tools/device/common.sh "$1"
timeout $(( $(left) - 5 )) python tools/device/builtin_step_probe.py 2>&1 | grep -v "Loading weights\|profiler_st"
