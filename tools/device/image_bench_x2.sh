#!/usr/bin/env bash
# The image benchmark's run of record on a two-GPU device machine (session 20, results/image/README.md):
# GPU 0 = bench image with the shipped view prior (one job alone first, for its time; then 3 seeds, picture
# and joint; then the view prior alone); GPU 1 = the view prior trained for 13 UNet-minutes, then bench
# image with it. Resumable: state lives in /tmp, kept while the machine stays held, so the same command
# is sent again within 30 s of the last one's end (three commands in session 20). Wheels:
# tools/device/wheels.sh. Call: run(command="bash tools/device/image_bench_x2.sh 555",
# kind="nvidia-h200-x2", carry=[".devwhl"], timeout_s=600); the argument is this command's seconds.
# Back in $OUT: res.tgz (logs, image.md/json/jsonl of each part, the training report) and, once trained,
# vp2_weights.tar (the view prior in diffusers layout).
source tools/device/common.sh "$1"
bench() { resumable_bench image 170 "$@"; }   # out, expected rows, args...
trackA() {
  export CUDA_VISIBLE_DEVICES=0
  if [ ! -f /tmp/probe/image.jsonl ]; then
    timeout 200 python -m backend bench image --device cuda --objects cube --seeds 0 --workers 1 --out /tmp/probe
  fi
  bench /tmp/img_old 60 --seeds 0 1 2 --text --workers ${WA:-6} && \
  bench /tmp/img_va 30 --seeds 0 1 2 --set auto_prompt=false --workers ${WA:-6}
}
trackB() {
  export CUDA_VISIBLE_DEVICES=1
  if [ ! -f /tmp/vp2/report/report.md ]; then
    ls -la /tmp/vp2_ckpt.pt 2>&1
    timeout $(( $(left) - 5 )) python -m backend.view_prior.train --out /tmp/vp2 --render-minutes 2.5 --unet-minutes 13 \
      --checkpoint /tmp/vp2_ckpt.pt --data-cache /tmp/vp2_data.pt --checkpoint-every 30
  fi
  [ -f /tmp/vp2/report/report.md ] && bench /tmp/img_new 60 --model /tmp/vp2/weights --seeds 0 1 2 --text --workers ${WB:-6}
}
trackA > /tmp/trackA.log 2>&1 &
trackB > /tmp/trackB.log 2>&1 &
wait
for d in probe img_old img_va img_new; do [ -d /tmp/$d ] && mkdir -p /tmp/res/$d && cp /tmp/$d/image.* /tmp/res/$d/ 2>/dev/null; done
cp /tmp/trackA.log /tmp/trackB.log /tmp/res/; cp -r /tmp/vp2/report /tmp/res/vp2_report 2>/dev/null
tar czf $OUT/res.tgz -C /tmp res
[ -f /tmp/vp2/report/report.md ] && tar cf $OUT/vp2_weights.tar -C /tmp/vp2 weights
echo "--- A"; tail -25 /tmp/trackA.log; echo "--- B"; grep -v "^ *[0-9]*%" /tmp/trackB.log | tail -15
