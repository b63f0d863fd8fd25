#!/usr/bin/env bash
# Session 47: the hollow props (mug, bowl, bucket) and the fence on seeds 0-2 with what ships after session 47's
# cavity inset (preset fine_cavity_inset 0.02) and the bucket's hoops fixed (the truth's), for the run of record;
# each job's final mesh also exported with the cavity inset 0.03 and the thin-part inset 0.02 / 0.025 (export-only
# A/B). Before the call: rm -rf results backend/view_prior/weights backend/prior/report*. Call:
# run(command="bash tools/device/hollow_props_record.sh 400", carry=[".devwhl"], timeout_s=420); back in $OUT:
# state.tgz.* (the run's folder, images included).
source tools/device/common.sh "$1"
restore_state
build_cuda_once
echo '{"cav03": {"fine_cavity_inset": 0.03}, "thin02": {"fine_thin_inset": 0.02}, "thin025": {"fine_thin_inset": 0.025}}' > /tmp/ex.json
resumable_bench quality 30 /tmp/hollow $(( 4 * 3 * 2 * 4 )) --prompts hollow "a wooden fence" --seeds 0 1 2 --workers 12 \
  --straggler-s 60 --export-variants /tmp/ex.json > /tmp/hollow.log 2>&1
pack_state hollow
grep -v "%|" /tmp/hollow.log | grep "^| [0-9] |" | head -n 40
