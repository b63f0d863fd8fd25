#!/usr/bin/env bash
# Both built-in priors trained further from their shipped weights at once, side by side on one GPU (session 43):
# each UNet is small (8.8 M / 10.9 M parameters, 32^2 / 16^2 latents), so one alone leaves the H200 partly idle
# and two share it for far less than twice the wall time. As prior_longer.sh otherwise: a fresh render of the
# library (SHAPE_SEED, default 2; COLOUR_SEED, default 1), UNET_MIN minutes each at a peak LR of LR.
# Prediction: shape loss 0.0129 -> ~0.0125; colour loss 0.0181 -> ~0.016 (v6 had 424 s of UNet, never more).
# Session 43 (496 s): shape 133 ms/step side by side (113 alone), 2,705 steps, 0.0125; colour 85 ms/step, 4,245
# steps, 0.0155. The shape prior shipped (props +0.003 on seeds 0 / 1); the colour prior darkened wood and stone
# (albedo 0.113 -> 0.134) and did not (backend/prior/README.md, "Session 43").
# One call: run(command="bash tools/device/prior_longer_both.sh 570", carry=[".devwhl"], timeout_s=600); back in
# $OUT: longer.tar.* (cat longer.tar.* | tar xf - -> longer_shape/{weights,report,train.log},
# longer_colour/{weights,report,train.log}).
source tools/device/common.sh "$1"
train() {  # NAME ARCH INIT SEED
  timeout $(( $(left) - 25 )) python -m backend.prior.train --architecture $2 --init-from $3 \
    --seed $4 --out /tmp/longer_$1 --images 120000 --render-minutes 1.4 --render-chunk 4096 \
    --unet-minutes ${UNET_MIN:-6.0} --unet-batch 512 --unet-lr ${LR:-1.5e-4} --samples-per-prompt 2 \
    --checkpoint /tmp/longer_$1_ckpt.pt --checkpoint-every 60 > /tmp/longer_$1.log 2>&1
  echo "$1 train rc=$?"
}
train shape v9 backend/prior/weights_shape ${SHAPE_SEED:-2} &
train colour v6 backend/prior/weights ${COLOUR_SEED:-1} &
wait
for n in shape colour; do
  echo "== $n"; grep -v "^ *[0-9]*%" /tmp/longer_$n.log | grep -v "should be kept\|Writing model\|Loading weights" | tail -n 8
  cp /tmp/longer_$n.log /tmp/longer_$n/train.log 2>/dev/null
done
tar cf - -C /tmp longer_shape longer_colour | split -b 15M - $OUT/longer.tar.
