# Session 57 (CPU): other export features for the cost model, chosen by leave-one-out on the fitted rows of cost.json.
import json, itertools, numpy as np, sys
sys.path.insert(0, '/work/main')
from backend.cost.model import fit, predict
d = json.load(open('results/speed/cost.json'))
rows = []
for e in d['exports']:
    o = e['overrides']; f = e['faces'] / 1e5; t = o['texture_size'] / 1024; m = (o['mesh_resolution'] / 256) ** 3
    rows.append(({"export": 1.0, "mesh_cells": m, "texels": t * t, "faces": f, "faces_sq": f * f, "faces_tex": f * t,
                  "tex": t, "faces_texels": f * t * t}, e['export_s'], e['held_out'], o, e))
base = ["export", "mesh_cells", "texels", "faces", "faces_sq"]
extra = ["faces_tex", "tex", "faces_texels"]
train = [r for r in rows if not r[2]]; test = [r for r in rows if r[2]]
def sub(fs, r): return {k: r[0][k] for k in fs}
for k in range(0, 3):
    for add in itertools.combinations(extra, k):
        fs = base + list(add)
        loo = []
        for i in range(len(train)):
            tr = [r for j, r in enumerate(train) if j != i]
            c = fit([sub(fs, r) for r in tr], [r[1] for r in tr])
            loo.append(abs(predict(c, sub(fs, train[i])) - train[i][1]) / train[i][1])
        c = fit([sub(fs, r) for r in train], [r[1] for r in train])
        ho = [abs(predict(c, sub(fs, r)) - r[1]) / r[1] for r in test]
        print(f"{'+'.join(add) or 'base':25s} LOO median {np.median(loo):.0%} max {max(loo):.0%} | held-out median {np.median(ho):.0%} max {max(ho):.0%}  {[round(x,2) for x in ho]}")
