# Session 58 scratch script, kept as run: the flat base read from a ring SKIP cells in from the footprint's edge (WIDTH wide).
import sys, os, json
sys.path.insert(0, "/work/main")
import numpy as np, torch; torch.set_num_threads(1)
from scipy import ndimage
import backend.export.mesh as M
SKIP = int(os.environ.get("SKIP", "0")); WIDTH = int(os.environ.get("WIDTH", "2"))
def _flat_underside(inside, *, bound=1.0):
    cell = 2.0 * bound / (inside.shape[0] - 1)
    has, surface = M.bottom_surface(inside, bound=bound)
    inner = ndimage.binary_erosion(has, iterations=M.BASE_RIM_CELLS)
    if inner.sum() < 20:
        return None
    p10, p90 = np.percentile(surface[inner], [10, 90])
    if p90 - p10 > M.BASE_SPREAD:
        return None
    outer = ndimage.binary_erosion(has, iterations=SKIP) if SKIP else has
    ring = outer & ~ndimage.binary_erosion(has, iterations=SKIP + WIDTH)
    base = float(np.median(surface[ring]))
    if base - surface[has].min() > M.BASE_LOWEST:
        return None
    rise = min(inside.shape[2] - 1, int(round((base + M.BASE_SECTION_RISE + bound) / cell)))
    if (inside[:, :, rise] > 0).sum() < M.BASE_SECTION * has.sum():
        return None
    return base, inner, surface
M._flat_underside = _flat_underside
from backend.bench.quality import settings_for, score
from backend.engine.api import generate
out = sys.argv[1]; tag = sys.argv[2]
for spec in sys.argv[3:]:
    prompt, seed = spec.rsplit(":", 1); seed = int(seed)
    ck = f"/work/s55/ck_{'_'.join(prompt.split()[1:])}_{seed}.pt"
    s = settings_for(prompt, seed, {}, "builtin", "cpu")
    glb = generate(s, device="cpu", init_checkpoint=ck).glb
    m = score(glb, prompt, seed, views=False)
    r = {"prompt": prompt, "seed": seed, "variant": tag, "iou": round(m["iou"], 4), "vol": round(m["volume_ratio"], 3),
         "chamfer": round(m["chamfer"], 5), "nc": round(m["normal_consistency"], 4)}
    print(json.dumps(r), flush=True); open(out, "a").write(json.dumps(r) + "\n")
os._exit(0)
