# Session 57 scratch script, kept as run: paths are the session's (/work/main, checkpoints in /work/s57).
# Session 57 scratch: image jobs, coarse stage once per object (saved), then each variant's hand-over + fine stage from it.
import sys, os, json, time
sys.path.insert(0, "/work/main")
import torch
torch.set_num_threads(2)
from backend.bench import image as bi
from backend.bench.metrics import evaluate_mesh, load_glb
from backend.engine.api import generate
import backend.engine.silhouette_level as sl
out, seed = sys.argv[1], int(sys.argv[2]); variants = json.loads(sys.argv[3]); objects = sys.argv[4:]
GPU = json.loads(os.environ.get("BASE", '{"resolution_schedule": "48x4", "steps": 600, "shape_model": "builtin-shape", "shape_guidance_scale": 10}'))
tag = os.environ.get("TAG", "gpuset")
for name in objects:
    obj = bi.DrawnObject(name, None, seed)
    el, az = bi.reference_camera(seed, bi.object_index(name))
    png = bi.reference_png(obj, el, az)
    ck = f"/work/s57/ck_img_{tag}_{name}_{seed}.pt"
    if not os.path.exists(ck):
        s = bi.settings_for(obj, seed, el, az, {**GPU, "stages": "coarse"}, "", "builtin", "cpu")
        t = time.time()
        generate(s.replace(checkpoint_interval=s.steps), device="cpu", reference_image=png, checkpoint_path=ck)
        print("coarse", name, round(time.time() - t), flush=True)
    for vname, over in variants.items():
        over = dict(over); thin = over.pop("_thin", True); sl.REFERENCE_KEEPS_THIN = thin
        s = bi.settings_for(obj, seed, el, az, {**GPU, **over}, "", "builtin", "cpu")
        t = time.time()
        res = generate(s, device="cpu", reference_image=png, init_checkpoint=ck)
        m = evaluate_mesh(load_glb(res.glb), obj.sdf, obj.albedo, period=obj.yaw_period, res=128, seed=seed)
        r = {"object": name, "seed": seed, "variant": vname, "iou": round(m["iou"], 4), "iou_ref": round(m["iou_canonical"], 4),
             "vol": round(m["volume_ratio"], 3), "chamfer": round(m["chamfer"], 5), "albedo": round(m["albedo_error"], 4),
             "s": round(time.time() - t, 1)}
        print(json.dumps(r), flush=True); open(out, "a").write(json.dumps(r) + "\n")
os._exit(0)
