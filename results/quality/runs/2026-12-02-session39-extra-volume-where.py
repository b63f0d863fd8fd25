# Session 39: where a mesh's extra volume lies against its truth (results/quality/README.md, session 39).
# .venv/bin/python results/quality/runs/2026-12-02-session39-extra-volume-where.py MESH.glb "a yellow pyramid" [...]
"""Where a mesh's extra volume lies against its truth: per z slice, mesh / truth footprint, and the
extra split into under the truth's base / elsewhere; plus what base_slice says of the mesh's footprint."""
import sys, numpy as np
from backend.bench.metrics import load_glb, voxelize, sdf_occupancy, best_yaw_iou, iou
from backend.prior.catalogue import ground_truth
from backend.export.mesh import base_slice
res = 128
for path, prompt in zip(sys.argv[1::2], sys.argv[2::2]):
    truth = ground_truth(prompt)
    mesh = load_glb(open(path, 'rb').read())
    pred = voxelize(mesh.vertices, mesh.faces, res)
    _, yaw = best_yaw_iou(voxelize(mesh.vertices, mesh.faces, 64), truth.sdf, period=truth.yaw_period)
    occ = sdf_occupancy(truth.sdf, res, yaw)
    cell = 2.0 / res
    fp, ft = pred.sum((0, 1)), occ.sum((0, 1))
    tz = np.nonzero(ft)[0]; pz = np.nonzero(fp)[0]
    base = tz[0]
    extra = pred & ~occ; miss = occ & ~pred
    under = extra[:, :, :base].sum()
    print(f"== {prompt} ({path}) IoU {iou(pred, occ):.3f} vol {pred.sum()/occ.sum():.2f}; truth z {tz[0]}..{tz[-1]}, mesh z {pz[0]}..{pz[-1]}")
    print(f"extra {extra.sum()} cells ({extra.sum()/occ.sum():.2f} of truth): under base {under/extra.sum():.2f}, "
          f"above top {extra[:, :, tz[-1]+1:].sum()/extra.sum():.2f}; missing {miss.sum()/occ.sum():.2f}")
    print("base_slice of mesh footprint:", base_slice(fp.astype(float), cell))
    for k in range(pz[0], min(pz[0] + 14, res)):
        print(f"  z{k:3d} ({-1+(k+.5)*cell:+.3f}) mesh {fp[k]:6d} truth {ft[k]:6d} extra {extra[:,:,k].sum():6d}")
    # extra by height band
    bands = np.array_split(np.arange(tz[0], tz[-1] + 1), 6)
    print("  extra by height sixth (bottom up):", [round(extra[:, :, b].sum() / extra.sum(), 2) for b in bands])
