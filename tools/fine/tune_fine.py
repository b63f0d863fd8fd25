"""Tune the fine stage on the CPU: each prompt's coarse stage runs once (its final checkpoint and
score cached under $FINE_TUNE_DIR, default /tmp/ft), then each variant continues that checkpoint into
the fine stage, exactly as ``bench quality --stages coarse,fine`` does after its coarse row, and is
scored with the benchmark's own ``score``; one JSON line per (variant, prompt) in results.jsonl.
Why not the benchmark itself: it reruns the coarse stage for every variant (3-5 minutes a prompt on
this shared CPU), and code constants cannot be varied through --set.

    python tools/fine/tune_fine.py coarse "a red cube" "a wooden barrel"
    python tools/fine/tune_fine.py fine NAME '{"fine_lr": 0.001}' '{"backend.engine.fine.TRAIN_ALBEDO": false}' "a red cube"
"""
import importlib, json, os, shutil, sys, tempfile, time
import torch
torch.set_num_threads(1)
from backend.bench import quality as q
from backend.engine.api import load_guidance_for

ROOT = os.environ.get("FINE_TUNE_DIR", "/tmp/ft")
CACHE = os.path.join(ROOT, "cache")

def slug(p): return q._slug(p)

def strip(row):
    return {k: v for k, v in row.items() if k not in ("turntable", "views", "final_losses")}

def coarse(prompt, seed=0):
    ck = f"{CACHE}/{slug(prompt)}.pt"; js = f"{CACHE}/{slug(prompt)}.json"
    if os.path.isfile(js):
        return json.load(open(js))
    s = q.settings_for(prompt, seed, {"stages": "coarse"}, "builtin")
    g = load_guidance_for(s, "cpu")
    row = q._generate_and_score(s, {"prompt": prompt, "seed": seed}, "cpu", g, ck)
    row = strip(row); json.dump(row, open(js, "w"))
    return row

def fine(prompt, name, overrides, patch, seed=0):
    for dotted, v in patch.items():
        mod, attr = dotted.rsplit(".", 1)
        setattr(importlib.import_module(mod), attr, v)
    c = coarse(prompt, seed)
    s = q.settings_for(prompt, seed, {**overrides, "stages": "coarse,fine"}, "builtin")
    g = load_guidance_for(s, "cpu")
    with tempfile.TemporaryDirectory() as d:
        ck = os.path.join(d, "run.pt")
        shutil.copy(f"{CACHE}/{slug(prompt)}.pt", ck)
        state = torch.load(ck, map_location="cpu", weights_only=False)
        state["settings"].update({k: getattr(s, k) for k in s.to_dict() if k.startswith("fine_") or k == "stages"})
        torch.save(state, ck)
        row = q._generate_and_score(s, {"prompt": prompt, "seed": seed}, "cpu", g, ck)
    tt = row.get("turntable")
    if tt:
        open(f"{ROOT}/{name}_{slug(prompt)}.png", "wb").write(tt)
    row = strip(row)
    keys = ("normal_consistency", "iou", "chamfer", "albedo_error", "volume_ratio", "stage_s")
    line = {"variant": name, "prompt": prompt, "overrides": overrides, "patch": patch,
            "coarse": {k: c.get(k) for k in keys}, "fine": {k: row.get(k) for k in keys},
            "final_losses": None}
    print(json.dumps(line), flush=True)
    with open(f"{ROOT}/results.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    return row

if __name__ == "__main__":
    os.makedirs(CACHE, exist_ok=True)
    mode = sys.argv[1]
    if mode == "coarse":
        for p in sys.argv[2:]:
            t = time.time(); r = coarse(p); print(p, {k: r.get(k) for k in ("normal_consistency","iou","chamfer","volume_ratio","albedo_error","stage_s")}, time.time()-t, flush=True)
    else:
        name = sys.argv[2]; overrides = json.loads(sys.argv[3]); patch = json.loads(sys.argv[4])
        for p in sys.argv[5:]:
            fine(p, name, overrides, patch)
