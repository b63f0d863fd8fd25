"""Where SDS leaves the canonical mug: the GPU preset's coarse stage on the CPU, the mug's body measured every 50
steps (density grid 96^3 at the auto threshold, largest piece): height, and the radius of its mid-height slices."""
import sys, json, numpy as np, torch
from pathlib import Path
from scipy import ndimage
import backend.engine.guidance.models as gm
from backend.bench.quality import settings_for
from backend.engine.api import load_guidance_for
from backend.engine.trainer import Trainer, start_coarse_field
from backend.export.mesh import density_grid, auto_threshold
seed, model = int(sys.argv[1]), sys.argv[2]
gm.BUILTIN_DIR = Path(model)
import os
s = settings_for("a red mug", seed, {"stages": "coarse", **json.loads(os.environ.get("OVERRIDES", "{}"))}, "builtin", "cuda")
t = Trainer(s, load_guidance_for(s, "cpu"), torch.device("cpu"))
start_coarse_field(t, None)
R = 96; cell = 2 / (R - 1)
def measure(step):
    t.field.eval()
    g = density_grid(t.occupied_density, resolution=R, bound=1.0, device=torch.device("cpu"))
    t.field.train()
    lv = auto_threshold(g); lab, n = ndimage.label(g > lv)
    if n == 0:
        print(step, "empty", flush=True); return
    body = lab == 1 + np.argmax(np.bincount(lab.ravel())[1:])
    zs = np.nonzero(body.any(axis=(0, 1)))[0]
    h = (zs.max() - zs.min() + 1) * cell / 2
    mid = zs.min() + (zs.max() - zs.min()) // 2
    slices = [ndimage.binary_fill_holes(body[:, :, k]).sum() for k in range(mid - 3, mid + 4)]
    r = float(np.sqrt(np.median(slices) / np.pi)) * cell
    print(json.dumps({"step": step, "half_height": round(float(h), 3), "radius": round(r, 3), "level": round(float(lv), 1)}), flush=True)
def cb(ev):
    if ev.step % 50 == 0 and ev.step > 0:
        measure(ev.step)
t.fit(cb, None, None)
measure("end")
