#!/usr/bin/env bash
# The built-in preset's GPU step with the VAE encoder compiled (the preset) and eager, interleaved
# (tools/device/prior_step_variants.py says why). ~2 minutes.
# Call: run(command="bash tools/device/prior_step_variants.sh 300", kind="nvidia-h200", carry=[".devwhl"]).
source tools/device/common.sh "$1"
timeout $(( $(left) - 5 )) python tools/device/prior_step_variants.py "$2" 2>&1 | grep -v "Loading weights\|SyntaxWarning\|math:" | tee $OUT/variants.txt | tail -n 40
