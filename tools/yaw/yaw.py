"""Does a run pin a four-fold solid's yaw? One coarse CPU run of PROMPT/SEED with the shipped preset plus
SETTINGS (JSON; "model" a weights folder, "vg" the view-guidance prototype's scale, tools/yaw/vg_patch.py),
scored with the benchmark's own ``score``, plus the mesh's horizontal cross-section at mid height: its
largest radius in each 15-degree sector (folded by 90 degrees) and max/min of those ("anisotropy": a true
cube 1.25, a solid of revolution 1.0). One JSON line per run appended to $YAW_DIR/yaw.jsonl (/tmp/yaw).

    PYTHONPATH=. python tools/yaw/yaw.py "a red cube" 0 g7.5 '{"guidance_scale": 7.5}'
"""
import json, os, sys, time
import numpy as np
from backend.bench.quality import settings_for, score
from backend.engine.api import generate, load_guidance_for
from backend.bench.metrics import load_glb
prompt, seed, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
model = extra.pop("model", "builtin")
gv = extra.pop("vg", 0.0)
patch = extra.pop("patch", None)          # "fixed_camera" | "no_view_word": tools/yaw/cam_patch.py
if patch:
    from tools.yaw import cam_patch
    getattr(cam_patch, patch)()
if gv:
    from tools.yaw import vg_patch
    vg_patch.STATE["gv"] = gv
OUT = os.environ.get("YAW_DIR", "/tmp/yaw")
os.makedirs(OUT, exist_ok=True)

s = settings_for(prompt, seed, {"stages": "coarse", **extra}, model)
t0 = time.time()
r = generate(s, device="cpu", guidance=load_guidance_for(s, "cpu"))
wall = time.time() - t0
v = np.asarray(load_glb(r.glb).vertices)
sl = v[np.abs(v[:, 2] - np.median(v[:, 2])) < 0.04]
ang = np.degrees(np.arctan2(sl[:, 1], sl[:, 0])) % 90      # fold by the 4-fold symmetry
rad = np.hypot(sl[:, 0], sl[:, 1])
prof = [rad[(ang >= a) & (ang < a + 15)].max() for a in range(0, 90, 15)]
sc = score(r.glb, prompt, seed)
open(f"{OUT}/yaw_{name}_{prompt.replace(' ','_')}_{seed}.png", "wb").write(r.turntable_png)
row = {"name": name, "prompt": prompt, "seed": seed, "extra": extra, "vg": gv, "patch": patch, "model": model, "wall_s": round(wall, 1),
       **{k: round(float(sc[k]), 4) for k in ("iou", "iou_canonical", "volume_ratio", "normal_consistency", "albedo_error", "chamfer")},
       "radius_by_yaw": [round(float(x), 3) for x in prof], "anisotropy": round(float(max(prof) / min(prof)), 3)}
print(json.dumps(row)); open(f"{OUT}/yaw.jsonl", "a").write(json.dumps(row) + "\n")
