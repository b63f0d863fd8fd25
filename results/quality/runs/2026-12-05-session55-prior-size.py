# Session 55 scratch script, kept as run: paths are the session's (/work/main, checkpoints in /work/s55).
"""Does the colour prior draw a cube (sphere) at its true size? DDIM samples vs ground-truth renders, red-pixel masks."""
import sys; sys.path.insert(0, "/work/main")
import torch
torch.set_num_threads(2)
from diffusers import UNet2DConditionModel, AutoencoderKL
from transformers import CLIPTextModel, CLIPTokenizer
from backend.prior import train as T, model as M, render as R, CAMERA
from backend.engine.cameras import orbit_cameras, camera_condition
W = sys.argv[1] if len(sys.argv) > 1 else "/work/main/backend/prior/weights"
cfg = float(sys.argv[2]) if len(sys.argv) > 2 else 7.5
unet = UNet2DConditionModel.from_pretrained(W, subfolder="unet", torch_dtype=torch.float32).eval()
vae = AutoencoderKL.from_pretrained(W, subfolder="vae", torch_dtype=torch.float32).eval()
te = CLIPTextModel.from_pretrained(W, subfolder="text_encoder", torch_dtype=torch.float32).eval()
tok = CLIPTokenizer.from_pretrained(W, subfolder="tokenizer")
tokens_of = lambda t: M.tokenize(tok, t)
def mask(img, col):
    r, g, b = img[:, 0], img[:, 1], img[:, 2]
    if col == "red":
        return (r > g + 0.25) & (r > b + 0.25)
    return (b > r + 0.25) & (b > g + 0.1)
for shape, col in (("cube", "red"),):
    for az in (0.0, 30.0):
        cams = orbit_cameras(15.0, [az], CAMERA["distance_min"], CAMERA["fovy_min"])
        cond = camera_condition(cams.c2w)
        with torch.no_grad():
            imgs = T.sample(unet, te, vae, tokens_of, [f"a {col} {shape}"], n_per_prompt=8, steps=30, cfg=cfg, seed=1, camera=cond)
        res = imgs.shape[-1]
        e = R.entry_index(shape, col)
        gt = R.render(torch.tensor([e]), cams, res, shading=torch.tensor([R.SHADINGS.index("albedo")]),
                      background=torch.tensor([0]), vary=False)
        m = mask(imgs, col).float(); mg = mask(gt, col).float()
        def width(mm):
            cols = (mm.sum(-2) > 0).float().sum(-1); rows = (mm.sum(-1) > 0).float().sum(-1); return cols, rows
        cw, rw = width(m); gw, gr = width(mg)
        print(f"{shape:8s} az{az:4.0f} res{res} area ratio {(m.sum((1,2))/mg.sum()).mean():.3f} +- {(m.sum((1,2))/mg.sum()).std():.3f} "
              f"width {cw.mean()/gw.item():.3f} height {rw.mean()/gr.item():.3f}", flush=True)
        T.grid_png(torch.cat([gt, imgs]), 9, __import__("pathlib").Path(f"/work/s55/ps_{shape}_{int(az)}.png"), upscale=2)
