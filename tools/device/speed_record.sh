#!/usr/bin/env bash
# Issue 13's report of record with the settings a user gets (session 37: the training render replayed from CUDA
# graphs by default), one command each part. `record`: `bench speed` (bound, the 64 px step, export, the 10k projection
# with its jumps warmed up; ~6 min) into $OUT/speed, then copy single.json / report.md / profile back to results/speed and
# run `python -m backend.bench.speed_report results/speed`. `full`: the default 10k schedule timed whole
# (tools/device/full_run.py, stops at LIMIT_S, default 430 s; since session 52 it reads the bound in the same process
# after the run, so one call gives the step against this machine's bound: ~6.5 min; then copy $OUT/full/whole.json to
# results/speed/ and run `python -m backend.bench.speed_report results/speed`). Tree: any (the SD-1.5 architecture is built from its
# config). Call: run(command="bash tools/device/speed_record.sh 590 record", kind="nvidia-h200", carry=[".devwhl"]).
source tools/device/common.sh "$1"
case "${2:-record}" in
  record) timeout $(( $(left) - 5 )) python -m backend bench speed --stages 64x1 --no-prior --long-steps 600 \
            --out $OUT/speed 2>&1 | grep -v "Loading weights\|There are\|warn(\|SyntaxWarning\|Compute \(transm\|rend\)\|pow_by_natural\|W1202\|AccumulateGrad\|run_backward" | tail -n 60 ;;
  full) OUT=$OUT/full LIMIT_S=${LIMIT_S:-430} timeout $(( $(left) - 5 )) python tools/device/full_run.py 2>&1 \
            | grep -v "Loading weights\|There are\|warn(\|SyntaxWarning\|Compute \(transm\|rend\)\|AccumulateGrad\|run_backward" | tail -n 30 ;;
  *) echo "speed_record.sh: the second argument is record or full"; exit 2 ;;
esac
