#!/usr/bin/env bash
# The 3-seed run of record with a new colour prior where seed 0's solids were already run with it (session 49: v12's
# all-83-prompt seed-0 run, results/quality/runs/2026-12-04-session49-colour-prior-v12-all-seed0-gpu.jsonl): every prop
# on seeds 0-2 (/tmp/props), then the solids on seeds 1 and 2 (/tmp/sol12), each resumed where the last command
# stopped; about 425 + 460 s of bench on one H200, so two commands. The prior to measure sits in backend/prior/weights
# for the call (e.g. `git archive 82cdab2 backend/prior/weights_v12 | tar x -C /tmp/v12` and copy its files over
# weights/). Before the call: rm -rf results backend/view_prior/weights backend/prior/report*. Call:
# run(command="bash tools/device/colour_prior_record.sh 560", carry=[".devwhl"], timeout_s=600); back in $OUT:
# state.tgz.* (cat state.tgz.* | tar xzf -). A second call on a fresh machine: copy state.tgz.* to
# .devstate/state.tgz.* and carry [".devwhl", ".devstate"]. Merge: `python -m backend bench quality --report-only
# SEED0_ALL props sol12 --out DIR` (a later part replaces an earlier part's row of the same job: seed 0's props come from
# this run, its solids from the earlier one).
source tools/device/common.sh "$1"
restore_state
build_cuda_once
# SOLID_SEEDS: the solids' seeds ("0 1 2" when seed 0's solids must run again, e.g. under other settings); SET: settings
# over the preset's for every job, e.g. SET="--set guidance_scale=7.5 --set shape_guidance_scale=3" (session 49's lead).
solid_seeds=(${SOLID_SEEDS:-1 2})
# EXPORTS (session 54): export-only variants, a JSON object, e.g. EXPORTS='{"noseal": {"seal_radius": 0}}': each job's
# final mesh exported again under each (bench quality --export-variants), two rows more a job for each.
rows=2 ex=()
if [ -n "${EXPORTS:-}" ]; then
  echo "$EXPORTS" > /tmp/exports.json
  rows=$(( 2 * (1 + $(python -c "import json; print(len(json.load(open('/tmp/exports.json'))))")) ))
  ex=(--export-variants /tmp/exports.json)
fi
resumable_bench quality 40 /tmp/props $(( 27 * 3 * rows )) --prompts props --seeds 0 1 2 --workers ${W:-14} \
  --straggler-s 60 ${SET:-} "${ex[@]}" >> /tmp/record.log 2>&1 \
  && resumable_bench quality 40 /tmp/sol12 $(( 56 * ${#solid_seeds[@]} * rows )) --prompts solids \
  --seeds "${solid_seeds[@]}" --workers ${W:-14} --straggler-s 60 ${SET:-} "${ex[@]}" >> /tmp/record.log 2>&1
pack_state props sol12 record.log
grep -v "%|" /tmp/record.log | grep "^| [0-9] |" | tail -n 12
