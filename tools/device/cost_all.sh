#!/usr/bin/env bash
# Issue 13's estimator on the GPU, measured whole again: `bench cost` (the built-in grid in two passes, the exports, the
# fine stage, SD-1.5's grid; since session 34 ~12 min on an H200, more than one command: `all` then `resume`). The second argument picks a part: all (default); builtin (`--no-sd15`);
# sd15 (`--sd15-only`: SD's grid measured again into the stored run of this GPU, results/speed/cost.json, which must
# then travel with the call); resume (session 35: the grids a run cut short left in results/speed/cost.json, partial,
# kept and the rest measured: since the dynamic sampler's configurations are measured on three fields, a whole run
# takes longer than one command: `all` (or `builtin`), then `resume` until the run is whole). Raw numbers are written after every configuration, so a command cut short leaves what it
# measured (`bench cost --refit results/speed/cost.json` here).
# Before the call (a call carries at most 64 MiB of tree): rm -rf results/quality results/image backend/view_prior/weights
# backend/prior/report*; after: git checkout -- results backend/view_prior backend/prior, then copy cost.json, the
# profile and the speed report back from $OUT.
# Call: run(command="bash tools/device/cost_all.sh 595", kind="nvidia-h200", carry=[".devwhl"], timeout_s=600).
source tools/device/common.sh "$1"
case "${2:-all}" in
  all) timeout $(( $(left) - 10 )) python -m backend bench cost 2>&1 | grep -v "Loading weights\|There are\|^\[trans" | tail -n 30 ;;
  builtin) timeout $(( $(left) - 10 )) python -m backend bench cost --no-sd15 2>&1 | grep -v "Loading weights\|There are\|^\[trans" | tail -n 30 ;;
  resume) timeout $(( $(left) - 10 )) python -m backend bench cost --resume 2>&1 | grep -v "Loading weights\|There are\|^\[trans" | tail -n 40 ;;
  sd15) timeout $(( $(left) - 10 )) python -m backend bench cost --sd15-only 2>&1 | grep -v "Loading weights\|There are\|^\[trans" | tail -n 40 ;;
  *) echo "cost_all.sh: the second argument is all, builtin, resume or sd15"; exit 2 ;;
esac
cp results/speed/cost.json backend/cost/profiles/nvidia-h200.json $OUT/
cp results/speed/report.md results/speed/report.json $OUT/ 2>/dev/null || true
