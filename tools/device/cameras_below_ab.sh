#!/usr/bin/env bash
# Session 28's lead for issue 14's swollen solids, to measure on the GPU: cameras from further below
# (`elevation_min` -25 instead of the preset's -10). The coarse NeRF's underside is seen by few cameras and sags:
# on the CPU (seed 0, coarse + fine) 40% of the pyramid's extra volume lay below its base; with cameras down to -25
# degrees the pyramid went 0.753 -> 0.809 IoU (volume 1.31 -> 1.17), the cone 0.797 -> 0.858 (1.13 -> 0.98), the
# barrel and the blue cube held, and the red cube lost its colour (albedo error 0.03 -> 0.50); with the albedo
# renders kept to -10 (`albedo_elevation_min`, the colour prior's own range) the red cube kept it (0.028; IoU 0.870,
# volume 1.09), the cone went further (0.882, volume 1.05), the pyramid and the blue cube held (0.810, 0.824), and two props lost (barrel 0.893 -> 0.869, chair 0.532 -> 0.487)
# (results/quality/runs/2026-12-01-session28-cameras-below-cpu.jsonl). Two variants over every benchmark prompt,
# seed 0 (two commands); the default's rows to compare with are session 26's seed 0 (the same preset and code path:
# results/quality/runs/2026-12-01-session26-handover-fix-2seeds-gpu.jsonl). Before the call: rm -rf results
# backend/view_prior/weights backend/prior/report*; after: git checkout -- results backend/view_prior backend/prior.
# Call: run(command="bash tools/device/cameras_below_ab.sh 560", kind="nvidia-h200", carry=[".devwhl"],
# timeout_s=600), twice; resumable (send it again within 30 s). Back in $OUT: below.tgz.* (cat below.tgz.* | tar xzf -).
source tools/device/common.sh "$1"
# ONLY=below25_albedo10 measures that variant alone (one command)
python3 - "${ONLY:-}" <<'PY'
import json, sys
v = {"below25_albedo10": {"elevation_min": -25, "albedo_elevation_min": -10}, "below25": {"elevation_min": -25}}
json.dump({k: s for k, s in v.items() if sys.argv[1] in ("", k)}, open("/tmp/below.json", "w"))
PY
NV=$(python3 -c "import json; print(len(json.load(open('/tmp/below.json'))))")
build_cuda_once
resumable_bench quality 60 /tmp/below $(( 83 * 2 * NV )) --prompts benchmark --seeds 0 --variants /tmp/below.json \
  --workers ${W:-14} --straggler-s 60 >> /tmp/below.log 2>&1
tar czf - -C /tmp $(cd /tmp && ls -d below below.log 2>/dev/null) | split -b 15M - $OUT/below.tgz.
grep -v "^ *[0-9]*%" /tmp/below.log | grep -v "Loading weights" | tail -n 12
