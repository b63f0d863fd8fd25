#!/usr/bin/env bash
# The quality run that decides the shape prior (backend/prior/README.md, "Session 21"): every benchmark prompt x
# 3 seeds with `shape_model` = prior v8 (32 and 48 px renders) on a two-GPU device machine, GPU 0 seed 0 and seed
# 2's solids, GPU 1 seed 1 and seed 2's props; v6 alone is the run of record in results/quality/. Resumable (state
# in /tmp while the machine stays held: send the same command again within 30 s of the last one's end). Before
# the call, on this machine: `git archive 0e6152b backend/prior/weights_v8 | tar x` and, to stay under the 64 MiB
# a call carries (tree 74 MB + v8 25 MB + wheels 9 MB), `rm -rf results backend/view_prior/weights
# backend/prior/report*` (after: `git checkout -- results backend/view_prior backend/prior; rm -rf
# backend/prior/weights_v8`). Call:
# run(command="bash tools/device/shape_prior_x2.sh 550", kind="nvidia-h200-x2", carry=[".devwhl"], timeout_s=600).
# Back in $OUT: rows.tgz (quality.jsonl and .md of each part; merge here with `bench quality --report-only`).
# Session 22 sent it three times (550, 550, 430 s): seeds 0 and 1 done, the 48 px green cube of seed 1 and all of
# seed 2 not (the last command spent its time on that one job and the report; give seed 2 its own command).
source tools/device/common.sh "$1"
[ -f backend/prior/weights_v8/model_index.json ] || { echo "no backend/prior/weights_v8: see the header"; exit 2; }
W=$PWD/backend/prior/weights_v8
echo "{\"shape_v8\": {\"shape_model\": \"$W\"}, \"shape_v8_48\": {\"shape_model\": \"$W\", \"resolution_schedule\": \"48x1\"}}" > /tmp/shape.json
bench() { resumable_bench quality 60 "$@"; }   # out, expected rows, args...
track() { # gpu, out, prompt set (solids 56, props 27), seed
  export CUDA_VISIBLE_DEVICES=$1
  local n=83; case $3 in solids) n=56;; props) n=27;; esac
  local rows=$(( n * 2 * 2 ))      # prompts x variants x (coarse, coarse + fine)
  bench /tmp/$2 $rows --prompts $3 --seeds $4 --variants /tmp/shape.json --workers 14
}
track 0 shape_s0 benchmark 0 > /tmp/track0.log 2>&1 &
track 1 shape_s1 benchmark 1 > /tmp/track1.log 2>&1 &
wait
track 0 shape_s2_solids solids 2 > /tmp/track2a.log 2>&1 &
track 1 shape_s2_props props 2 > /tmp/track2b.log 2>&1 &
wait
tar czf $OUT/rows.tgz -C /tmp $(cd /tmp && ls -d shape_s*/quality.jsonl shape_s*/quality.md track*.log 2>/dev/null)
tail -3 /tmp/track*.log
