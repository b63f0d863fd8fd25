# Session 59 scratch script, kept as run (paths are the session's: /work/main, checkpoints in /work/s55): the coarse mesh of each saved coarse stage (the "before" of the coarse -> fine Chamfer reduction), scored.
import sys, os, json, time, shutil, tempfile
sys.path.insert(0, "/work/main")
import torch
torch.set_num_threads(2)
from backend.bench.quality import settings_for, score
from backend.engine.api import generate
out, seed = sys.argv[1], int(sys.argv[2]); variants = json.loads(sys.argv[3]); prompts = sys.argv[4:]
for prompt in prompts:
    ck = f"/work/s55/ck_{'_'.join(prompt.split()[1:])}_{seed}.pt"
    for name, over in variants.items():
        base = settings_for(prompt, seed, over, "builtin", "cpu")
        tmp = tempfile.mktemp(suffix=".pt"); shutil.copy(ck, tmp)
        t = time.time()
        glb = generate(base.replace(stages="coarse", checkpoint_interval=base.steps), device="cpu", checkpoint_path=tmp).glb
        os.unlink(tmp)
        m = score(glb, prompt, seed, views=False)
        r = {"prompt": prompt, "seed": seed, "variant": name, "stages": "coarse", "iou": round(m["iou"], 4), "vol": round(m["volume_ratio"], 3),
             "chamfer": round(m["chamfer"], 5), "nc": round(m["normal_consistency"], 4), "albedo": round(m["albedo_error"], 4), "s": round(time.time() - t, 1)}
        print(json.dumps(r), flush=True); open(out, "a").write(json.dumps(r) + "\n")
os._exit(0)
