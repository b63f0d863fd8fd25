"""Front-view (azimuth 0, elevation 0) DDIM samples (CFG 3, 30 steps, seed 0) of
"a red mug, front view" from v6 and v12 (/work/s49/weights_v6, weights_v12: this session's copies of weights/ and of
weights_v12 at 82cdab2), and the truth rendered at the range's corners and its canonical proportions, same camera: do the priors
draw the canonical mug or the narrow tall one?"""
import torch, numpy as np
from PIL import Image
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer
from backend.prior import CAMERA
from backend.prior import model as M
from backend.prior.train import sample
from backend.engine.cameras import orbit_cameras, camera_condition, CameraBatch
from backend.prior.render import render, entry_index
from backend.prior.catalogue import BY_NAME
cams = orbit_cameras(0.0, [0.0], CAMERA["distance_min"], CAMERA["fovy_min"])
cond = camera_condition(cams.c2w)
rows = []
for w in ("/work/s49/weights_v6", "/work/s49/weights_v12"):
    vae = AutoencoderKL.from_pretrained(w + "/vae").float(); unet = UNet2DConditionModel.from_pretrained(w + "/unet").float()
    te = CLIPTextModel.from_pretrained(w + "/text_encoder").float(); tok = CLIPTokenizer.from_pretrained(w + "/tokenizer")
    with torch.no_grad():
        s = sample(unet, te, vae, lambda t: M.tokenize(tok, t), ["a red mug, front view"], n_per_prompt=8, steps=30, cfg=3.0, camera=cond, seed=0)
    rows.append(s)
e = torch.tensor([entry_index("mug", "red")])
truths = []
for r, h in ((0.25, 0.34), (0.273, 0.31), (0.30, 0.28), (0.25, 0.28), (0.30, 0.34)):
    params = {"radius": torch.tensor(r), "half_height": torch.tensor(h)}
    cat = BY_NAME["mug"]
    full = {k: torch.tensor(float(v)) for k, v in cat.canonical().items()}; full.update(params)
    img = render(e, cams, 64, shading=torch.tensor([0]), background=torch.tensor([1]), params=full)
    truths.append(img)
rows.append(torch.cat(truths + [torch.ones_like(truths[0])] * 3))
big = torch.cat([torch.cat(list(r), 2) for r in rows], 1)
arr = (big.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
Image.fromarray(arr).resize((arr.shape[1] * 3, arr.shape[0] * 3), Image.NEAREST).save("/work/s49/mug_samples.png")
def extent(img):
    # the red object's pixel height and its width at mid-height (body only where not handle: min over rows)
    m = (img[0] > 0.45) & (img[1] < 0.35) & (img[2] < 0.35)
    ys = torch.nonzero(m.any(1))[:, 0]; xs = torch.nonzero(m.any(0))[:, 0]
    return (int(ys.max() - ys.min() + 1) if len(ys) else 0, int(xs.max() - xs.min() + 1) if len(xs) else 0)
for name, r in zip(("v6", "v12", "truth"), rows):
    print(name, [extent(i) for i in r])
