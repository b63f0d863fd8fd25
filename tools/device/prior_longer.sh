#!/usr/bin/env bash
# A shipped built-in prior trained further from its own weights (session 41), on a fresh render of the library
# (--seed $SEED: new proportions, looks and cameras), UNET_MIN minutes at a peak learning rate of LR, its VAE,
# tokenizer and text encoder's start kept. PRIOR=shape (default): the shape prior, v9, backend/prior/weights_shape
# (session 23's 4,561 UNet steps; session 41 added 3,443 at LR 1.5e-4 with SEED 1: the GPU preset's props 0.669 /
# 0.682 -> 0.683 / 0.690 on seeds 0 / 1, backend/prior/README.md "Session 41"). PRIOR=colour: the colour prior, v6,
# backend/prior/weights (session 18: 424 s of UNet, never trained further).
# Prediction for the next shape round (SEED=2, UNET_MIN=6.5, from session 41's weights): the loss 0.0133 -> ~0.0127,
# the props up again by about half of session 41's gain. For the colour prior: albedo error and texture PSNR better,
# shape IoU within noise (the shape prior guides the shape-carrying renders).
# One call: run(command="PRIOR=shape SEED=2 bash tools/device/prior_longer.sh 560", carry=[".devwhl"],
# timeout_s=600); back in $OUT: longer.tar.* (cat longer.tar.* | tar xf - -> longer/weights, longer/report). Then
# the A/B: copy longer/weights over the prior's folder (the tree stays under 64 MiB) and
#   AB=tools/device/ab_default.json PROMPTS=props SEEDS="0 1" bash tools/device/quality_ab.sh 420
# (the A/B folder is named by the file, prompts and seeds; weights swapped under the same names need a fresh machine
# or another AB file name, or the warm machine resumes the last A/B).
# CENTRED=0.7 (session 45): 70% of the objects drawn from the middle third of their proportions' ranges
# (train --centred-proportions; a prompt names no proportions, so the prior should draw a typical prop most often):
# v9d, shipped in session 46 (GPU props 0.687 / 0.692 / 0.680 -> 0.695 / 0.699 / 0.691 on seeds 0-2).
# PRIOR=colour12 (session 49): a colour prior in v9's layout (32x32 latents, model.ARCHITECTURES["v12"]) that learns
# and renders the albedo renders only, fine-tuned from the shape prior's weights (a new domain: LR 3e-4). Prediction:
# its samples show a barrel's staves and hoops, and SDS colours do not drift dark (its caption means one shading).
# TRY="a wooden barrel|a wooden crate": the new weights then generate each prompt once on the GPU preset into $OUT/try/,
# with RESERVE seconds of the command kept from the training for them (as --model PATH: the built-in prior's rules
# for hollow and board props, which go by model "builtin", do not apply).
source tools/device/common.sh "$1"
case ${PRIOR:-shape} in
  shape) ARCH=v9 INIT=backend/prior/weights_shape ;;
  colour) ARCH=v6 INIT=backend/prior/weights ;;
  colour12) ARCH=v12 INIT=backend/prior/weights_shape ;;
  *) echo "PRIOR must be shape, colour or colour12, got $PRIOR"; exit 2 ;;
esac
timeout $(( $(left) - ${RESERVE:-25} )) python -m backend.prior.train --architecture $ARCH --init-from $INIT \
  --seed ${SEED:-1} --out /tmp/longer --images 160000 --render-chunk 4096 \
  --unet-minutes ${UNET_MIN:-6.5} --unet-batch 512 --unet-lr ${LR:-1.5e-4} --samples-per-prompt 2 \
  --checkpoint /tmp/longer_ckpt.pt --checkpoint-every 60 --centred-proportions ${CENTRED:-0} \
  --render-minutes ${RENDER_MIN:-1.4} > /tmp/longer.log 2>&1
echo "train rc=$?"
grep -v "^ *[0-9]*%" /tmp/longer.log | tail -n 12
cp /tmp/longer.log /tmp/longer/train.log 2>/dev/null
tar cf - -C /tmp longer | split -b 15M - $OUT/longer.tar.
if [ -n "$TRY" ] && [ -d /tmp/longer/weights ]; then
  mkdir -p $OUT/try
  IFS='|' read -ra prompts <<< "$TRY"
  for prompt in "${prompts[@]}"; do
    [ $(left) -lt 60 ] && break
    name=$(echo "$prompt" | tr ' ' '_')
    timeout $(( $(left) - 10 )) python -m backend generate "$prompt" --preset builtin-gpu --device cuda \
      --model /tmp/longer/weights -o $OUT/try/$name.glb > $OUT/try/$name.log 2>&1
    echo "try $prompt rc=$?"
  done
fi
