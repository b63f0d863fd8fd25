# Session 57 scratch script, kept as run: paths are the session's (/work/main, /work/s57, checkpoints in /work/s55 and /work/s57).
import sys; sys.path.insert(0, "/work/main")
import numpy as np
from backend.bench.metrics import load_glb, face_normals, sample_surface, project_to_surface, rotate_z_np
from backend.prior.catalogue import ground_truth
prompt, path = sys.argv[1], sys.argv[2]
mesh = load_glb(open(path, "rb").read()); truth = ground_truth(prompt)
rng = np.random.default_rng(0)
n = face_normals(mesh.vertices, mesh.faces)
pts, face, _ = sample_surface(mesh.vertices, mesh.faces, 20000, rng)
proj, tn = project_to_surface(truth.sdf, pts)
cos = np.abs((n[face] * tn).sum(1)); d = np.linalg.norm(pts - proj, axis=1)
down = tn[:, 2] < -0.9
r = np.linalg.norm(proj[:, :2], axis=1)
print("base share", down.mean().round(3), "cos", cos[down].mean().round(3), "| side cos", cos[~down].mean().round(3))
for lo in np.arange(0, 0.5, 0.05):
    s = down & (r >= lo) & (r < lo + 0.05)
    if s.sum() > 20: print(f" base r {lo:.2f} n {s.sum():5d} cos {cos[s].mean():.3f} meshz {pts[s,2].mean():+.3f}")
z = proj[:, 2]
for lo in np.arange(-0.45, 0.45, 0.05):
    s = ~down & (z >= lo) & (z < lo + 0.05)
    if s.sum() > 20: print(f" side z {lo:+.2f} n {s.sum():5d} cos {cos[s].mean():.3f} off {np.sign((pts[s]-proj[s])[:, :2].__mul__(proj[s][:, :2]).sum(1)).mean():+.2f} dist {d[s].mean():.3f}")
# azimuthal variation of side cos
a = np.degrees(np.arctan2(proj[:, 1], proj[:, 0]))
for lo in range(-180, 180, 45):
    s = ~down & (a >= lo) & (a < lo + 45) & (z < 0.3) & (z > -0.4)
    print(f" side az {lo:+4d} cos {cos[s].mean():.3f} dist {d[s].mean():.3f}")
