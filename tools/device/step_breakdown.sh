#!/usr/bin/env bash
# Where the SD-1.5 64 px step's and the built-in preset step's time goes, phase by phase, host and GPU
# (tools/device/step_breakdown.py says how). ~4 minutes.
# Before: rm -rf results backend/view_prior/weights backend/prior/report*; after: git checkout -- results
# backend/view_prior backend/prior.
# Call: run(command="bash tools/device/step_breakdown.sh 400", kind="nvidia-h200", carry=[".devwhl"]).
source tools/device/common.sh "$1"
OUT=$OUT/breakdown timeout $(( $(left) - 5 )) python tools/device/step_breakdown.py 2>&1 \
  | grep -v "Loading weights\|There are\|^\[trans\|warn(\|USDT\|SyncActivity" | tail -n 80
