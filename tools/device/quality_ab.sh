#!/usr/bin/env bash
# A quality A/B on one GPU, resumable across calls and machines (session 33): every variant of $AB (a JSON file
# {name: {setting: value}} over the device's recommended settings, on a GPU since session 33 four views a step)
# on $PROMPTS (a bench prompt set or prompts; default props) and $SEEDS (default 0), 14 jobs sharing the GPU.
# The rows of the current run of record (results/quality/quality.jsonl: variant default since session 39, b4 before) are the baseline. The variants
# of ab_gpu_budget.json: what more GPU budget buys (1000 steps, eight views a step, a 10-step fine stage: at one view
# a step ~10 fine steps thinned the lamp post away, session 14; four views a step may hold it).
#   AB=tools/device/ab_gpu_budget.json bash tools/device/quality_ab.sh 585
# ab_hollow.json (session 34): the preset as it ships since the hollow props are opened from the top, on them:
#   AB=tools/device/ab_hollow.json PROMPTS=hollow SEEDS="0 1 2" bash tools/device/quality_ab.sh 300
# ab_prior_hull.json (session 39): the coarse field started on the prior's visual hull (shape_init prior-hull; CPU,
# seed 0, coarse: pyramid 0.777 -> 0.818, chair 0.380 -> 0.461, barrel, crate +0.03-0.04; cube 0.938 -> 0.885, lamp
# post 0.428 -> 0.385 with the hard hull; the blurred hull as built: pyramid 0.777/0.757 -> 0.822/0.851, cube
# 0.938/0.932 -> 0.913/0.939 on seeds 0/1),
# every prompt, seed 0 (session 40: solids 0.896 -> 0.904, pyramid volume 1.26 -> 1.07, props 0.669 -> 0.650; stays
# off; results/quality/README.md; the hull since keeps all views but two: re-run), then the solids on seed 1:
#   AB=tools/device/ab_prior_hull.json PROMPTS=benchmark SEEDS=0 bash tools/device/quality_ab.sh 560
#   AB=tools/device/ab_prior_hull.json PROMPTS="cube pyramid cone cylinder" SEEDS=1 bash tools/device/quality_ab.sh 400
# ab_silhouette_level.json (session 55): the coarse iso-level matched to the field's own renders, the fine stage's
# surface drawn 1.0 beta inside (CPU, seed 0, coarse + fine: cube 0.844 -> 0.919 at volume 1.18 -> 1.04, pyramid
# 0.788 -> 0.890 at 1.27 -> 1.08, sphere 0.855 -> 0.983, the other solids +0.00-0.02; with the sealed hand-over crate
# 0.835 -> 0.877, lamp post 0.534 -> 0.623, fence 0.382 -> 0.456; seed 1: cube, pyramid, crate +0.06, the lamp post
# 0.539 -> 0.321, its pole cut; since session 56 thin parts keep the automatic level, keep_thin_parts: the lamp post
# 0.539 -> 0.585, seed 0's 12 prompts 0.788 -> 0.832), every prompt, seed 0 (the run of record is the baseline):
#   AB=tools/device/ab_silhouette_level.json PROMPTS=benchmark SEEDS=0 bash tools/device/quality_ab.sh 560
# Since session 57 with the flat base as an export variant of both arms (fine_flat_base: the underside flattened at its
# rim; CPU: pyramid 0.785 -> 0.830 and 0.810 -> 0.876, cones +0.02-0.04, normal consistency of cones, pyramids and
# cylinders 0.92-0.97 -> 0.96-0.99):
#   AB=tools/device/ab_silhouette_level.json EXPORTS=tools/device/flat_base_export.json PROMPTS=benchmark SEEDS=0 \
#     bash tools/device/quality_ab.sh 560
# Session 58: the flat base is in the preset; the preset again with it exported off as well (paired, the same fields):
#   AB=tools/device/ab_default.json EXPORTS=tools/device/no_flat_base_export.json PROMPTS=benchmark SEEDS=0 \
#     bash tools/device/quality_ab.sh 560
# run(command=..., carry=[".devwhl", ".devstate"], timeout_s=600); after each call copy $OUT's state.tgz.* into
# .devstate/ (the call after resumes from it on any machine; empty it before a new A/B). Before a call: rm -rf results
# backend/view_prior/weights backend/prior/report*; after: git checkout -- results backend/view_prior backend/prior.
source tools/device/common.sh "$1"
restore_state
AB=${AB:?a variants file, e.g. tools/device/ab_gpu_budget.json}
# The run's folder is named by the variants file and the prompts and seeds it covers: a machine still warm from an
# A/B of the same file on other prompts resumed that one and ran nothing (session 41). Weights swapped under the same
# file name are not seen: empty .devstate/ and use a fresh machine (or another file name) for those.
NAME=ab_$(basename $AB .json)_$(echo "${PROMPTS:-props} ${SEEDS:-0}" | md5sum | cut -c1-6); Q=/tmp/$NAME
read N NP <<<"$(python - "$AB" ${PROMPTS:-props} <<'PY'
import json, sys
from backend.bench.quality import expand_prompts
print(len(json.load(open(sys.argv[1]))), len(expand_prompts(sys.argv[2:])))
PY
)"
NSEEDS=$(echo ${SEEDS:-0} | wc -w)
# EXPORTS (session 57): each job's meshes also exported under those export-only settings, as quality_seeds.sh does
# (its coarse and fine rows again under each export variant's name).
extra=(); NE=0
[ -n "${EXPORTS:-}" ] && { NE=$(python -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$EXPORTS"); extra=(--export-variants "$EXPORTS"); }
build_cuda_once
resumable_bench quality 45 $Q $(( N * NP * NSEEDS * 2 * (1 + NE) )) --prompts ${PROMPTS:-props} --seeds ${SEEDS:-0} --variants $AB \
  "${extra[@]}" --workers ${WORKERS:-14} --straggler-s 40 >> $Q.log 2>&1
pack_state $NAME $NAME.log
grep -v "^ *[0-9]*%" $Q.log | grep -v "Loading weights" | grep "^| [0-9] |\|^## \|^### \|^==" | tail -n 20
