"""Session 61 (CPU): the flat base's height read two ways on the same fine fields.

Each prompt's coarse and fine stages run once with the built-in prior's preset (as `bench quality` runs them: the
coarse run's checkpoint handed over) and are saved in FOLDER; the fine checkpoint is then exported again under
``fine_base_read`` "rim" and "bottoms" (an export-only setting: the checkpoint resumes at its last step, so only the
export runs) and both meshes are scored against the truth. Rows are appended to FOLDER/rows.jsonl.

    python results/quality/runs/2026-12-05-session61-base-read.py FOLDER SEED "a red cube" "a white cube" ...
"""
import json
import os
import shutil
import sys
import tempfile

import torch

from backend.bench.quality import _hand_over, _slug, score, settings_for
from backend.engine.api import generate, load_guidance_for

METRICS = ("iou", "chamfer", "normal_consistency", "volume_ratio")


def run(folder: str, seed: int, prompt: str) -> None:
    d = os.path.join(folder, f"{_slug(prompt)}_s{seed}")
    os.makedirs(d, exist_ok=True)
    fine_pt = os.path.join(d, "fine.pt")
    if not os.path.isfile(fine_pt):
        coarse = settings_for(prompt, seed, {"stages": "coarse"})
        fine = settings_for(prompt, seed, {"stages": "coarse,fine"})
        guidance = load_guidance_for(coarse, "cpu")
        ck = os.path.join(d, "run.pt")
        generate(coarse, device="cpu", guidance=guidance, checkpoint_path=ck)
        _hand_over(ck, fine)
        generate(fine, device="cpu", guidance=guidance, checkpoint_path=ck)
        shutil.move(ck, fine_pt)
    for read in ("rim", "bottoms"):
        settings = settings_for(prompt, seed, {"stages": "coarse,fine", "fine_base_read": read})
        with tempfile.TemporaryDirectory() as tmp:
            ck = os.path.join(tmp, "run.pt")
            shutil.copy(fine_pt, ck)
            result = generate(settings, device="cpu", guidance=load_guidance_for(settings, "cpu"), checkpoint_path=ck)
        m = score(result.glb, prompt, seed, views=False)
        row = {"prompt": prompt, "seed": seed, "fine_base_read": read, **{k: m[k] for k in METRICS}}
        print(json.dumps(row), flush=True)
        with open(os.path.join(folder, "rows.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(2)
    folder, seed = sys.argv[1], int(sys.argv[2])
    for p in sys.argv[3:]:
        run(folder, seed, p)
