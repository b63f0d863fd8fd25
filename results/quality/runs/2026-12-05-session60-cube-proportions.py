# Session 60 scratch scripts, kept as run (paths are the session's: /work/main, session 55's saved coarse stages in /work/s55).
# 1. meshes: python3 THIS meshes PROMPT SEED '{overrides}' TAG -> TAG_coarse.glb, TAG_fine.glb (the preset's coarse export and
#    its fine stage from the saved coarse stage, as session 58's replays)
# 2. profile: python3 THIS profile PROMPT GLB... -> half-widths at heights through the centre, mesh against truth
# (results/quality/README.md, session 60: the cube 0.44 / 0.42 half-wide against 0.40, its base cut at -0.374)
import sys
if sys.argv[1] == "meshes":
    sys.argv = sys.argv[1:]
    import sys, os, json, shutil, tempfile
    sys.path.insert(0, "/work/main")
    import torch
    torch.set_num_threads(2)
    from backend.bench.quality import settings_for
    from backend.engine.api import generate
    prompt, seed, over, tag = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
    ck = f"/work/s55/ck_{'_'.join(prompt.split()[1:])}_{seed}.pt"
    base = settings_for(prompt, seed, over, "builtin", "cpu")
    tmp = tempfile.mktemp(suffix=".pt"); shutil.copy(ck, tmp)
    open(f"/work/s60/{tag}_coarse.glb", "wb").write(generate(base.replace(stages="coarse", checkpoint_interval=base.steps), device="cpu", checkpoint_path=tmp).glb)
    os.unlink(tmp)
    res = generate(base, device="cpu", init_checkpoint=ck)
    open(f"/work/s60/{tag}_fine.glb", "wb").write(res.glb); open(f"/work/s60/{tag}_fine.png", "wb").write(res.turntable_png)
    os._exit(0)
else:
    sys.argv = sys.argv[1:]
    # max |y| near x=0, by z band; and the z range of the centre column
    import sys, numpy as np
    sys.path.insert(0, '/work/main')
    from backend.bench import metrics as M
    from backend.prior.catalogue import ground_truth
    prompt = sys.argv[1]
    gt = ground_truth(prompt)
    tv, tf = M.sdf_surface_mesh(gt.sdf)
    def prof(v, f, yaw=0.0):
        v = M.rotate_z_np(v, -yaw)
        p = M.sample_surface(v, f, 300000, np.random.default_rng(0))[0]
        col = (np.abs(p[:, 0]) < 0.03) & (np.abs(p[:, 1]) < 0.03)
        out = [f"z {p[col, 2].min():+.3f}..{p[col, 2].max():+.3f}"]
        for z in (-0.38, -0.3, -0.15, 0.0, 0.15, 0.3):
            sl = np.abs(p[:, 2] - z) < 0.015
            wx = np.abs(p[sl & (np.abs(p[:, 1]) < 0.03), 0]); wy = np.abs(p[sl & (np.abs(p[:, 0]) < 0.03), 1])
            out.append(f"{z:+.2f}:{(wx.max() if len(wx) else 0):.3f}/{(wy.max() if len(wy) else 0):.3f}")
        return "  ".join(out)
    print("truth ", prof(tv, tf))
    for path in sys.argv[2:]:
        m = M.load_glb(open(path, 'rb').read())
        r = M.evaluate_mesh(m, gt.sdf, (0.85, 0.1, 0.1), period=float(sys.argv[0] and 90.0))
        print(path.split('/')[-1][:12].ljust(12), prof(m.vertices, m.faces, r['yaw']), f"| IoU {r['iou']:.3f} vol {r['volume_ratio']:.2f} ch {r['chamfer']:.4f} nc {r['normal_consistency']:.3f}")
