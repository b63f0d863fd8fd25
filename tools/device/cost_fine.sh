#!/usr/bin/env bash
# The fine stage's cost on the GPU (session 27): `bench cost --fine-only` adds the fine stage's grid to the device's
# stored run (results/speed/cost.json) and refits the profile. Before the call (a call carries at most 64 MiB of
# tree): rm -rf results/quality results/image backend/view_prior/weights backend/prior/report*; after: git checkout
# -- results backend/view_prior backend/prior, then copy the two files back from $OUT.
# Call: run(command="bash tools/device/cost_fine.sh 240", kind="nvidia-h200", carry=[".devwhl"], timeout_s=300).
source tools/device/common.sh "$1"
timeout $(( $(left) - 5 )) python -m backend bench cost --fine-only 2>&1 | grep -v "Loading weights\|There are\|^\[trans" | tail -n 14
cp results/speed/cost.json backend/cost/profiles/nvidia-h200.json $OUT/
