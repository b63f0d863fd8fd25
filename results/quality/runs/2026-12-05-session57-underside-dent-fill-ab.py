# Session 57 scratch script, kept as run: paths are the session's (/work/main, /work/s57, checkpoints in /work/s55 and /work/s57).
# fine from saved coarse checkpoints with the underside's dents filled after every seal (coarse export, hand-over, fine export)
import sys, os, json, time
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/s57")
import torch; torch.set_num_threads(2)
import backend.export.mesh as M
from dents import fill_underside_dents
from backend.bench.quality import settings_for, score
from backend.engine.api import generate
orig = M.seal_pores
DEPTH = {"v": 0.0}
def patched(grid, level, radius, *, bound=1.0):
    g = orig(grid, level, radius, bound=bound)
    return fill_underside_dents(g, level, DEPTH["v"], bound=bound) if DEPTH["v"] > 0 else g
M.seal_pores = patched
import backend.engine.fine as F  # imports seal_pores inside functions from backend.export.mesh: patched there
out, seed = sys.argv[1], int(sys.argv[2]); variants = json.loads(sys.argv[3]); prompts = sys.argv[4:]
for prompt in prompts:
    ck = [c for c in (f"/work/s55/ck_{'_'.join(prompt.split()[1:])}_{seed}.pt", f"/work/s57/ck_{'_'.join(prompt.split()[1:])}_{seed}.pt") if os.path.exists(c)]
    base = settings_for(prompt, seed, {}, "builtin", "cpu")
    if not ck:
        ck = [f"/work/s57/ck_{'_'.join(prompt.split()[1:])}_{seed}.pt"]
        generate(base.replace(stages="coarse", checkpoint_interval=base.steps), device="cpu", checkpoint_path=ck[0])
    for name, over in variants.items():
        over = dict(over); DEPTH["v"] = over.pop("_dent", 0.0)
        s = settings_for(prompt, seed, over, "builtin", "cpu")
        t = time.time()
        glb = generate(s, device="cpu", init_checkpoint=ck[0]).glb
        if os.environ.get("SAVE"): open(f"/work/s57/{name}_{prompt.split()[-1]}_{prompt.split()[1]}_{seed}.glb", "wb").write(glb)
        m = score(glb, prompt, seed, views=False)
        r = {"prompt": prompt, "seed": seed, "variant": name, "iou": round(m["iou"], 4), "vol": round(m["volume_ratio"], 3),
             "chamfer": round(m["chamfer"], 5), "nc": round(m["normal_consistency"], 4), "albedo": round(m["albedo_error"], 4), "s": round(time.time() - t, 1)}
        print(json.dumps(r), flush=True); open(out, "a").write(json.dumps(r) + "\n")
os._exit(0)
