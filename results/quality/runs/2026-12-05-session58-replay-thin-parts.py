# Session 58 scratch script, kept as run: session 55's replay script with keep_thin_parts' band set by THIN / THICK (scene units).
# Session 55 scratch script, kept as run: paths are the session's (/work/main, checkpoints in /work/s55).
import sys, os, json, time
sys.path.insert(0, "/work/main")
import torch
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
from backend.bench.quality import settings_for, score
from backend.engine.api import generate
import backend.engine.silhouette_level as SL
import functools
_ktp = SL.keep_thin_parts
SL.keep_thin_parts = functools.partial(_ktp, thin=float(os.environ.get("THIN", 0.03)), thick=float(os.environ.get("THICK", 0.06)))
out, seed = sys.argv[1], int(sys.argv[2]); variants = json.loads(sys.argv[3]); prompts = sys.argv[4:]
for prompt in prompts:
    ck = f"/work/s55/ck_{'_'.join(prompt.split()[1:])}_{seed}.pt"
    base = settings_for(prompt, seed, {}, "builtin", "cpu")
    if not os.path.exists(ck):
        generate(base.replace(stages="coarse", checkpoint_interval=base.steps), device="cpu", checkpoint_path=ck)
    for name, over in variants.items():
        s = settings_for(prompt, seed, over, "builtin", "cpu")
        t = time.time()
        glb = generate(s, device="cpu", init_checkpoint=ck).glb
        m = score(glb, prompt, seed, views=False)
        r = {"prompt": prompt, "seed": seed, "variant": name, "iou": round(m["iou"], 4), "vol": round(m["volume_ratio"], 3),
             "chamfer": round(m["chamfer"], 5), "nc": round(m["normal_consistency"], 4), "albedo": round(m["albedo_error"], 4), "s": round(time.time() - t, 1)}
        print(json.dumps(r), flush=True); open(out, "a").write(json.dumps(r) + "\n")
os._exit(0)
