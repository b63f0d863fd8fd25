#!/usr/bin/env bash
# The quality benchmark's run of record of the preset as it ships (prior v6 for the colour, v9 "builtin-shape"
# for the shape, 48 px renders, coarse + 5-step fine, since session 24 fine_thin_inset 0.015), every benchmark
# prompt x 3 seeds, on a two-GPU device machine: one seed per track (GPU 0: seed 0 then 1's solids; GPU 1: seed
# 2 then seed 1's props), each part its own folder so that a report phase never holds the others up. Every fine
# mesh is also exported without the inset (tools/device/no_thin_inset_export.json, an export variant: the
# setting's A/B for the cost of an export; session 24's run used thin_inset_export.json the other way round).
# Resumable across commands (state in /tmp: send the same command again within 30 s of the last one's end; two
# commands in session 24). Before the call (a call carries at most 64 MiB of tree): rm -rf results
# backend/view_prior/weights backend/prior/report*; after: git checkout -- results backend/view_prior
# backend/prior. Call: run(command="bash tools/device/run_of_record_x2.sh 550", kind="nvidia-h200-x2",
# carry=[".devwhl"], timeout_s=600). Back in $OUT: rows.tgz.* in 15 MB parts (cat rows.tgz.* | tar xzf -). A
# command brings back about 60 MB: the second command's archive holds every part, so fetch what is missing
# with a short command (tar czf - -C /tmp s1_solids s1_props | split -b 15M - $OUT/r.tgz.). Merge here:
# `python -m backend bench quality --report-only s0 s2 s1_solids s1_props --out results/quality`.
source tools/device/common.sh "$1"
part() { # out, prompt set, seed
  local n=83; case $2 in solids) n=56;; props) n=27;; esac
  resumable_bench quality 100 /tmp/$1 $(( n * 4 )) --prompts $2 --seeds $3 --workers 14 \
    --export-variants tools/device/no_thin_inset_export.json
}
trackA() { export CUDA_VISIBLE_DEVICES=0; part s0 benchmark 0 && part s1_solids solids 1; }
trackB() { export CUDA_VISIBLE_DEVICES=1; part s2 benchmark 2 && part s1_props props 1; }
build_cuda_once
trackA > /tmp/trackA.log 2>&1 &
trackB > /tmp/trackB.log 2>&1 &
wait
tar czf - -C /tmp $(cd /tmp && ls -d s0 s2 s1_solids s1_props track?.log 2>/dev/null) | split -b 15M - $OUT/rows.tgz.
for t in A B; do echo "--- $t"; grep -v "^ *[0-9]*%" /tmp/track$t.log | tail -n 6; done
