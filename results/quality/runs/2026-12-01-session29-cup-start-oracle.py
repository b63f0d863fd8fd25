"""Oracle for the hollow props: start the coarse NeRF on the TRUE open shape (fitted to the ground truth's
SDF and albedo), then run the preset's SDS; does it keep the cavity or fill it?  mode: truth | plain | cavity | hull
(hull: the visual hull of the colour prior's own samples, 2026-12-01-session29-prior-hull-start.py); SET='{json}'
overrides settings. Run from the repository root: mkdir -p /tmp/oracle; .venv/bin/python results/quality/runs/<this
file> "a red mug" truth"""
import json, sys, time
import numpy as np, torch
from shared.settings import GenerationSettings
from backend.prior import recommended_settings
from backend.engine.trainer import prepare_generation, finish_generation
from backend.prior.catalogue import ground_truth
from backend.bench.quality import score

prompt, mode = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
import os
extra = json.loads(os.environ.get("SET", "{}"))
s = GenerationSettings.from_dict({**recommended_settings(), "prompt": prompt, "seed": 0, "stages": "coarse", **extra})
run = prepare_generation(s, device="cpu")
tr = run.trainer
truth = ground_truth(prompt)
def cup_sdf(x, r=0.32, h=0.35, wall=0.05, bottom=0.06):
    """An open cylinder cup, z up: the outer cylinder minus the inner one from the bottom up (open top)."""
    rxy = x[:, :2].norm(dim=-1)
    outer = torch.maximum(rxy - r, x[:, 2].abs() - h)
    inner = torch.maximum(rxy - (r - wall), -(x[:, 2] - (-h + bottom)))
    return torch.maximum(outer, -inner)


class Cup:
    sdf = staticmethod(cup_sdf)
    albedo = None


if mode in ("truth", "cavity", "hull"):
    if mode == "cavity":
        truth = Cup()
    if mode == "hull":
        sys.path.insert(0, __import__("os").path.dirname(__file__))
        from importlib import import_module; globals().update({k: getattr(import_module("2026-12-01-session29-prior-hull-start"), k) for k in ("Hull", "sample_views", "visual_hull")})
        t1 = time.time()
        imgs, cams, n = sample_views(tr.guidance.colour, prompt)
        occ = visual_hull(imgs, cams, n)
        from PIL import Image
        Image.fromarray((np.concatenate(list(imgs), 1) * 255).astype(np.uint8)).save(f"/tmp/oracle/{prompt.replace(' ', '_')}_samples.png")
        print(f"hull: {time.time() - t1:.1f} s, occupied {occ.mean() * 8:.3f} (truth volume below)", flush=True)
        truth = Hull(occ)
    field = tr.field
    opt = torch.optim.Adam(field.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-15)
    g = torch.Generator().manual_seed(0)
    target_inside = float(np.log1p(20.0))
    for it in range(300):
        x = torch.rand(4096, 3, generator=g) * 2 - 1
        x[:2048] *= 0.5
        with torch.no_grad():
            d = truth.sdf(x)
            inside = (d < 0).float()
            col = truth.albedo(x) if truth.albedo else None
        loss = ((torch.log1p(field.density(x)) - inside * target_inside) ** 2).mean()
        near = (d.abs() < 0.05)
        if near.any() and col is not None:
            loss = loss + ((field.albedo(x[near]) - col[near]) ** 2).mean()
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    tr.estimator.train()
    for step in range(0, 256, 16):
        tr.renderer.update_occupancy(step)
    with torch.no_grad():
        x = torch.rand(20000, 3) * 2 - 1
        acc = ((field.density(x) > 3).float() == (truth.sdf(x) < 0).float()).float().mean()
    print(f"fit: occupancy agreement {acc:.3f}", flush=True)
t0 = time.time()
losses = tr.fit(None, None, None)
res = finish_generation(run, losses)
glb = res.glb if hasattr(res, "glb") else open(res.glb_path, "rb").read()
m = score(glb, prompt, 0, views=False)
open(f"/tmp/oracle/{prompt.replace(' ', '_')}_{mode}.glb", "wb").write(glb)
out = {"prompt": prompt, "mode": mode, "set": extra, "iou": m["iou"], "volume_ratio": m.get("volume_ratio"),
       "albedo_error": m.get("albedo_error"), "s": time.time() - t0}
print(json.dumps(out), flush=True)
open("/tmp/oracle/results.jsonl", "a").write(json.dumps(out) + "\n")
