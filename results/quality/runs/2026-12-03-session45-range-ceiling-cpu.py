"""Expected IoU (best over yaw near the truth's own) of a random member of each prop's training range (uniform, as
every shipped prior was trained) against its canonical truth: what a prior that draws its range at random scores
when it draws each member perfectly. `python results/quality/runs/2026-12-03-session45-range-ceiling-cpu.py [N]`
(12 members a prop, 96^3 voxels; ~3 minutes on one core)."""
import json, sys, numpy as np, torch
from backend.prior.catalogue import PROP_NAMES, GroundTruth
from backend.bench.metrics import sdf_occupancy, YawTable, iou
torch.set_num_threads(1)
RES, N = 96, int(sys.argv[1]) if len(sys.argv) > 1 else 12
out = {}
for name in PROP_NAMES:
    t = GroundTruth(name)
    c = t.category
    if not c.params:
        continue
    g = torch.Generator().manual_seed(0)
    P = c.sample(N, "cpu", g)
    table = YawTable(t.sdf, RES)
    period = c.yaw_period
    vals = []
    for i in range(N):
        prop = {k: float(v[i]) for k, v in P.items()}
        pred = sdf_occupancy(t.sdf_with(prop), RES)
        if period <= 0:
            vals.append(iou(pred, sdf_occupancy(t.sdf, RES))); continue
        # members are drawn at yaw 0 like the truth: search near 0 (and the symmetric yaws)
        best = max(iou(pred, table.occupancy(y)) for y in np.arange(-6, 6.01, 1.5) % period)
        vals.append(best)
    out[name] = (float(np.mean(vals)), float(np.min(vals)), float(np.max(vals)))
    print(f"{name:15s} mean {out[name][0]:.3f} min {out[name][1]:.3f} max {out[name][2]:.3f}  params {c.params}", flush=True)
json.dump(out, open("results/quality/runs/2026-12-03-session45-range-ceiling-cpu.json", "w"))
