#!/usr/bin/env bash
# Prior v9 (a smaller v8 for the `shape_model` setting, whose UNet learns only lit and textureless renders;
# backend/prior/model.py) trained and measured as the shape prior beside v6 on a two-GPU device machine
# (planned in session 22, backend/prior/README.md). GPU 0: v9 trained (UNET_MIN UNet-minutes over resumed
# commands), then every benchmark prompt with shape_model v9 at seed 0. GPU 1: shape_model v8's missing seed 2
# (session 22 measured seeds 0 and 1: results/quality/runs/2026-11-30-session22-shape-prior-v8-2seeds-gpu.*),
# then v9 at seed 1 once trained, then the image benchmark with v8 as the joint mode's shape prior. Both split
# v9's seed 2 (solids on 0, props on 1). Variants: 32 px
# (`shape_v9`) and 48 px (`shape_v9_48`) renders. Resumable: state lives in /tmp, kept while the machine stays
# held, so the same command is sent again within 30 s of the last one's end. Wheels: tools/device/wheels.sh.
# Before the call, on this machine (the tree must stay under the 64 MiB a call carries):
#   git archive 0e6152b backend/prior/weights_v8 | tar x; rm -rf results backend/view_prior/weights backend/prior/report*
# after: git checkout -- results backend/view_prior backend/prior; rm -rf backend/prior/weights_v8.
# Call: run(command="bash tools/device/shape_prior_v9_x2.sh 550", kind="nvidia-h200-x2", carry=[".devwhl"],
# timeout_s=600), about three times. Back in $OUT: rows.tgz (each part's quality.jsonl and .md, the logs, v9's
# training report; merge rows here with `bench quality --report-only`) and, once trained, the weights in 15 MB
# parts (cat v9_weights.tar.* | tar xf -).
source tools/device/common.sh "$1"
[ -f backend/prior/weights_v8/model_index.json ] || { echo "no backend/prior/weights_v8: see the header"; exit 2; }
V8=$PWD/backend/prior/weights_v8 V9=/tmp/prior_v9/weights
echo "{\"shape_v8\": {\"shape_model\": \"$V8\"}, \"shape_v8_48\": {\"shape_model\": \"$V8\", \"resolution_schedule\": \"48x1\"}}" > /tmp/v8.json
echo "{\"shape_v9\": {\"shape_model\": \"$V9\"}, \"shape_v9_48\": {\"shape_model\": \"$V9\", \"resolution_schedule\": \"48x1\"}}" > /tmp/v9.json
trained() { [ -f /tmp/prior_v9/report/report.md ]; }
bench() { resumable_bench quality 100 "$@"; }   # out, expected rows, args...
part() { # out, prompt set (benchmark 83, solids 56, props 27), seed, variants file
  local n=83; case $2 in solids) n=56;; props) n=27;; esac
  bench /tmp/$1 $(( n * 2 * 2 )) --prompts $2 --seeds $3 --variants $4 --workers 14   # x variants x stages
}
trackA() {
  export CUDA_VISIBLE_DEVICES=0
  if ! trained; then
    timeout $(( $(left) - 5 )) python -m backend.prior.train --architecture v9 --out /tmp/prior_v9 --images 160000 \
      --render-minutes 1.4 --render-chunk 4096 --vae-minutes 1.0 --unet-minutes ${UNET_MIN:-10.5} --unet-batch 512 \
      --checkpoint /tmp/prior_v9_ckpt.pt --data-cache /tmp/prior_data_v9.pt --checkpoint-every 30
  fi
  trained && part v9_s0 benchmark 0 /tmp/v9.json && part v9_s2_solids solids 2 /tmp/v9.json
}
trackB() {
  export CUDA_VISIBLE_DEVICES=1
  part v8_s2 benchmark 2 /tmp/v8.json
  while ! trained && [ $(left) -gt 200 ]; do sleep 10; done
  trained && part v9_s1 benchmark 1 /tmp/v9.json && part v9_s2_props props 2 /tmp/v9.json
  # Image jobs with v8 as the joint mode's shape prior (session 22), 10 objects x 3 seeds x (image, joint):
  # against results/image/'s run of record (no shape prior).
  resumable_bench image 60 /tmp/img_shape_v8 60 --text --seeds 0 1 2 --set shape_model=$V8 --workers 12
}
trackA > /tmp/trackA.log 2>&1 &
trackB > /tmp/trackB.log 2>&1 &
wait
cp -r /tmp/prior_v9/report /tmp/v9_report 2>/dev/null
tar czf $OUT/rows.tgz -C /tmp $(cd /tmp && ls -d v8_s2/quality.* v9_s*/quality.* img_shape_v8/image.* v9_report track?.log 2>/dev/null)
trained && tar cf - -C /tmp/prior_v9 weights | split -b 15M - $OUT/v9_weights.tar.
for t in A B; do echo "--- $t"; grep -v "^ *[0-9]*%" /tmp/track$t.log | tail -n 8; done
