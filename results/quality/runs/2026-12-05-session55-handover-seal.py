# Session 55 scratch script, kept as run: paths are the session's (/work/main, checkpoints in /work/s55). It patched the seal into the hand-over before fine.py did it.
"""The fine stage's hand-over with the export's seal applied to the coarse grid first (monkeypatched)."""
import sys, os, json, time
sys.path.insert(0, "/work/main")
import torch
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
import backend.export.mesh as EM
from backend.bench.quality import settings_for, score
from backend.engine.api import generate
import backend.engine.silhouette_level as SL
_orig = SL.coarse_level
def sealed_level(trainer, grid, *, bound=1.0):
    level = _orig(trainer, grid, bound=bound)
    if os.environ.get("SEAL") and trainer.s.seal_radius > 0 and grid.shape[0] == 128 and not getattr(trainer, "_exporting", False):
        grid[...] = EM.seal_pores(grid, level, trainer.s.seal_radius, bound=bound)
    return level
SL.coarse_level = sealed_level
out = sys.argv[1]; variants = json.loads(sys.argv[2]); prompts = sys.argv[3:]
for prompt in prompts:
    ck = f"/work/s55/ck_{'_'.join(prompt.split()[1:])}_0.pt"
    for name, over in variants.items():
        s = settings_for(prompt, 0, over, "builtin", "cpu")
        t = time.time()
        glb = generate(s, device="cpu", init_checkpoint=ck).glb
        m = score(glb, prompt, 0, views=False)
        r = {"prompt": prompt, "variant": name, "seal_handover": bool(os.environ.get("SEAL")), "iou": round(m["iou"], 4),
             "vol": round(m["volume_ratio"], 3), "chamfer": round(m["chamfer"], 5), "nc": round(m["normal_consistency"], 4), "s": round(time.time() - t, 1)}
        print(json.dumps(r), flush=True); open(out, "a").write(json.dumps(r) + "\n")
os._exit(0)
