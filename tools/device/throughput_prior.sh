#!/usr/bin/env bash
# Issue 13 point 2 on the GPU, the built-in prior's part: 16 props of the preset as it ships (coarse + fine),
# one after another (2 run, projected), 8 processes each running its share one after another (what the server's
# default does), and P processes each running its share as one group (`serve --workers P --batch-jobs 16/P`),
# P = 8, 4, 2. Since session 30 a run with a fine stage steps its coarse stage in a group (before, the preset's
# jobs never grouped). Writes $OUT/tp/throughput.json (modes already measured are kept if a later one is cut).
# Before the call: rm -rf results backend/view_prior/weights backend/prior/report*; after: git checkout -- results
# backend/view_prior backend/prior.
# Call: run(command="bash tools/device/throughput_prior.sh 590", kind="nvidia-h200", carry=[".devwhl"], timeout_s=600).
source tools/device/common.sh "$1"
mkdir -p $OUT/tp
timeout $(( $(left) - 5 )) python -m backend bench throughput --device cuda --part prior \
  --modes sequential,processes,process-groups --group-processes "${GROUP_PROCESSES:-8,4,2}" --out $OUT/tp 2>&1 \
  | grep -v "Loading weights\|There are\|^\[trans\|Warning\|warn(" | tail -n 30
