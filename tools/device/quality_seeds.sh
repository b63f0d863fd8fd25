#!/usr/bin/env bash
# The quality benchmark's run of record of the preset as it ships on one GPU: every benchmark prompt, coarse and
# coarse + fine, one folder per seed (/tmp/s<N>), seeds in the order given, each resumed where the last command
# stopped (state in /tmp: send the same command again within 30 s of the last one's end). Before the call (a
# call carries at most 64 MiB of tree): rm -rf results backend/view_prior/weights backend/prior/report*; after:
# git checkout -- results backend/view_prior backend/prior. Call: run(command="bash tools/device/quality_seeds.sh
# 560 0 1 2", kind="nvidia-h200", carry=[".devwhl"], timeout_s=600). Back in $OUT: rows.tgz.* in 15 MB parts
# (cat rows.tgz.* | tar xzf -). Merge here: `python -m backend bench quality --report-only s0 s1 s2 --out DIR`.
# EXPORTS=tools/device/flat_base_export.json: each job's fine mesh also exported under those export-only settings
# (its coarse and fine rows copied under the variant's name: four rows a job).
# On a fresh machine: cp $OUT's rows.tgz.* to .devstate/state.tgz.* and call with carry=[".devwhl", ".devstate"].
# Do that copy before every call after the first, not only when a machine was lost: a warm machine can be given back
# between two calls (session 44: the third call started a fresh machine from nothing and the device time ran out).
source tools/device/common.sh "$1"; shift
restore_state   # a fresh machine resumes from the rows a former call brought back (copied into .devstate/state.tgz.*)
build_cuda_once
rows=$(( 83 * 2 )); extra=()
[ -n "${EXPORTS:-}" ] && { rows=$(( 83 * 4 )); extra=(--export-variants "$EXPORTS"); }
for seed in "$@"; do
  resumable_bench quality 60 /tmp/s$seed $rows --prompts benchmark --seeds $seed --workers ${W:-14} \
    --straggler-s 60 "${extra[@]}" >> /tmp/quality.log 2>&1 || break
done
tar czf - -C /tmp $(cd /tmp && ls -d s[0-9] quality.log 2>/dev/null) | split -b 15M - $OUT/rows.tgz.
grep -v "^ *[0-9]*%" /tmp/quality.log | grep -v "Loading weights" | tail -n 12
