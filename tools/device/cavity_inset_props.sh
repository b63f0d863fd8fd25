#!/usr/bin/env bash
# Session 47: the fine export's cavity inset (export.mesh.cavity_inset: a container's walls thinned from the inside)
# A/B'd on the GPU preset: every prop on seeds 0-2, each job's final mesh exported again with the inset 0.02 and 0.03
# (export-only: the same runs), resumable. Before the call: rm -rf results backend/view_prior/weights
# backend/prior/report*. Call: run(command="bash tools/device/cavity_inset_props.sh 585", carry=[".devwhl"(, ".devstate")],
# timeout_s=600); back in $OUT: state.tgz.* (the run's folder, images included; into .devstate/ to resume).
source tools/device/common.sh "$1"
restore_state
build_cuda_once
echo '{"cav02": {"fine_cavity_inset": 0.02}, "cav03": {"fine_cavity_inset": 0.03}}' > /tmp/cav.json
resumable_bench quality 40 /tmp/cav $(( 27 * 3 * 2 * 3 )) --prompts props --seeds 0 1 2 --workers 14 --straggler-s 60 \
  --export-variants /tmp/cav.json > /tmp/cav.log 2>&1
pack_state cav
grep -v "%|" /tmp/cav.log | grep "^| [0-9] |" | head -n 40
