"""Session 35: how sure the built-in text prior's reading of a picture is (``recognise``'s margin), for every category
in two looks, one picture each from a new side (elevation 0-30, random azimuth), on the CPU.
  .venv/bin/python results/image/runs/2026-12-02-session35-recognise-margins-cpu.py 0.8 OUT.jsonl"""
import sys, json, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))      # the repository
from backend.bench.image import DrawnObject, reference_camera, reference_png, settings_for, object_index
from backend.engine.reference_image import prepare_reference
from backend.engine.reference import read_prompt
from backend.engine.guidance.models import load_text_guidance_for
from backend.prior.catalogue import CATEGORIES
torch.set_num_threads(2)
tg = None
# argv: the picture's framing (reference_fill: 0 = as the prior's camera framed it, 0.8 = the engine's default for
# a user's picture) and the output file; rows already in it are kept (resumable)
FILL, OUT = float(sys.argv[1]), sys.argv[2]
import os
done = {(json.loads(l)["category"], json.loads(l)["look"]) for l in open(OUT)} if os.path.exists(OUT) else set()
out = open(OUT, "a")
for cat in CATEGORIES:
    for look in cat.looks[:2]:
        for seed in (0,):
            if (cat.name, look) in done: continue
            obj = DrawnObject(cat.name, look, seed)
            el, az = reference_camera(seed + 10, object_index(cat.name) + len(look or ""))
            png = reference_png(obj, el, az)
            s = settings_for(obj, seed, el, az, {"reference_fill": FILL}, "", "builtin", "cpu")
            if tg is None:
                tg = load_text_guidance_for(s, "cpu")
            r = read_prompt(prepare_reference(png, fill=s.reference_fill), s, getattr(tg, "colour", tg))
            row = {"fill": FILL, "category": cat.name, "look": look, "seed": seed, "elevation": el, "azimuth": az, "read": r.prompt,
                   "margin": r.margin, "scores": r.scores[:3]}
            out.write(json.dumps(row) + "\n"); out.flush()
            print(cat.name, look, round(el), round(az), repr(r.prompt), round(r.margin, 2), flush=True)
