#!/usr/bin/env bash
# Planned in session 27 for the hollow props; NOT worth running (session 28): a CPU oracle, v9 fine-tuned on the
# mug alone up to 80 degrees, prefers the open mug at every elevation and SDS still draws it filled
# (results/quality/runs/2026-12-01-session28-mug-top-views-oracle-cpu.md). Kept for the record: the shape prior fine-tuned from the
# shipped v9 on renders from up to 80 degrees of elevation (`--elevation-max 80`; every shipped prior saw at most
# 45, where a cup's inside is a few dark pixels), then generation with cameras up to 70 degrees. Checked first with
# tools/cavity_preference.py (open vs filled at 15-75 degrees), then the hollow props and four controls at seed 0:
# the new prior at the preset's cameras and at elevation_max 70, and the shipped v9 at elevation_max 70.
# Resumable: state in /tmp (send the same command again within 30 s of the last one's end).
# Before the call: rm -rf results backend/view_prior/weights backend/prior/report*; after: git checkout -- results
# backend/view_prior backend/prior. Call: run(command="bash tools/device/shape_prior_top_views.sh 560",
# kind="nvidia-h200", carry=[".devwhl"], timeout_s=600), twice. Back in $OUT: top.tgz.* in 15 MB parts.
source tools/device/common.sh "$1"
OUTDIR=/tmp/prior_top
if [ ! -f $OUTDIR/report/report.md ]; then
  timeout $(( $(left) - 5 )) python -m backend.prior.train --architecture v9 --init-from backend/prior/weights_shape \
    --elevation-max 80 --out $OUTDIR --images 120000 --render-minutes 1.2 --render-chunk 4096 \
    --unet-minutes ${UNET_MIN:-5} --unet-batch 512 --unet-lr ${UNET_LR:-2e-4} --checkpoint /tmp/prior_top_ckpt.pt \
    --data-cache /tmp/prior_data_top.pt --checkpoint-every 30 >> /tmp/train_top.log 2>&1
fi
if [ -f $OUTDIR/report/report.md ] && [ ! -s /tmp/cavity_top.md ]; then
  timeout $(( $(left) - 10 )) python tools/cavity_preference.py --shape-model $OUTDIR/weights --device cuda \
    --props mug bowl bucket --elevations 15 30 45 60 75 > /tmp/cavity_top.md 2>/tmp/cavity_top.err
fi
if [ -f $OUTDIR/report/report.md ]; then
  W=$OUTDIR/weights
  echo "{\"top\": {\"shape_model\": \"$W\"}, \"top_up70\": {\"shape_model\": \"$W\", \"elevation_max\": 70},
         \"v9_up70\": {\"elevation_max\": 70}}" > /tmp/top.json
  build_cuda_once
  resumable_bench quality 40 $OUTDIR/quality $(( 7 * 3 * 2 )) --prompts "a red mug" "a wooden bowl" "a wooden bucket" \
    "a wooden barrel" "a red cube" "a wooden chair" "a yellow pyramid" --seeds 0 --variants /tmp/top.json \
    --workers 14 --straggler-s 60 >> /tmp/top.log 2>&1
  grep -v "^ *[0-9]*%\|Loading weights" /tmp/top.log | tail -n 30
fi
cp /tmp/train_top.log /tmp/cavity_top.md $OUTDIR/ 2>/dev/null
tar czf - -C $OUTDIR $(cd $OUTDIR && ls -d weights report cavity_top.md train_top.log quality 2>/dev/null) | split -b 15M - $OUT/top.tgz.
grep -v "^ *[0-9]*%\|Loading weights" /tmp/train_top.log | tail -n 6; cat /tmp/cavity_top.md; tail -3 /tmp/cavity_top.err 2>/dev/null
