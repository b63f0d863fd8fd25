"""Score a saved probe grid (/tmp/thin/TAG_sil.npz) at the silhouette-matched level."""
import sys, json
import numpy as np
import torch
from tools.thin.probe import mesh_metrics
from backend.export.mesh import auto_threshold, surface_from_grid
from tools.thin.silhouette_level import silhouette_threshold
torch.set_num_threads(1)
prompt = sys.argv[1]
for tag in sys.argv[2:]:
    g = np.load(f"/tmp/thin/{tag}_sil.npz")["grid"].astype(np.float32)
    a, l = auto_threshold(g), silhouette_threshold(g)
    v, f = surface_from_grid(g, l)
    print(tag, f"auto {a:.2f} silhouette {l:.2f} ({l/a:.2f}x)", json.dumps(mesh_metrics(v, f, prompt, 0)))
