#!/usr/bin/env bash
# The shipped shape prior (v9, backend/prior/weights_shape: 4,561 UNet steps in 10 minutes, session 23, its loss
# still falling 0.0149 -> 0.0145 over the last 400) trained further (session 41): fine-tuned from its own weights
# on a fresh render of the library (--seed 1: new proportions, looks and cameras), UNET_MIN minutes at a peak
# learning rate of LR (v9's was 5e-4 from scratch), the VAE, tokenizer and text encoder's start kept. Prediction:
# sharper thin parts in its samples (report/samples.png) and, as the shape prior of the GPU preset, the props'
# mean IoU up by >= 0.02 on seed 0 if a longer training is what their blur is short of; no change otherwise.
# One call: run(command="bash tools/device/shape_prior_longer.sh 560", carry=[".devwhl"], timeout_s=600);
# back in $OUT: v9b.tar.* (cat v9b.tar.* | tar xf - -> v9b/weights, v9b/report). Then the A/B: copy v9b/weights
# over backend/prior/weights_shape (the tree stays under 64 MiB) and
#   AB=tools/device/ab_default.json PROMPTS=props SEEDS="0 1" bash tools/device/quality_ab.sh 560
source tools/device/common.sh "$1"
timeout $(( $(left) - 25 )) python -m backend.prior.train --architecture v9 --init-from backend/prior/weights_shape \
  --seed 1 --out /tmp/v9b --images 160000 --render-minutes 1.4 --render-chunk 4096 --unet-minutes ${UNET_MIN:-6.5} \
  --unet-batch 512 --unet-lr ${LR:-1.5e-4} --samples-per-prompt 2 --checkpoint /tmp/v9b_ckpt.pt --checkpoint-every 60 \
  > /tmp/v9b.log 2>&1
echo "train rc=$?"
grep -v "^ *[0-9]*%" /tmp/v9b.log | tail -n 12
cp /tmp/v9b.log /tmp/v9b/ 2>/dev/null
tar cf - -C /tmp v9b | split -b 15M - $OUT/v9b.tar.
