#!/usr/bin/env bash
# fine_thin_inset's A/B on the props (session 24, after the cap that keeps every part joined): the preset as
# it ships on every prop, each fine mesh also exported at insets 0.015 / 0.025 / 0.035
# (tools/device/thin_inset_sweep.json: export variants, one run each), seeds 0 and 1 side by side on a
# two-GPU machine, then seed 2 on GPU 0. Before the call: rm -rf results backend/view_prior/weights
# backend/prior/report*; after: git checkout -- results backend/view_prior backend/prior. Call:
# run(command="bash tools/device/thin_inset_props_x2.sh 500", kind="nvidia-h200-x2", carry=[".devwhl"]).
# Back in $OUT: props.tgz.* (cat props.tgz.* | tar xzf -: p0 p1 p2, each a bench quality folder without
# its per-job pictures, which would not fit in what a command brings back).
source tools/device/common.sh "$1"
part() { # out, seed
  resumable_bench quality 60 /tmp/$1 $(( 27 * 2 * 4 )) --prompts props --seeds $2 --workers 14 \
    --export-variants tools/device/thin_inset_sweep.json
}
build_cuda_once
(export CUDA_VISIBLE_DEVICES=0; part p0 0 && part p2 2) > /tmp/trackA.log 2>&1 &
(export CUDA_VISIBLE_DEVICES=1; part p1 1) > /tmp/trackB.log 2>&1 &
wait
tar czf - -C /tmp --exclude=jobs $(cd /tmp && ls -d p0 p1 p2 2>/dev/null) | split -b 15M - $OUT/props.tgz.
for t in A B; do echo "--- $t"; grep -v "^ *[0-9]*%" /tmp/track$t.log | grep -v "^\[" | tail -n 12; done
