"""A start shape from the prior itself: DDIM samples of the prompt at 8 compass views (the colour prior, camera-
conditioned, the preset's camera), foreground by the border colour, and the visual hull of those silhouettes."""
import numpy as np
import torch
from diffusers import DDIMScheduler

from backend.engine.cameras import camera_condition, orbit_cameras, view_direction, view_prompt
from backend.prior import CAMERA

RES = 64
import os
SKIP = int(os.environ.get("HULL_SKIP", 1))     # views a voxel may fall outside of


def foreground(rgb: np.ndarray) -> np.ndarray:
    """The prior draws its objects on smooth gradients (its training backgrounds): a quadratic per channel
    fitted to the 3-pixel frame is the backdrop, the foreground is what stands off it. Dilated a pixel (a hull
    must not lose a 1-pixel-thin side view)."""
    from scipy import ndimage
    h, w, _ = rgb.shape
    b = 3
    yy, xx = np.mgrid[0:h, 0:w] / (h - 1) - 0.5
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], -1)
    frame = np.zeros((h, w), bool)
    frame[:b], frame[-b:], frame[:, :b], frame[:, -b:] = True, True, True, True
    coef, *_ = np.linalg.lstsq(basis[frame], rgb[frame], rcond=None)
    bg = basis @ coef
    dist = np.linalg.norm(rgb - bg, axis=-1)
    spread = float(dist[frame].mean())
    fg = dist > max(0.08, 4.0 * spread)
    return ndimage.binary_dilation(fg, iterations=1)


@torch.no_grad()
def sample_views(g, prompt, elevation=15.0, azimuths=tuple(range(0, 360, 45)), n=2, steps=30, cfg=4.0, seed=0):
    cams = orbit_cameras(elevation, azimuths, CAMERA["distance_min"], CAMERA["fovy_min"])
    texts = [view_prompt(prompt, view_direction(elevation, a, naming="compass"), "compass") for a in azimuths]
    sched = DDIMScheduler.from_config(g.scheduler.config)
    sched.set_timesteps(steps)
    tok = lambda t: g.tokenizer(t, padding="max_length", max_length=g.tokenizer.model_max_length, truncation=True,
                                return_tensors="pt").input_ids
    cond = g.text_encoder(tok(texts))[0].repeat_interleave(n, 0)
    uncond = g.text_encoder(tok([""]))[0].expand_as(cond)
    labels = camera_condition(cams.c2w).repeat_interleave(n, 0)
    gen = torch.Generator().manual_seed(seed)
    side = int(g.unet.config.sample_size)
    z = torch.randn(len(cond), int(g.unet.config.in_channels), side, side, generator=gen)
    for t in sched.timesteps:
        inp = torch.cat([z, z])
        eps = g.unet(inp, t, encoder_hidden_states=torch.cat([cond, uncond]),
                     class_labels=torch.cat([labels, labels]) if g.camera_conditioned else None).sample
        e_c, e_u = eps.chunk(2)
        z = sched.step(e_u + cfg * (e_c - e_u), t, z).prev_sample
    img = ((g.vae.decode(z / g.vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)
    return img.permute(0, 2, 3, 1).numpy(), cams, n


def visual_hull(images, cams, n, agree=0.75):
    """Occupancy (RES^3 over [-1, 1]^3, indexed x, y, z) of the points inside the foreground of at least ``agree``
    of the samples."""
    c = (np.arange(RES) + 0.5) / RES * 2 - 1
    p = torch.tensor(np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3), dtype=torch.float32)
    views = len(images) // n
    view_votes = torch.zeros(views, len(p))        # per view: in the foreground of any of its samples
    h = images.shape[1]
    used = 0
    for i, img in enumerate(images):
        fg = foreground(img)
        if fg.mean() < 0.005:          # segmentation failed on this sample: leave it out
            continue
        used += 1
        k = i // n
        c2w = cams.c2w[k]
        pc = (p - c2w[:3, 3]) @ c2w[:3, :3]
        focal = 0.5 * h / torch.tan(0.5 * cams.fovy[k])
        u = focal * pc[:, 0] / (-pc[:, 2]) + 0.5 * h
        v = 0.5 * h - focal * pc[:, 1] / (-pc[:, 2])
        mask = torch.tensor(fg)
        ui, vi = u.floor().long().clamp(0, h - 1), v.floor().long().clamp(0, h - 1)
        inside = (u >= 0) & (u < h) & (v >= 0) & (v < h)
        view_votes[k] = torch.maximum(view_votes[k], (inside & mask[vi, ui]).float())
    print(f"hull: {used} of {len(images)} samples segmented", flush=True)
    votes = view_votes.sum(0)
    return (votes >= views - SKIP).reshape(RES, RES, RES).numpy()


class Hull:
    albedo = None

    def __init__(self, occ):
        self.occ = torch.tensor(occ)

    def sdf(self, x):
        idx = ((x + 1) / 2 * RES).floor().long().clamp(0, RES - 1)
        inside = self.occ[idx[:, 0], idx[:, 1], idx[:, 2]]
        return torch.where(inside, -torch.ones(len(x)), torch.ones(len(x)))
