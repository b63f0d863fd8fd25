"""CPU A/B of fine_join_level on the GPU preset: one coarse run per prompt/seed, then the fine stage from its
checkpoint with each join level; rows to JSONL.
Session 49. Join levels other than 0 need `git apply results/quality/runs/2026-12-04-session49-fine-join-level-not-shipped.patch`
(the setting was not shipped). Usage: python THIS "a red mug" SEED WEIGHTS_DIR OUT.jsonl [LEVELS]; WEIGHTS_DIR stands in
for the built-in colour prior (model "builtin", so the built-in prior's hollow and board rules apply);
DETACH_ALBEDO_DENSITY=1: the albedo-shaded renders' density detached (they colour the object, never shape it);
OVERRIDES='{"guidance_scale": 7.5, "shape_guidance_scale": 3.0}': settings over the GPU preset's."""
import json, os, shutil, sys, time
import numpy as np
from backend.bench.quality import settings_for, score, _hand_over
from backend.engine.api import generate, load_guidance_for

prompt, seed, model, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
levels = [float(x) for x in sys.argv[5].split(",")] if len(sys.argv) > 5 else [0.0, 0.2]
if model != "builtin":        # the built-in prior's rules (hollow, boards) need model "builtin": point it at these weights
    from pathlib import Path
    import backend.engine.guidance.models as gm
    gm.BUILTIN_DIR = Path(model)
tag = os.path.basename(model.rstrip('/'))
if os.environ.get("DETACH_ALBEDO_DENSITY"):     # experiment: albedo-shaded renders colour the object, never shape it
    import torch
    import backend.engine.renderer as R
    _orig = R.VolumeRenderer._render
    def _render(self, rays_o, rays_d, shading, *a, **k):
        if shading != "albedo" or not torch.is_grad_enabled():
            return _orig(self, rays_o, rays_d, shading, *a, **k)
        f = self.field
        fwd = f.forward
        def detached(x, **kw):
            d, alb, n = fwd(x, **kw)
            return d.detach(), alb, n
        f.forward = detached
        try:
            return _orig(self, rays_o, rays_d, shading, *a, **k)
        finally:
            del f.forward
    R.VolumeRenderer._render = _render
    tag += "_detached"
model = "builtin"
extra = json.loads(os.environ.get("OVERRIDES", "{}"))
if extra:
    tag += "_" + "_".join(f"{k}{v}" for k, v in extra.items())
folder = f"/work/s49/ck/{prompt.replace(' ', '_')}_{seed}_{tag}"
os.makedirs(folder, exist_ok=True)
ck = folder + "/coarse.pt"
s = settings_for(prompt, seed, {"stages": "coarse", **extra}, model, "cuda")
g = load_guidance_for(s, "cpu")
if not os.path.isfile(ck):
    t = time.time()
    r = generate(s, device="cpu", guidance=g, checkpoint_path=ck)
    m = score(r.glb, prompt, seed, views=False)
    print(prompt, seed, "coarse", round(m["iou"], 3), round(time.time() - t), "s", flush=True)
for lv in levels:
    fs = settings_for(prompt, seed, {"stages": "coarse,fine", **extra, **({"fine_join_level": lv} if lv else {})}, model, "cuda")
    c2 = folder + f"/fine_{lv}.pt"
    shutil.copy(ck, c2)
    _hand_over(c2, fs)
    t = time.time()
    r = generate(fs, device="cpu", guidance=g, checkpoint_path=c2)
    m = score(r.glb, prompt, seed, views=False)
    open(folder + f"/fine_{lv}.glb", "wb").write(r.glb)
    open(folder + f"/fine_{lv}.turntable.png", "wb").write(r.turntable_png)
    row = {"prompt": prompt, "seed": seed, "model": tag, "join": lv, **{k: m[k] for k in ("mean_color", "iou", "iou_canonical", "volume_ratio", "albedo_error", "normal_consistency", "chamfer")}, "s": time.time() - t}
    print(json.dumps(row), flush=True)
    open(out, "a").write(json.dumps(row) + "\n")
