# Session 55 scratch script, kept as run: paths are the session's (/work/main, checkpoints in /work/s55).
"""The product path (settings only, no patches): each saved coarse checkpoint exported and carried through the
fine stage under each variant."""
import sys, os, json, time
sys.path.insert(0, "/work/main")
import torch
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
from backend.bench.quality import settings_for, score
from backend.engine.api import generate
from backend.engine.trainer import prepare_generation
out = sys.argv[1]; variants = json.loads(sys.argv[2]); prompts = sys.argv[3:]
for prompt in prompts:
    tag = "_".join(prompt.split()[1:]) + "_0"
    ck = f"/work/s55/ck_{tag}.pt"
    for name, over in variants.items():
        base = settings_for(prompt, 0, over, "builtin", "cpu")
        for stages in ("coarse", "coarse,fine"):
            t = time.time()
            if stages == "coarse":
                tr = prepare_generation(base.replace(stages="coarse", checkpoint_interval=base.steps, fine_render_offset=1.5), device="cpu",
                                        checkpoint_path=ck).trainer
                glb = tr.export().glb
            else:
                glb = generate(base, device="cpu", init_checkpoint=ck).glb
            m = score(glb, prompt, 0, views=False)
            r = {"prompt": prompt, "seed": 0, "variant": name, "stages": stages, "iou": round(m["iou"], 4),
                 "vol": round(m["volume_ratio"], 3), "chamfer": round(m["chamfer"], 5),
                 "nc": round(m["normal_consistency"], 4), "albedo": round(m["albedo_error"], 4), "s": round(time.time() - t, 1)}
            print(json.dumps(r), flush=True)
            open(out, "a").write(json.dumps(r) + "\n")
os._exit(0)
