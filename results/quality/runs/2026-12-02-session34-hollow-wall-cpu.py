"""Session 34, CPU: the hollow props through the whole product (the preset, coarse + fine, ``hollow`` auto) with
``hollow.WALL`` set to the first argument; one row per run in /tmp/wall_try.jsonl (kept as
2026-12-02-session34-hollow-wall-cpu.jsonl). The walls of 0.05 were measured by the bench
(2026-12-02-session34-hollow-wall005-bench-cpu.jsonl, variant hollow_auto, before WALL became 0.07).

Run from the repository root:  .venv/bin/python results/quality/runs/<this file> "a red mug" 0.07
"""
import sys, json, time, torch
from backend.engine import hollow
hollow.WALL = float(sys.argv[2])
from backend.engine.api import generate
from backend.prior import recommended_settings
from backend.bench.quality import score
from shared.settings import GenerationSettings
torch.set_num_threads(1)
p = sys.argv[1]
t0 = time.time()
s = GenerationSettings.from_dict({**recommended_settings(), "prompt": p, "seed": 0, **json.loads(sys.argv[3] if len(sys.argv) > 3 else "{}")})
r = generate(s, device="cpu")
m = score(r.glb, p, 0, views=False)
out = {"prompt": p, "wall": hollow.WALL, "extra": sys.argv[3] if len(sys.argv) > 3 else "", "iou": round(m["iou"], 4), "volume": round(m["volume_ratio"], 3), "albedo": round(m["albedo_error"], 4), "s": round(time.time() - t0)}
print(json.dumps(out)); open("/tmp/wall_try.jsonl", "a").write(json.dumps(out) + "\n")
