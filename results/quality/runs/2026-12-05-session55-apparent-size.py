# Session 55 scratch script, kept as run: paths are the session's (/work/main, checkpoints in /work/s55).
"""Apparent size (rendered silhouette) of a trained coarse field vs its exported mesh vs the truth, side view."""
import sys, os, json
sys.path.insert(0, "/work/main")
import numpy as np, torch, trimesh
torch.set_num_threads(1)
from backend.bench.quality import settings_for
from backend.bench.metrics import load_glb
from backend.engine.api import generate
from backend.engine.trainer import prepare_generation
from backend.engine.cameras import orbit_cameras, camera_rays
from backend.prior import render as R, CAMERA
prompt, seed = sys.argv[1], int(sys.argv[2])
over = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
shape, col = prompt.split()[-1], prompt.split()[-2]
tag = "_".join(prompt.split()[1:]) + f"_{seed}" + ("_" + "_".join(f"{k}{v}" for k, v in over.items()) if over else "")
ck = f"/work/s55/ck_{tag}.pt"
s = settings_for(prompt, seed, {"stages": "coarse", **over}, "builtin", "cpu")
s = s.replace(checkpoint_interval=s.steps)
if not os.path.exists(ck):
    r = generate(s, device="cpu", checkpoint_path=ck)
    open(f"/work/s55/coarse_{tag}.glb", "wb").write(r.glb)
run = prepare_generation(s, device="cpu", checkpoint_path=ck)
tr = run.trainer
if not os.path.exists(f"/work/s55/coarse_{tag}.glb"):
    open(f"/work/s55/coarse_{tag}.glb", "wb").write(tr.export().glb)
glb = open(f"/work/s55/coarse_{tag}.glb", "rb").read()
tr.field.eval(); tr.estimator.eval()
N = 192
def project_mask(tm, ro, rd, n):
    # pinhole: fit a linear map from camera-space (x/z, y/z) to pixel indices using the rays themselves
    o = ro[0, 0].numpy().astype(np.float64)
    d3 = rd.numpy().astype(np.float64); d = d3.reshape(-1, 3)
    fwd = d3[n//2-1:n//2+1, n//2-1:n//2+1].reshape(-1, 3).mean(0); fwd /= np.linalg.norm(fwd)
    right = d3[n // 2, -1] - d3[n // 2, 0]; right -= fwd * (right @ fwd); right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    def cam(v):
        z = v @ fwd; return np.stack([(v @ right) / z, (v @ up) / z], -1)
    uv = cam(d)
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    A = np.c_[uv, np.ones(len(uv))]
    ci = np.linalg.lstsq(A, ii.ravel(), rcond=None)[0]; cj = np.linalg.lstsq(A, jj.ravel(), rcond=None)[0]
    pts = tm.sample(2_000_000)
    P = np.c_[cam(pts - o), np.ones(len(pts))]
    pi = np.floor(P @ ci + 0.5).astype(int); pj = np.floor(P @ cj + 0.5).astype(int)
    ok = (pi >= 0) & (pi < n) & (pj >= 0) & (pj < n)
    mask = np.zeros((n, n), bool); mask[pi[ok], pj[ok]] = True
    return mask
out = {}
for elev, az in ((0.0, 0.0), (0.0, 45.0), (30.0, 20.0)):
    cams = orbit_cameras(elev, [az], CAMERA["distance_min"], CAMERA["fovy_min"])
    ro, rd = camera_rays(cams, N)
    with torch.no_grad():
        img = tr.renderer.render_image(ro, rd, shading="albedo", bg_color=torch.ones_like(ro))
    op = img["opacity"][0, ..., 0].numpy()
    gt = R.render(torch.tensor([R.entry_index(shape, col)]), cams, N, shading=torch.tensor([0]),
                  background=torch.tensor([1]), vary=False, supersample=1)[0]
    gmask = ((gt[0] - gt[1]) > 0.25).numpy() if col == "red" else (gt.sum(0) < 2.9).numpy()
    m = load_glb(glb)
    tm = trimesh.Trimesh(m.vertices, m.faces)
    hits = project_mask(tm, ro[0], rd[0], N)
    mid = N // 2
    def w(mask): return mask[mid].sum(), mask.sum()
    row = {"nerf_a50": w(op > 0.5), "nerf_a10": w(op > 0.1), "nerf_a90": w(op > 0.9), "mesh": w(hits), "truth": w(gmask)}
    if "SAVE" in os.environ: np.save(f"/work/s55/op_{tag}_{int(elev)}_{int(az)}.npy", op)
    print(elev, az, {k: (int(a), round(float(b) / float(gmask.sum()), 3)) for k, (a, b) in row.items()}, flush=True)
