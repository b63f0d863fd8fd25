# Session 57 scratch script, kept as run: paths are the session's (/work/main, checkpoints in /work/s55).
# coarse export of saved text checkpoints at the density and silhouette levels: Chamfer etc. (what "coarse only" gives)
import sys, os, json
sys.path.insert(0, "/work/main")
import torch; torch.set_num_threads(2)
from backend.bench.quality import settings_for, score
from backend.engine.trainer import prepare_generation
out, seed = sys.argv[1], int(sys.argv[2]); prompts = sys.argv[3:]
for prompt in prompts:
    ck = f"/work/s55/ck_{'_'.join(prompt.split()[1:])}_{seed}.pt"
    for name, over in {"density": {}, "sil": {"mesh_level": "silhouette"}}.items():
        s = settings_for(prompt, seed, {**over, "stages": "coarse"}, "builtin", "cpu")
        run = prepare_generation(s, device="cpu", init_checkpoint=ck)
        glb = run.trainer.export().glb
        m = score(glb, prompt, seed, views=False)
        r = {"prompt": prompt, "seed": seed, "variant": name, "stage": "coarse", "iou": round(m["iou"], 4), "vol": round(m["volume_ratio"], 3),
             "chamfer": round(m["chamfer"], 5), "nc": round(m["normal_consistency"], 4)}
        print(json.dumps(r), flush=True); open(out, "a").write(json.dumps(r) + "\n")
os._exit(0)
