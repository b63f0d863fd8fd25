# Session 57 scratch script, kept as run: paths are the session's (/work/main, /work/s57, checkpoints in /work/s55 and /work/s57).
import sys; sys.path.insert(0, "/work/main"); sys.path.insert(0, "/work/s57")
import torch, numpy as np; torch.set_num_threads(2)
from flatten import flatten_underside
from backend.export.mesh import density_grid
from backend.prior.catalogue import ground_truth
from backend.prior.grammar import benchmark_prompts
seen = set()
for prompt in benchmark_prompts():
    t = ground_truth(prompt)
    if t.category.name in seen: continue
    seen.add(t.category.name)
    g = density_grid(lambda p: -t.sdf(p), resolution=128)
    info = {}
    f = flatten_underside(g, info=info)
    a, b = g > 0, f > 0
    print(f"{prompt:25s} applied {info.get('applied', False)!s:5s} added {(b&~a).sum():5d} removed {(a&~b).sum():5d} of {a.sum():6d}  " + " ".join(f"{k}={float(v):.3f}" for k, v in info.items() if k != 'applied'))
