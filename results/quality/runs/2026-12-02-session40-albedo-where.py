"""Where on the mesh is the albedo error: by the surface normal (top / side / bottom). Session 40, CPU:
    PYTHONPATH=. .venv/bin/python results/quality/runs/2026-12-02-session40-albedo-where.py "a red cube" 1 prior-hull"""
import sys, json, numpy as np, torch
from backend.engine.api import generate
from backend.prior import recommended_settings
from backend.prior.catalogue import ground_truth
from backend.bench.metrics import load_glb, sample_surface, truth_surface, constant_albedo
from shared.settings import GenerationSettings
prompt, seed, init = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
s = GenerationSettings.from_dict({**recommended_settings(), "prompt": prompt, "seed": seed, "stages": "coarse",
                                  "shape_init": init, "resolution_schedule": "48x4"})
r = generate(s, device="cpu")
open(f"/tmp/diag/{init}_{seed}.glb", "wb").write(r.glb)
mesh = load_glb(r.glb)
truth = ground_truth(prompt)
rng = np.random.default_rng(0)
pts, face, bary = sample_surface(mesh.vertices, mesh.faces, 20000, rng)
colors = mesh.colors_at(face, bary)
alb = truth.albedo if callable(truth.albedo) else constant_albedo(truth.albedo)
surface = truth_surface(truth.sdf, alb, 20000, rng)
tr = surface.albedo_near(pts)
err = np.abs(colors - tr).mean(1)
v = mesh.vertices; f = mesh.faces
n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]); n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
nz = n[face][:, 2]
for name, m in (("top", nz > 0.7), ("side", np.abs(nz) <= 0.7), ("bottom", nz < -0.7)):
    print(f"{init} {name:6s} share {m.mean():.2f} err {err[m].mean():.3f} colour {colors[m].mean(0).round(2)}")
print(init, "all", err.mean().round(3), "truth colour", tr.mean(0).round(2))
