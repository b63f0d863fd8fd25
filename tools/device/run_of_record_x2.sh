#!/usr/bin/env bash
# The quality benchmark's run of record of the preset as it ships (since session 23: prior v6 for the colour,
# v9 "builtin-shape" for the shape, 48 px renders, coarse + 5-step fine), every benchmark prompt x 3 seeds, on
# a two-GPU device machine: one seed per track (GPU 0: seeds 0 then 2's solids; GPU 1: seed 1 then seed 2's
# props), each part its own folder so that a report phase never holds the others up. Resumable across
# commands (state in /tmp: send the same command again within 30 s of the last one's end; about three
# commands). Before the call (a call carries at most 64 MiB of tree): rm -rf results backend/view_prior/weights
# backend/prior/report*; after: git checkout -- results backend/view_prior backend/prior. Call: run(command="bash tools/device/run_of_record_x2.sh 550", kind="nvidia-h200-x2",
# carry=[".devwhl"], timeout_s=600). Back in $OUT: rows.tgz.* in 15 MB parts (cat rows.tgz.* | tar xzf -; each part's quality.jsonl/.md and turntable
# grids); merge here: `python -m backend bench quality --report-only s0/quality.jsonl s1/quality.jsonl
# s2_solids/quality.jsonl s2_props/quality.jsonl --out results/quality` (pictures are in each part).
source tools/device/common.sh "$1"
part() { # out, prompt set, seed
  local n=83; case $2 in solids) n=56;; props) n=27;; esac
  resumable_bench quality 100 /tmp/$1 $(( n * 2 )) --prompts $2 --seeds $3 --workers 14
}
trackA() { export CUDA_VISIBLE_DEVICES=0; part s0 benchmark 0 && part s2_solids solids 2; }
trackB() { export CUDA_VISIBLE_DEVICES=1; part s1 benchmark 1 && part s2_props props 2; }
trackA > /tmp/trackA.log 2>&1 &
trackB > /tmp/trackB.log 2>&1 &
wait
tar czf - -C /tmp $(cd /tmp && ls -d s0 s1 s2_solids s2_props track?.log 2>/dev/null) | split -b 15M - $OUT/rows.tgz.
for t in A B; do echo "--- $t"; grep -v "^ *[0-9]*%" /tmp/track$t.log | tail -n 6; done
