#!/usr/bin/env bash
# Session 29's lead for the built-in preset, to measure on the GPU: the shape prior's own guidance scale
# (`shape_guidance_scale` 7.5; the colour prior keeps the preset's 3). From the fence's true shape it kept the pickets
# (coarse IoU 0.319 -> 0.457); from the blob, CPU, seed 0, coarse + fine: pyramid 0.753 -> 0.805, red cube 0.904 ->
# 0.876, barrel 0.893 -> 0.895, chair 0.532 -> 0.471, shield 0.337 -> 0.307, fence 0.152 -> 0.154
# (results/quality/README.md, session 29). Every benchmark prompt, seed 0, one command (~6 min of bench on an H200);
# compare with session 26's seed 0 rows (results/quality/runs/2026-12-01-session26-handover-fix-2seeds-gpu.jsonl: the
# same preset, except the VAE encoder now eager: the same arithmetic up to floating-point order). Before the call: rm -rf
# results backend/view_prior/weights backend/prior/report*; after: git checkout -- results backend/view_prior
# backend/prior. Back in $OUT: shape_g.tgz.* (cat shape_g.tgz.* | tar xzf -).
# Call: run(command="bash tools/device/shape_guidance_ab.sh 560", kind="nvidia-h200", carry=[".devwhl"], timeout_s=600)
source tools/device/common.sh "$1"
echo "{\"shape_g${SCALE:-7.5}\": {\"shape_guidance_scale\": ${SCALE:-7.5}}}" > /tmp/shape_g.json
build_cuda_once
resumable_bench quality 60 /tmp/shape_g $(( 83 * 2 )) --prompts benchmark --seeds 0 --variants /tmp/shape_g.json \
  --workers ${W:-14} --straggler-s 60 >> /tmp/shape_g.log 2>&1
tar czf - -C /tmp $(cd /tmp && ls -d shape_g shape_g.log 2>/dev/null) | split -b 15M - $OUT/shape_g.tgz.
grep -v "^ *[0-9]*%" /tmp/shape_g.log | grep -v "Loading weights" | tail -n 12
