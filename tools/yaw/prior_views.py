"""DDIM samples of "a red cube, front view" and "a red cube, front left view" from the same seed (one row
each) and the red silhouette's width/height: does the prior's view word turn the cube? A camera-aware
prior (v6) also gets the camera of each view (15 degrees up, azimuth 0 and 45).

    PYTHONPATH=. python tools/yaw/prior_views.py backend/prior/weights 3.0 12   # -> /tmp/views_<folder>_<cfg>.png
"""
import sys, torch, numpy as np
from pathlib import Path
from diffusers import UNet2DConditionModel, AutoencoderKL
from transformers import CLIPTextModel, CLIPTokenizer
from backend.prior import model as M
from backend.prior.train import sample, grid_png
w = Path(sys.argv[1]); cfg = float(sys.argv[2]); n = int(sys.argv[3])
tok = CLIPTokenizer.from_pretrained(w / "tokenizer"); te = CLIPTextModel.from_pretrained(w / "text_encoder").float().eval()
unet = UNet2DConditionModel.from_pretrained(w / "unet").float().eval(); vae = AutoencoderKL.from_pretrained(w / "vae").float().eval()
torch.set_num_threads(1)
out = []
from backend.engine.cameras import camera_condition, orbit_cameras
from backend.prior import CAMERA
for view, azimuth in (("front", 0.0), ("front left", 45.0)):
    camera = (camera_condition(orbit_cameras(15.0, [azimuth], CAMERA["distance_min"], CAMERA["fovy_min"]).c2w)
              if unet.config.class_embed_type == "projection" else None)
    imgs = sample(unet, te, vae, lambda t: M.tokenize(tok, t), [f"a red cube, {view} view"], n_per_prompt=n, steps=30,
                  cfg=cfg, seed=1, camera=camera)
    r, g, b = imgs[:, 0], imgs[:, 1], imgs[:, 2]
    m = ((r > 0.45) & (g < 0.3) & (b < 0.3)).float()
    widths = []
    for k in range(n):
        cols = torch.nonzero(m[k].sum(0) > 0)[:, 0]; rows = torch.nonzero(m[k].sum(1) > 0)[:, 0]
        if len(cols) > 5: widths.append(float((cols.max() - cols.min() + 1) / (rows.max() - rows.min() + 1)))
    print(view, "width/height median %.3f" % np.median(widths), np.round(widths, 2))
    out.append(imgs)
grid_png(torch.cat(out), n, Path(f"/tmp/views_{w.parent.name}_{cfg}.png"))
