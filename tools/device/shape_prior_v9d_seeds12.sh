#!/usr/bin/env bash
# Session 46: the shape prior fine-tuned on centred proportions (v9d) finished on seeds 1 and 2 after seed 0's whole
# benchmark (quality_seeds.sh 560 0, solids 0.902 -> 0.902, props 0.687 -> 0.695 against the run of record's v9c):
# the props of both seeds first (what v9d changes), then the solids of seed 1, then of seed 2, each resumable.
# v9d ships in backend/prior/weights_shape since session 46. Before the call: rm -rf results
# backend/view_prior/weights backend/prior/report*; .devstate holds only the folders still to resume (the tree and
# the carried paths stay under 64 MiB: drop the jobs/ images from a packed folder, they are kept here). Call: run(command="bash tools/device/shape_prior_v9d_seeds12.sh 585", carry=[".devwhl",
# ".devstate"], timeout_s=600); back in $OUT: state.tgz.* (copy into .devstate/ before the next call).
source tools/device/common.sh "$1"
restore_state
build_cuda_once
resumable_bench quality 50 /tmp/p12 $(( 27 * 2 * 2 )) --prompts props --seeds 1 2 --workers 14 --straggler-s 60 \
  >> /tmp/v9d.log 2>&1 &&
resumable_bench quality 50 /tmp/sol1 $(( 56 * 2 )) --prompts solids --seeds 1 --workers 14 --straggler-s 60 \
  >> /tmp/v9d.log 2>&1 &&
resumable_bench quality 50 /tmp/sol2 $(( 56 * 2 )) --prompts solids --seeds 2 --workers 14 --straggler-s 60 \
  >> /tmp/v9d.log 2>&1
pack_state $(cd /tmp && ls -d p12 sol1 sol2 v9d.log 2>/dev/null)
grep -v "^ *[0-9]*%" /tmp/v9d.log | grep "^| [0-9] |" | tail -n 6
