#!/usr/bin/env bash
# Issue 13's estimator on the GPU, measured whole again: `bench cost` (the grid, ~7 min on an H200; every fix to the
# bench since session 25's run, e.g. the cuBLAS workspaces freed per configuration, applies only to a new run), then
# `--fine-only` adds the fine stage's grid to the same stored run and refits. Raw numbers are written after every
# configuration, so a command cut short leaves what it measured (`bench cost --refit results/speed/cost.json` here).
# Before the call (a call carries at most 64 MiB of tree): rm -rf results/quality results/image
# backend/view_prior/weights backend/prior/report*; after: git checkout -- results backend/view_prior backend/prior,
# then copy cost.json, the profile and the speed report back from $OUT.
# Call: run(command="bash tools/device/cost_all.sh 595", kind="nvidia-h200", carry=[".devwhl"], timeout_s=600).
source tools/device/common.sh "$1"
# (the grid's run measures the fine stage too; --fine-only again only if time is left: session 31's longer timings
# of the built-in rows made the grid ~40 s longer)
timeout $(( $(left) - 10 )) python -m backend bench cost 2>&1 | grep -v "Loading weights\|There are\|^\[trans" | tail -n 30
[ "$(left)" -gt 80 ] && timeout $(( $(left) - 5 )) python -m backend bench cost --fine-only 2>&1 | grep -v "Loading weights\|There are\|^\[trans" | tail -n 14
cp results/speed/cost.json backend/cost/profiles/nvidia-h200.json $OUT/
cp results/speed/report.md results/speed/report.json $OUT/ 2>/dev/null || true
