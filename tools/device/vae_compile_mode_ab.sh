#!/usr/bin/env bash
# Issue 13 point 1 (single job <= 1.3x the bound): the SD-1.5 64 px step with the VAE encoder compiled in
# torch.compile's "reduce-overhead" mode (its forward and backward replayed from CUDA graphs, setting
# vae_compile_mode), alone and with the graphed + compiled render, A/B in one process against the default rows.
# Before: rm -rf results backend/view_prior/weights backend/prior/report*; after: git checkout -- results
# backend/view_prior backend/prior.
# Call: run(command="bash tools/device/vae_compile_mode_ab.sh 590", kind="nvidia-h200", carry=[".devwhl"], timeout_s=600).
source tools/device/common.sh "$1"
timeout $(( $(left) - 5 )) python -m backend bench speed --stages 64x1 --no-prior --long-steps "${LONG_STEPS:-300}" \
  --ab vae_compile_mode=reduce-overhead --ab vae_compile_mode=reduce-overhead,graph_render=true,compile_render=true \
  --out $OUT/speed 2>&1 | grep -v "Loading weights\|There are\|^\[trans\|warn(" | tail -n 40
