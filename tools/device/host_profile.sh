#!/usr/bin/env bash
# Session 37: the SD-1.5 64 px step's host time by phase, at a 256 px guidance (the GPU out of the way) and at the
# default, under the host-side levers, plus cProfile's top functions (tools/device/host_profile.py). ~4 minutes.
# Tree: any. Call: run(command="bash tools/device/host_profile.sh 300", kind="nvidia-h200", carry=[".devwhl"]).
source tools/device/common.sh "$1"
OUT=$OUT/host timeout $(( $(left) - 5 )) python tools/device/host_profile.py 2>&1 | grep -v "Loading weights\|There are\|warn(\|SyntaxWarning\|Compute \(transm\|rend\)"
