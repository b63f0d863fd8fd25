#!/usr/bin/env bash
# The built-in prior's step at 32, 48 and 64 px on the GPU, interleaved, and a profile of 48 against 64
# (tools/device/prior_resolution_profile.py says why). ~3 minutes.
# Call: run(command="bash tools/device/prior_resolution_profile.sh 400", kind="nvidia-h200", carry=[".devwhl"]).
source tools/device/common.sh "$1"
timeout $(( $(left) - 5 )) python tools/device/prior_resolution_profile.py 2>&1 | grep -v "Loading weights" | tee $OUT/profile.txt | tail -n 150
