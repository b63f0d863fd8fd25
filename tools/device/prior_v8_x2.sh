#!/usr/bin/env bash
# Prior v8 (32x32 latents + camera, plain captions) trained and measured on a two-GPU device machine, with a
# settings sweep on the thin and hollow props beside it (session 21, backend/prior/README.md). GPU 0: v8
# trained (UNET_MIN UNet-minutes over resumed commands), then bench quality of v8 on the A/B prompts. GPU 1:
# bench quality of the shipped v6 on the thin/hollow props under tools/device/thin_sweep.json (seed 0), then
# the A/B prompts' v8 seeds that GPU 0 has not reached. Resumable: state lives in /tmp, kept while the
# machine stays held, so the same command is sent again within 30 s of the last one's end. Wheels:
# tools/device/wheels.sh. Call: run(command="bash tools/device/prior_v8_x2.sh 550", kind="nvidia-h200-x2",
# carry=[".devwhl"], timeout_s=600); the argument is this command's seconds. Back in $OUT: res.tgz (logs,
# quality.md/jsonl and turntable grids of each part, the training report; with every part done it passed the
# 16 MB a file may have, and session 21 fetched the rows alone with one more short command) and, once trained,
# the weights in 15 MB parts (cat v8_weights.tar.* | tar xf -). Session 21 sent it three times (545, 560, 480 s).
source tools/device/common.sh "$1"
THIN=("a wooden chair" "a wooden table" "a wooden bench" "a wooden stool" "a wooden fence" "a metal sword"
      "a wooden shield" "a wooden signpost" "a metal lamp post" "a red mug" "a wooden bowl" "a wooden bucket"
      "a stone well" "a wooden barrel" "a red cube")
AB=("a red cube" "a red pyramid" "a wooden crate" "a wooden treasure chest" "a wooden chair" "a wooden bench"
    "a wooden barrel" "a blue sphere" "a metal sword" "a wooden table")
bench() { resumable_bench quality 100 "$@"; }   # out, expected rows, args...
V8='{"v8": {"model": "/tmp/prior_v8/weights"}, "v8_48": {"model": "/tmp/prior_v8/weights", "resolution_schedule": "48x1"}}'
trackA() {
  export CUDA_VISIBLE_DEVICES=0
  if [ ! -f /tmp/prior_v8/report/report.md ]; then
    ls -la /tmp/prior_v8_ckpt.pt 2>&1
    timeout $(( $(left) - 5 )) python -m backend.prior.train --architecture v8 --out /tmp/prior_v8 --images 160000 \
      --render-minutes 1.4 --render-chunk 4096 --vae-minutes 1.0 --unet-minutes ${UNET_MIN:-10.5} --unet-batch 512 \
      --checkpoint /tmp/prior_v8_ckpt.pt --data-cache /tmp/prior_data_v8.pt --checkpoint-every 30
  fi
  echo "$V8" > /tmp/v8.json
  [ -f /tmp/prior_v8/report/report.md ] && bench /tmp/ab_v8_s0 40 --prompts "${AB[@]}" --seeds 0 --variants /tmp/v8.json --workers 14 \
    && bench /tmp/ab_v8_s1 40 --prompts "${AB[@]}" --seeds 1 --variants /tmp/v8.json --workers 14
}
trackB() {
  export CUDA_VISIBLE_DEVICES=1
  bench /tmp/thin 180 --prompts "${THIN[@]}" --seeds 0 --variants tools/device/thin_sweep.json --workers 14
  echo "$V8" > /tmp/v8.json
  while [ ! -f /tmp/prior_v8/report/report.md ] && [ $(left) -gt 150 ]; do sleep 10; done
  [ -f /tmp/prior_v8/report/report.md ] && bench /tmp/ab_v8_s2 40 --prompts "${AB[@]}" --seeds 2 --variants /tmp/v8.json --workers 14
}
trackA > /tmp/trackA.log 2>&1 &
trackB > /tmp/trackB.log 2>&1 &
wait
rm -rf /tmp/res; for d in thin ab_v8_s0 ab_v8_s1 ab_v8_s2; do [ -d /tmp/$d ] && mkdir -p /tmp/res/$d && cp /tmp/$d/quality.* /tmp/$d/*.png /tmp/res/$d/ 2>/dev/null; done
cp /tmp/trackA.log /tmp/trackB.log /tmp/res/; cp -r /tmp/prior_v8/report /tmp/res/v8_report 2>/dev/null
tar czf $OUT/res.tgz -C /tmp res
[ -f /tmp/prior_v8/report/report.md ] && tar cf - -C /tmp/prior_v8 weights | split -b 15M - $OUT/v8_weights.tar.
echo "--- A"; grep -v "^ *[0-9]*%" /tmp/trackA.log | tail -20; echo "--- B"; tail -15 /tmp/trackB.log
