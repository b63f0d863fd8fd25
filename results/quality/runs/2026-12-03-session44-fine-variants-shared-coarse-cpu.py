"""Session 44, CPU: the fine stage's budget on one shared coarse run. The GPU preset (``recommended_settings('cuda')``:
48x4, 500 steps) runs its coarse stage once per prompt on the CPU and saves a checkpoint; every fine-stage variant
then starts from that checkpoint (``init_checkpoint``: the same hand-over as a whole run), so the variants differ
only in the fine stage. One row per (prompt, variant) in the jsonl given, the coarse mesh's own row as "coarse".

Run from the repository root:
  .venv/bin/python results/quality/runs/2026-12-03-session44-fine-variants-shared-coarse-cpu.py OUT.jsonl PROMPT [SEED]
"""
import json, os, sys, time

import torch

from backend.bench.quality import score
from backend.engine.api import generate
from backend.prior import recommended_settings
from shared.settings import GenerationSettings

VARIANTS = {
    "fine5_32": {},                                                   # the preset
    "fine20_32": {"fine_steps": 20},
    "fine20_64": {"fine_steps": 20, "fine_resolution": 64},
    "fine40_64_lr1e-3": {"fine_steps": 40, "fine_resolution": 64, "fine_lr": 0.001},
    "fine1_32": {"fine_steps": 1},
    "fine2_32": {"fine_steps": 2},
}
# VARIANTS=a,b: only those; a coarse checkpoint already saved is reused (its row not written again)
if os.environ.get("VARIANTS"):
    VARIANTS = {k: VARIANTS[k] for k in os.environ["VARIANTS"].split(",")}

torch.set_num_threads(1)
out, prompt = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
# PRESET=cpu: the CPU preset (48x1) instead of the GPU's (48x4)
preset = os.environ.get("PRESET", "cuda")
base = {**recommended_settings(preset), "prompt": prompt, "seed": seed}
ckpt = f"/tmp/s44ck/{preset}_{prompt.replace(' ', '_')}_{seed}.pt"
os.makedirs(os.path.dirname(ckpt), exist_ok=True)


def row(variant, result, seconds):
    m = score(result.glb, prompt, seed, views=False)
    r = {"prompt": prompt, "seed": seed, "preset": preset, "variant": variant, "iou": round(m["iou"], 4),
         "volume": round(m["volume_ratio"], 3), "chamfer": round(m["chamfer"], 5),
         "nc": round(m["normal_consistency"], 4), "albedo": round(m["albedo_error"], 4), "s": round(seconds, 1)}
    print(json.dumps(r), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(r) + "\n")


if not os.path.exists(ckpt):
    t0 = time.time()
    coarse = GenerationSettings.from_dict({**base, "stages": "coarse", "checkpoint_interval": base["steps"]})
    res = generate(coarse, device="cpu", checkpoint_path=ckpt)
    row("coarse", res, time.time() - t0)
for name, over in VARIANTS.items():
    t0 = time.time()
    s = GenerationSettings.from_dict({**base, **over})
    res = generate(s, device="cpu", init_checkpoint=ckpt)
    row(name, res, time.time() - t0)
