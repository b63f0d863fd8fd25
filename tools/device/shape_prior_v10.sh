#!/usr/bin/env bash
# Shape prior v10 (v9 that has also seen the hollow props filled, under "... filled" captions; backend/prior/model.py)
# fine-tuned from the shipped v9 (backend/prior/weights_shape) on one GPU, then checked with
# tools/cavity_preference.py --avoid (does it tell an open cup from a filled one by name?). Resumable: state in
# /tmp, kept while the machine stays held (send the same command again within 30 s of the last one's end).
# Before the call (a call carries at most 64 MiB of tree): rm -rf results backend/view_prior/weights
# backend/prior/report*; after: git checkout -- results backend/view_prior backend/prior.
# Call: run(command="bash tools/device/shape_prior_v10.sh 560", kind="nvidia-h200", carry=[".devwhl"], timeout_s=600).
# Then (the same or the next command) the hollow props and four controls, seed 0, with v10 as the shape prior,
# without and with the avoid term ("{prompt} filled", scales 3 and 10).
# Back in $OUT: v10.tgz.* in 15 MB parts (cat v10.tgz.* | tar xzf -: weights/, report/, cavity.md, train_v10.log,
# avoid/ with the quality rows).
source tools/device/common.sh "$1"
OUTDIR=/tmp/prior_v10
if [ ! -f $OUTDIR/report/report.md ]; then
  timeout $(( $(left) - 5 )) python -m backend.prior.train --architecture v10 --init-from backend/prior/weights_shape \
    --out $OUTDIR --images 120000 --render-minutes 1.2 --render-chunk 4096 --unet-minutes ${UNET_MIN:-5} \
    --unet-batch 512 --unet-lr ${UNET_LR:-2e-4} --checkpoint /tmp/prior_v10_ckpt.pt --data-cache /tmp/prior_data_v10.pt \
    --checkpoint-every 30 >> /tmp/train_v10.log 2>&1
fi
if [ -f $OUTDIR/report/report.md ] && [ ! -s /tmp/cavity.md ]; then
  timeout $(( $(left) - 10 )) python tools/cavity_preference.py --avoid --shape-model $OUTDIR/weights --device cuda \
    --props mug bowl bucket --elevations 15 30 45 60 > /tmp/cavity.md 2>/tmp/cavity.err
fi
if [ -f $OUTDIR/report/report.md ]; then
  W=$OUTDIR/weights A='"avoid_prompt": "{prompt} filled"'
  echo "{\"v10\": {\"shape_model\": \"$W\"}, \"v10_avoid3\": {\"shape_model\": \"$W\", $A, \"avoid_scale\": 3},
         \"v10_avoid10\": {\"shape_model\": \"$W\", $A, \"avoid_scale\": 10}}" > /tmp/avoid.json
  build_cuda_once
  resumable_bench quality 40 $OUTDIR/avoid $(( 7 * 3 * 2 )) --prompts "a red mug" "a wooden bowl" "a wooden bucket" \
    "a wooden barrel" "a red cube" "a wooden chair" "a yellow pyramid" --seeds 0 --variants /tmp/avoid.json \
    --workers 14 --straggler-s 60 >> /tmp/avoid.log 2>&1
  grep -v "^ *[0-9]*%\|Loading weights" /tmp/avoid.log | tail -n 30
fi
cp /tmp/train_v10.log /tmp/cavity.md $OUTDIR/ 2>/dev/null
tar czf - -C $OUTDIR $(cd $OUTDIR && ls -d weights report cavity.md train_v10.log avoid 2>/dev/null) | split -b 15M - $OUT/v10.tgz.
grep -v "^ *[0-9]*%\|Loading weights" /tmp/train_v10.log | tail -n 8; cat /tmp/cavity.md; tail -3 /tmp/cavity.err 2>/dev/null
