#!/usr/bin/env bash
# Session 33: the built-in prior at 48x4 (four views a step, v9 as the shape prior) as a GPU preset candidate.
# Session 32 measured it on seed 0 over the props and 15 solids (props 0.639 -> 0.660, solids 0.882 -> 0.902);
# this completes the three seeds over all 83 prompts (a run of record for the GPU preset), then, time left,
# the image benchmark (10 objects, picture + joint) with its preset's 32x1 renders as 32x4, seed 0.
# Seed 0's 42 prompts of session 32 start the state (.devstate, made from its jsonl: --resume keeps them).
# Resumable across calls and machines: run(command="bash tools/device/gpu_preset_b4.sh 585",
#   carry=[".devwhl", ".devstate"], timeout_s=600); after each call copy $OUT's state.tgz.* into .devstate/.
# Before a call: rm -rf results backend/view_prior/weights backend/prior/report* (the 64 MiB tree limit).
# A whole new text run of record (after a change that acts on every prompt) is this script with IMAGE=0 and an empty
# .devstate (two commands: ~580 s + ~420 s): IMAGE=0 bash tools/device/gpu_preset_b4.sh 585. (Session 35's run of
# record is session 33's with the hollow props' rows measured again: a change that acts on a few prompts needs only
# theirs, `quality_ab.sh` with PROMPTS, merged with `bench quality --report-only`.)
source tools/device/common.sh "$1"
restore_state
echo '{"b4": {"resolution_schedule": "48x4"}}' > /tmp/b4.json
build_cuda_once
T=/tmp/b4_text; I=/tmp/b4_image
resumable_bench quality 45 $T $(( 83 * 3 * 2 )) --prompts benchmark --seeds 0 1 2 --variants /tmp/b4.json \
  --workers ${WORKERS:-14} --straggler-s 40 >> $T.log 2>&1
if [ "${IMAGE:-1}" = 1 ] && [ "$(count $T/quality.jsonl)" -ge $(( 83 * 3 * 2 )) ]; then
  resumable_bench image 25 $I 20 --text --seeds 0 --set resolution_schedule=32x4 --workers 12 >> $I.log 2>&1
fi
pack_state $(cd /tmp && ls -d b4_text b4_text.log b4_image b4_image.log 2>/dev/null)
grep -v "^ *[0-9]*%" $T.log | grep -v "Loading weights" | grep "^| \|^## \|^### \|^==" | tail -n 20
[ -f $I.log ] && grep -v "^ *[0-9]*%" $I.log | grep -v "Loading weights" | tail -n 8
