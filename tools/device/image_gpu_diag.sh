#!/usr/bin/env bash
# Session 51: why image jobs broke on the GPU (view prior alone: cube 0.25-0.37 against 0.76 in session 37; the
# CPU still draws it at 0.72). The view prior's outputs across precisions and CUDA graphs
# (view_prior_parity.py), then the picture variant of three objects on seed 1 four ways side by side: as shipped,
# without CUDA graphs, in fp32, and at one view a step (the CPU's 32x1). Before the call: rm -rf results
# backend/prior/report* backend/prior/weights_shape backend/prior/weights. Call: run(command="bash tools/device/image_gpu_diag.sh 560",
# carry=[".devwhl"]); back in $OUT: diag.tgz (each variant's image.jsonl and pictures).
source tools/device/common.sh "$1"
python tools/device/view_prior_parity.py 2>&1 | grep -v -e "Loading weights" -e torchvision
build_cuda_once
run_variant() {   # name, settings...
  local name=$1; shift
  python -m backend bench image --device cuda --objects cube chair crate --seeds 1 --workers 3 \
    --time-budget $(( $(left) - 60 )) --out /tmp/diag/$name ${1:+--set "$@"} > /tmp/diag_$name.log 2>&1
}
mkdir -p /tmp/diag
run_variant shipped & run_variant nographs cuda_graphs=false & run_variant fp32 half_precision=false &
run_variant one_view resolution_schedule=32x1 & wait
for d in /tmp/diag/*; do echo "== $(basename $d)"; grep -h "seed 1 image" /tmp/diag_$(basename $d).log; done
tar czf $OUT/diag.tgz -C /tmp diag diag_shipped.log
