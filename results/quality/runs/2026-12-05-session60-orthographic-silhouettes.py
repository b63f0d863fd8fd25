# Session 60 scratch script, kept as run (paths are the session's: /work/main, session 55's saved coarse stages in /work/s55):
# python3 THIS PROMPT SEED [CHECKPOINT] -> the coarse field's orthographic silhouettes (side, top) against the truth's.
# Orthographic renders of the saved coarse cube field: the opacity-0.5 silhouette's half-width and corner shape
import sys, numpy as np, torch
sys.path.insert(0, '/work/main'); torch.set_num_threads(2)
from backend.bench.quality import settings_for
from backend.engine.api import load_guidance_for
from backend.engine.trainer import Trainer
prompt = sys.argv[1]; seed = int(sys.argv[2])
ck = sys.argv[3] if len(sys.argv) > 3 else f"/work/s55/ck_{'_'.join(prompt.split()[1:])}_{seed}.pt"
s = settings_for(prompt, seed, {}, "builtin", "cpu")
t = Trainer(s, load_guidance_for(s, "cpu"), "cpu"); t.init_from_checkpoint(ck)
t.field.eval(); t.estimator.eval()
n = 161; ext = 0.6
u = torch.linspace(-ext, ext, n)
for name, axis in (("side (+x)", 0), ("top (-z)", 2)):
    yy, zz = torch.meshgrid(u, u, indexing="ij")
    origins = torch.zeros(n, n, 3); dirs = torch.zeros(n, n, 3)
    if axis == 0:
        origins[..., 0] = -2.0; origins[..., 1] = yy; origins[..., 2] = zz; dirs[..., 0] = 1.0
    else:
        origins[..., 2] = 2.0; origins[..., 0] = yy; origins[..., 1] = zz; dirs[..., 2] = -1.0
    with torch.no_grad():
        op = t.renderer.render_image(origins, dirs, shading="albedo", bg_color=torch.ones_like(origins))["opacity"].reshape(n, n).numpy()
    sil = op >= 0.5
    mid = n // 2
    row = np.where(sil[:, mid])[0]; col = np.where(sil[mid, :])[0]
    print(name, "half-widths at centre lines:", f"{u[row.min()].item():+.3f}..{u[row.max()].item():+.3f}", f"{u[col.min()].item():+.3f}..{u[col.max()].item():+.3f}")
    # the silhouette's extent along its diagonal: a square of half-width h reaches h*sqrt2 there, a disc h
    d = [i for i in range(n) if sil[i, i]]; 
    print("   diagonal reach", f"{(u[d[0]].item()*np.sqrt(2)):+.3f}..{(u[d[-1]].item()*np.sqrt(2)):+.3f}", " area", f"{sil.mean()*(2*ext)**2:.3f}", "(truth square 0.640)")
    # opacity profile across the edge at the centre line
    print("   opacity across +edge:", " ".join(f"{u[i].item():.3f}:{op[i, mid]:.2f}" for i in range(mid + int(0.3/ (2*ext/(n-1))), mid + int(0.5/(2*ext/(n-1))), 2)))
# the truth's silhouettes the same way (a ray is covered when any point along it is inside)
from backend.prior.catalogue import ground_truth
gt = ground_truth(prompt)
ts = torch.linspace(-1, 1, 201)
for name, axis in (("truth side", 0), ("truth top", 2)):
    yy, zz = torch.meshgrid(u, u, indexing="ij")
    pts = torch.zeros(n, n, len(ts), 3)
    if axis == 0:
        pts[..., 0] = ts; pts[..., 1] = yy[..., None]; pts[..., 2] = zz[..., None]
    else:
        pts[..., 2] = ts; pts[..., 0] = yy[..., None]; pts[..., 1] = zz[..., None]
    with torch.no_grad():
        inside = (gt.sdf(pts.reshape(-1, 3)) < 0).reshape(n, n, len(ts)).any(-1).numpy()
    mid = n // 2
    row = np.where(inside[:, mid])[0]
    print(name, "half-width", f"{u[row.min()].item():+.3f}..{u[row.max()].item():+.3f}", "area", f"{inside.mean()*(2*ext)**2:.3f}")
