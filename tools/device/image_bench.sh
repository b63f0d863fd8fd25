#!/usr/bin/env bash
# The image benchmark's run of record on one GPU (session 26): the image preset as it ships (coarse + fine
# since session 25) on the 10 objects x 3 seeds, picture and joint (`--text`), then the same jobs' picture
# variant with `stages=coarse` (what the preset was before) for the side by side. Resumable: state lives in
# /tmp, kept while the machine stays held, so the same command is sent again within 30 s of the last one's
# end. Wheels: tools/device/wheels.sh. Call: run(command="bash tools/device/image_bench.sh 560",
# kind="nvidia-h200", carry=[".devwhl"], timeout_s=600); the argument is this command's seconds.
# Back in $OUT: res.tgz (logs, image.md/json/jsonl and pictures of each part).
source tools/device/common.sh "$1"
bench() { resumable_bench image 40 "$@"; }   # out, expected rows, args...
{
  build_cuda_once
  bench /tmp/img_fine 60 --seeds 0 1 2 --text --workers ${W:-12} && \
  bench /tmp/img_coarse 30 --seeds 0 1 2 --set stages=coarse --workers ${W:-12}
} > /tmp/image_bench.log 2>&1
for d in img_fine img_coarse; do [ -d /tmp/$d ] && mkdir -p /tmp/res/$d && cp /tmp/$d/image.* /tmp/$d/*.png /tmp/res/$d/ 2>/dev/null; done
cp /tmp/image_bench.log /tmp/res/
tar czf $OUT/res.tgz -C /tmp res
grep -v "Loading weights" /tmp/image_bench.log | tail -40
