#!/usr/bin/env bash
# The image benchmark's run of record on one GPU (session 26): the image preset as it ships (coarse + fine
# since session 25) on the 10 objects x 3 seeds, picture and joint (`--text`), then the same jobs' picture
# variant with `stages=coarse` (what the preset was before) for the side by side. Resumable: state lives in
# /tmp, kept while the machine stays held, so the same command is sent again within 30 s of the last one's
# end. Wheels: tools/device/wheels.sh. Call: run(command="bash tools/device/image_bench.sh 560",
# kind="nvidia-h200", carry=[".devwhl"], timeout_s=600); the argument is this command's seconds.
# Back in $OUT: res.tgz (logs, image.md/json/jsonl and pictures of each part).
# COARSE=0 leaves out the coarse side by side (session 35: the GPU's image preset, 32x4, with the hollow mug, alone).
# A fresh machine resumes from .devstate (run(carry=[".devwhl", ".devstate"]); copy $OUT's state.tgz.* into
# .devstate/ after each call; empty it before a new run). Before the call: rm -rf results backend/prior/report*
# backend/prior/weights_shape backend/prior/weights (an image job loads the view prior and v6, weights_v6, only;
# the tree must stay under 64 MiB).
source tools/device/common.sh "$1"
restore_state
bench() { resumable_bench image 40 "$@"; }   # out, expected rows, args...
# An A/B of one setting (session 35, for the next device session: the image preset at 48 px renders, which on the
# CPU gained on 3 of 4 objects, runs/2026-12-02-session35-image-48px-cpu.jsonl):
#   SEEDS=0 SET=resolution_schedule=48x4 NAME=img_48x4 COARSE=0 bash tools/device/image_bench.sh 300
SEEDS=${SEEDS:-0 1 2}; NAME=${NAME:-img_fine}
{
  build_cuda_once
  bench /tmp/$NAME $(( 20 * $(echo $SEEDS | wc -w) )) --seeds $SEEDS --text ${SET:+--set $SET} --workers ${W:-12} && \
  { [ "${COARSE:-1}" = 0 ] || bench /tmp/img_coarse 30 --seeds 0 1 2 --set stages=coarse --workers ${W:-12}; }
} >> /tmp/image_bench.log 2>&1
pack_state $NAME $( [ -d /tmp/img_coarse ] && echo img_coarse ) image_bench.log
for d in $NAME img_coarse; do [ -d /tmp/$d ] && mkdir -p /tmp/res/$d && cp /tmp/$d/image.* /tmp/$d/*.png /tmp/res/$d/ 2>/dev/null; done
cp /tmp/image_bench.log /tmp/res/
tar czf $OUT/res.tgz -C /tmp res
grep -v "Loading weights" /tmp/image_bench.log | tail -40
