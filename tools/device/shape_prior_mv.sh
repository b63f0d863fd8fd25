#!/usr/bin/env bash
# Shape prior v11 (session 32): v9 with MVDream's multi-view attention, four views of an object at 90 degrees
# denoised together (backend/prior/model.py, backend/engine/guidance/multiview.py), fine-tuned from the shipped v9
# (backend/prior/weights_shape) on renders of its two shadings in groups of four views; then, once the weights
# exist, every prop of the benchmark, seed 0, with v11 as the shape prior at 48x4 (four views a step), against v9
# at 48x4 (the batch alone) and session 26's seed 0 rows of the preset (48x1).
# Resumable (state in /tmp while the machine stays held; the weights come back in $OUT and, copied to
# backend/prior/weights_mv, travel with the tree to the next call).
# Before the call: rm -rf results backend/view_prior/weights backend/prior/report*; after: git checkout -- results
# backend/view_prior backend/prior.
# Call 1 (training, ~9 min): run(command="bash tools/device/shape_prior_mv.sh 585", kind="nvidia-h200",
#   carry=[".devwhl"], timeout_s=600). Back in $OUT: v11.tgz.* (cat v11.tgz.* | tar xzf -: weights/, report/, train.log)
# Call 2 (quality): the same command with backend/prior/weights_mv in the tree (64 MiB: without weights_shape, which
#   only the b4 variant needs). PROMPTS (a bench prompt set, default props) with NPROMPTS its size (solids: 56).
#   Back in $OUT: mv_ab.tgz.* (/tmp/mv_ab_PROMPTS folders and logs). Rows counted: prompts x variants x seeds x 2
#   (each job writes its coarse and its coarse + fine row).
# Next (session 33): the batch of four with v9 over every prompt and seeds 1 and 2, against the run of record:
#   VARIANTS=b4 PROMPTS=benchmark NPROMPTS=83 SEEDS="1 2" bash tools/device/shape_prior_mv.sh 585 (resumable: ~3 calls)
source tools/device/common.sh "$1"
OUTDIR=/tmp/prior_v11
W=backend/prior/weights_mv
# trains only when the mv variant is asked for and no v11 weights are here yet (session 32's b4-only call trained)
if echo "${VARIANTS:-mv b4}" | grep -qw mv && [ ! -f $W/multiview.json ] && [ ! -f $OUTDIR/report/report.md ]; then
  timeout $(( $(left) - 5 )) python -m backend.prior.train --architecture v11 --init-from backend/prior/weights_shape \
    --out $OUTDIR --images ${IMAGES:-120000} --render-minutes 1.2 --render-chunk 4096 --unet-minutes ${UNET_MIN:-4.8} \
    --unet-batch 512 --unet-lr ${UNET_LR:-2e-4} --samples-per-prompt 1 --sample-steps 30 \
    --checkpoint /tmp/prior_v11_ckpt.pt --data-cache /tmp/prior_data_v11.pt --checkpoint-every 30 >> /tmp/train_v11.log 2>&1
  cp /tmp/train_v11.log $OUTDIR/train.log
  tar czf - -C $OUTDIR $(cd $OUTDIR && ls -d weights report train.log 2>/dev/null) | split -b 15M - $OUT/v11.tgz.
  grep -v "^ *[0-9]*%\|Loading weights" /tmp/train_v11.log | tail -n 12
  exit 0
fi
[ -f $W/multiview.json ] && W=$PWD/$W || W=$OUTDIR/weights
# VARIANTS: which of the two to run (session 32's first call ran b4 alone: the mv variant's path was wrong)
python - "$W" ${VARIANTS:-mv b4} > /tmp/mv_ab.json <<'PY'
import json, sys
known = {"mv": {"shape_model": sys.argv[1], "resolution_schedule": "48x4"}, "b4": {"resolution_schedule": "48x4"}}
print(json.dumps({k: known[k] for k in sys.argv[2:]}))
PY
N=$(echo ${VARIANTS:-mv b4} | wc -w)
build_cuda_once
Q=/tmp/mv_ab_${PROMPTS:-props}
NSEEDS=$(echo ${SEEDS:-0} | wc -w)
resumable_bench quality 45 $Q $(( ${NPROMPTS:-27} * N * NSEEDS * 2 )) --prompts ${PROMPTS:-props} --seeds ${SEEDS:-0} --variants /tmp/mv_ab.json \
  --workers ${WORKERS:-14} --straggler-s 40 >> $Q.log 2>&1
tar czf - -C /tmp $(cd /tmp && ls -d mv_ab_* 2>/dev/null) | split -b 15M - $OUT/mv_ab.tgz.
grep -v "^ *[0-9]*%" $Q.log | grep -v "Loading weights" | grep "^| 0\|^## Var\|^### " | tail -n 14
