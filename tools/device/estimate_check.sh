#!/usr/bin/env bash
# Issue 13's estimate checked whole on the GPU (session 60): `python -m backend bench estimate --device cuda`, the
# built-in prior's held-out jobs of backend/bench/estimate_check.py, each the real `generate` command in a fresh
# process, against what `--estimate` prints for it; writes estimate.json into $OUT (a section of results/speed/report.md:
# copy it to results/speed/ and run `python -m backend.bench.speed_report`). About 5 jobs of 20-60 s each on an H200.
# Before the call (a call carries at most 64 MiB of tree): rm -rf results backend/view_prior/weights backend/prior/report*
# backend/prior/weights_v6; after: git checkout -- . here.
# Call: run(command="bash tools/device/estimate_check.sh 500", kind="nvidia-h200", carry=[".devwhl"], timeout_s=600):
# the H200, whose profile is calibrated (on an H100 the estimate is the H200 profile scaled by bandwidth, and says so).
source tools/device/common.sh "$1"
build_cuda_once
timeout $(( $(left) - 5 )) python -m backend bench estimate --device cuda --out $OUT 2>&1 | grep -v "Loading weights" | tail -n 20
