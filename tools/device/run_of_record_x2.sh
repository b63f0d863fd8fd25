#!/usr/bin/env bash
# The quality benchmark's run of record of the preset as it ships (since session 23: prior v6 for the colour,
# v9 "builtin-shape" for the shape, 48 px renders, coarse + 5-step fine), every benchmark prompt x 3 seeds, on
# a two-GPU device machine: one seed per track (GPU 0: seed 0 then 1's solids; GPU 1: seed 2 then seed 1's
# props; seed 1 last: session 23 measured it), each part its own folder so that a report phase never holds the
# others up. Every fine mesh is also exported with fine_thin_inset 0.015 (tools/device/thin_inset_export.json:
# the A/B of that setting for the cost of an export). Resumable across
# commands (state in /tmp: send the same command again within 30 s of the last one's end; about three
# commands). Before the call (a call carries at most 64 MiB of tree): rm -rf results backend/view_prior/weights
# backend/prior/report*; after: git checkout -- results backend/view_prior backend/prior. Call: run(command="bash tools/device/run_of_record_x2.sh 550", kind="nvidia-h200-x2",
# carry=[".devwhl"], timeout_s=600). Back in $OUT: rows.tgz.* in 15 MB parts (cat rows.tgz.* | tar xzf -; each part's quality.jsonl/.md and turntable
# grids); merge here: `python -m backend bench quality --report-only s0/quality.jsonl s2/quality.jsonl
# s1_solids/quality.jsonl s1_props/quality.jsonl --out results/quality` (pictures are in each part).
source tools/device/common.sh "$1"
part() { # out, prompt set, seed
  local n=83; case $2 in solids) n=56;; props) n=27;; esac
  resumable_bench quality 100 /tmp/$1 $(( n * 4 )) --prompts $2 --seeds $3 --workers 14 \
    --export-variants tools/device/thin_inset_export.json
}
trackA() { export CUDA_VISIBLE_DEVICES=0; part s0 benchmark 0 && part s1_solids solids 1; }
trackB() { export CUDA_VISIBLE_DEVICES=1; part s2 benchmark 2 && part s1_props props 1; }
trackA > /tmp/trackA.log 2>&1 &
trackB > /tmp/trackB.log 2>&1 &
wait
tar czf - -C /tmp $(cd /tmp && ls -d s0 s2 s1_solids s1_props track?.log 2>/dev/null) | split -b 15M - $OUT/rows.tgz.
for t in A B; do echo "--- $t"; grep -v "^ *[0-9]*%" /tmp/track$t.log | tail -n 6; done
