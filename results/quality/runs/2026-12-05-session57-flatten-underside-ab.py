# Session 57 scratch script, kept as run: paths are the session's (/work/main, /work/s57, checkpoints in /work/s55 and /work/s57).
import sys, os, json, time
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/s57")
import torch; torch.set_num_threads(2)
import backend.export.mesh as M
from flatten import flatten_underside
from backend.bench.quality import settings_for, score
from backend.engine.api import generate
ON = {"v": False}; INFO = {}
orig = M.flat_base
def patched(grid, *, bound=1.0):
    INFO.clear()
    return flatten_underside(grid, bound=bound, info=INFO)
M.flat_base = patched
out, seed = sys.argv[1], int(sys.argv[2]); prompts = sys.argv[3:]
for prompt in prompts:
    key = '_'.join(prompt.split()[1:])
    ck = [c for c in (f"/work/s55/ck_{key}_{seed}.pt", f"/work/s57/ck_{key}_{seed}.pt") if os.path.exists(c)]
    if not ck:
        base = settings_for(prompt, seed, {}, "builtin", "cpu")
        ck = [f"/work/s57/ck_{key}_{seed}.pt"]
        generate(base.replace(stages="coarse", checkpoint_interval=base.steps), device="cpu", checkpoint_path=ck[0])
    for name, over in {"base": {}, "flat": {"fine_flat_base": True}}.items():
        INFO.clear()
        s = settings_for(prompt, seed, over, "builtin", "cpu")
        glb = generate(s, device="cpu", init_checkpoint=ck[0]).glb
        m = score(glb, prompt, seed, views=False)
        r = {"prompt": prompt, "seed": seed, "variant": name, "iou": round(m["iou"], 4), "vol": round(m["volume_ratio"], 3),
             "chamfer": round(m["chamfer"], 5), "nc": round(m["normal_consistency"], 4), "albedo": round(m["albedo_error"], 4),
             **({k: round(float(v), 3) for k, v in INFO.items()} if name == "flat" else {})}
        print(json.dumps(r), flush=True); open(out, "a").write(json.dumps(r) + "\n")
os._exit(0)
