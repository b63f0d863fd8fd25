#!/usr/bin/env bash
# Session 51: image jobs' joint mode with text prior v12. The image preset leaves the text prior's guidance at the
# schema's 100 with weight 0.25 (tuned for v6, session 19); with v12 the joint variant fell from 0.71-0.75 to
# 0.48-0.54 (GPU, 3 seeds). Joint variant, seed 0, the 10 objects, four text-guidance settings side by side.
# Before the call: rm -rf results backend/prior/report* backend/prior/weights_shape backend/prior/weights. Call: run(command="bash
# tools/device/joint_text_sweep.sh 560", carry=[".devwhl"]); back in $OUT: sweep.tgz (image.jsonl, pictures).
source tools/device/common.sh "$1"
build_cuda_once
variant() {   # name, settings...
  local name=$1; shift
  python -m backend bench image --device cuda --seeds ${SEEDS:-0} --variants joint --workers ${W:-4} \
    --time-budget $(( $(left) - 80 )) --out /tmp/sweep/$name --set "$@" > /tmp/sweep_$name.log 2>&1
}
mkdir -p /tmp/sweep
# joint only: the picture variant's rows are dropped from the summary below (its reading is another question)
variant g7w025 guidance_scale=7.5 text_guidance_weight=0.25 &
variant g7w1 guidance_scale=7.5 text_guidance_weight=1 &
variant g7w3 guidance_scale=7.5 text_guidance_weight=3 &
variant g25w025 guidance_scale=25 text_guidance_weight=0.25 &
wait
for d in /tmp/sweep/*; do echo "== $(basename $d)"; grep -h "^joint/\|^image/" /tmp/sweep_$(basename $d).log; done
tar czf $OUT/sweep.tgz -C /tmp sweep
