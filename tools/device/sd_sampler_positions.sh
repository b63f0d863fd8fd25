#!/usr/bin/env bash
# The SD-1.5 albedo step at 64, 192 and 256 px in one fresh process, with and without the bench's reset_peak before a
# configuration (sd_sampler_positions.py says why). ~3 min.
# Call: run(command="bash tools/device/sd_sampler_positions.sh 300", kind="nvidia-h200", carry=[".devwhl"]).
source tools/device/common.sh "$1"
timeout $(( $(left) - 5 )) python tools/device/sd_sampler_positions.py 2>&1 | grep -v "Loading weights\|SyntaxWarning\|math:\|There are" | tail -n 30
