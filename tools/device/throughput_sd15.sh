#!/usr/bin/env bash
# Issue 13 point 2 on the GPU, the SD-1.5 part again with the settings an SD user now gets (session 37: the training
# render replayed from CUDA graphs; the part was last measured in session 15, eager): 8 jobs at default settings,
# one after another (2 run, projected) against one group sharing each VAE encode and UNet call. The stored
# results/speed/throughput.json travels and is copied into $OUT/tp first, so the prior part's rows stay in the file
# that comes back (copy it over results/speed/throughput.json, then `python -m backend.bench.speed_report results/speed`).
# Before the call: rm -rf results/quality results/image backend/view_prior/weights backend/prior/report*; after:
# git checkout -- results/quality results/image backend/view_prior backend/prior.
# Call: run(command="bash tools/device/throughput_sd15.sh 590", kind="nvidia-h200", carry=[".devwhl"], timeout_s=600).
source tools/device/common.sh "$1"
mkdir -p $OUT/tp && cp results/speed/throughput.json $OUT/tp/
timeout $(( $(left) - 5 )) python -m backend bench throughput --device cuda --part sd15 --modes sequential,group \
  --out $OUT/tp 2>&1 | grep -v "Loading weights\|There are\|^\[trans\|Warning\|warn(" | tail -n 30
