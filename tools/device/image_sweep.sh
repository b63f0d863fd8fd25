#!/usr/bin/env bash
# Several image-benchmark runs in one device command (session 52), one after another, each resumable: a plan file
# (the second argument) has one run a line, `NAME|SEEDS|VARIANTS|SETTINGS[|OBJECTS[|EXPORTS]]`, e.g.
#   base|1 2|image joint|
#   shape10|0 1|image|shape_model=builtin-shape shape_guidance_scale=10
#   mug|0 1 2|image joint||mug          (OBJECTS, since session 53: some of the benchmark's 10 objects; default all)
#   seal|0|image|||{"noseal": {"seal_radius": 0}}   (EXPORTS, since session 54: bench image --export-variants, each
#                                                    job's mesh exported again under each, a row each)
# Each run is `bench image --seeds SEEDS --variants VARIANTS --set SETTINGS` into /tmp/sweep/NAME (12 jobs sharing the
# GPU); a run whose rows are all there is skipped, so the same command sent again (within 30 s, the machine still
# held) goes on where the last one stopped. The tree must stay under 64 MiB with .devwhl: an image job needs
# backend/prior/weights_v6 and backend/view_prior/weights, with shape_model=builtin-shape backend/prior/weights_shape
# too, which is 1 MiB over unless the view prior's VAE (the same bytes as weights_v6/vae) is left out and copied
# back on the machine. Session 52, commit first, then:
#   rm -rf results backend/prior/report* backend/prior/weights backend/view_prior/weights/vae docs tests blender_addon
#   backend/view_prior/report
#   run(command="mkdir -p backend/view_prior/weights/vae && cp backend/prior/weights_v6/vae/* backend/view_prior/weights/vae/
#       && bash tools/device/image_sweep.sh 560 PLAN", carry=[".devwhl"])
# (`cp -r .../vae backend/view_prior/weights/vae` nests it: the machine's copy of the tree has the empty folder), then
# `git checkout -- .` here. Back in $OUT: sweep.tgz (each run's image.md/json/jsonl, pictures and log).
source tools/device/common.sh "$1"
PLAN=$2
# a fresh machine goes on from the runs a former call brought back (since session 56: .devstate/state.tgz.* holding
# sweep/NAME, carried with run(carry=[".devwhl", ".devstate"]))
restore_state
build_cuda_once
mkdir -p /tmp/sweep
while IFS='|' read -r name seeds variants settings objects exports; do
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  n_objects=10; [ -n "$objects" ] && n_objects=$(echo $objects | wc -w)
  rows_per_job=1
  if [ -n "$exports" ]; then
    echo "$exports" > /tmp/exports_$name.json
    rows_per_job=$(( 1 + $(python -c "import json; print(len(json.load(open('/tmp/exports_$name.json'))))") ))
  fi
  jobs=$(( n_objects * $(echo $seeds | wc -w) * $(echo $variants | wc -w) * rows_per_job ))
  resumable_bench image 40 /tmp/sweep/$name $jobs --seeds $seeds --variants $variants --workers ${W:-12} \
    ${settings:+--set $settings} ${objects:+--objects $objects} ${exports:+--export-variants /tmp/exports_$name.json} \
    >> /tmp/sweep_$name.log 2>&1 || echo "== $name: stopped"
  echo "== $name ($(count /tmp/sweep/$name/image.jsonl)/$jobs rows)"; grep -h "^joint\|^image" /tmp/sweep_$name.log | tail -8
done < "$PLAN"
tar czf $OUT/sweep.tgz -C /tmp sweep $(cd /tmp && ls sweep_*.log)
