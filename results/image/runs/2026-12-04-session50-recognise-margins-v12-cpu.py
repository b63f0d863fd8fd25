"""Session 50: recognise's margins with a given text prior folder (v12, the shipped; v6, the one before, from
`git archive 0a7bd54 backend/prior/weights`), every category in its first look from a new side, on the CPU:
  .venv/bin/python results/image/runs/2026-12-04-session50-recognise-margins-v12-cpu.py MODEL FILL OUT.jsonl
(the fill-0.8 run of v12 stopped after 20 of 34: 4 right)."""
import sys, json, os, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))      # the repository
from backend.bench.image import DrawnObject, reference_camera, reference_png, settings_for, object_index
from backend.engine.reference_image import prepare_reference
from backend.engine.reference import read_prompt
from backend.engine.guidance.models import load_guidance
from backend.prior.catalogue import CATEGORIES
torch.set_num_threads(1)
MODEL, FILL, OUT = sys.argv[1], float(sys.argv[2]), sys.argv[3]
tg = load_guidance(MODEL, "cpu", guidance_type="stable-diffusion")
done = {(json.loads(l)["category"], json.loads(l)["look"]) for l in open(OUT)} if os.path.exists(OUT) else set()
out = open(OUT, "a")
for cat in CATEGORIES:
    for look in cat.looks[:1]:
        seed = 0
        if (cat.name, look) in done: continue
        obj = DrawnObject(cat.name, look, seed)
        el, az = reference_camera(seed + 10, object_index(cat.name) + len(look or ""))
        png = reference_png(obj, el, az)
        s = settings_for(obj, seed, el, az, {"reference_fill": FILL}, "", "builtin", "cpu")
        r = read_prompt(prepare_reference(png, fill=s.reference_fill), s, tg)
        row = {"model": MODEL, "fill": FILL, "category": cat.name, "look": look, "elevation": el, "azimuth": az,
               "read": r.prompt, "margin": r.margin, "scores": r.scores[:3]}
        out.write(json.dumps(row) + "\n"); out.flush()
        print(cat.name, look, repr(r.prompt), round(r.margin, 2), flush=True)
