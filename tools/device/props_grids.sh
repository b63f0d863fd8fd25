#!/usr/bin/env bash
# Session 48: every prop on seeds 0-2 with what ships (run twice: before and after fine_board_inset) (GPU preset, coarse + fine), each fine export's SDF grid
# saved (tools/device/grid_dump.py) so that export-time changes can be tried on the CPU on the GPU's own results.
# Before the call: rm -rf results backend/view_prior/weights backend/prior/report*. Call:
# run(command="bash tools/device/props_grids.sh 585", carry=[".devwhl"], timeout_s=600); back in $OUT:
# grids.tar.* (the grids) and state.tgz.* (the run's folder, pictures included).
source tools/device/common.sh "$1"
restore_state
build_cuda_once
export GRID_DUMP_DIR=/tmp/grids
b=$(( $(left) - 45 ))
echo "== props x 3 seeds, budget $b s"
timeout $(( $(left) - 20 )) python tools/device/grid_dump.py bench quality --device cuda --resume --time-budget $b \
  --out /tmp/props --prompts props --seeds 0 1 2 --workers 14 --straggler-s 60 > /tmp/props.log 2>&1
tar cf - -C /tmp grids | split -b 15M - $OUT/grids.tar.
pack_state props
ls /tmp/grids | wc -l
grep -v "%|" /tmp/props.log | grep "^| [0-9] |" | head -n 20
