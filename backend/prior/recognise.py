"""Which prompt of the built-in prior's vocabulary a picture shows, read by the text prior itself.

A diffusion classifier (Li et al. 2023, "Your Diffusion Model is Secretly a Zero-Shot Classifier"):
noise the picture's latent at a set of timesteps, ask the text prior's UNet for the noise under each
candidate caption, and pick the caption whose prediction errs least (the same noises and timesteps
for every caption, so their differences are the captions'). The caption carries the picture's view
word and, for a camera-aware prior (v6), the UNet gets the picture's camera too, as in training.

Why this and not a captioning model: image-to-3D with the built-in priors is better with the text
prior beside the view prior (Magic123's joint mode), but a user who drops in a picture types no prompt.
The text prior already knows every object it can draw; a BLIP-class captioner would be gigabytes
that cannot be downloaded here, and would name things the prior cannot draw anyway.

Cost: two rounds (every caption on ``samples[0]`` noisings, the ``top`` best again on
``samples[1]`` more), about 2,500 UNet rows at 16x16 latents: a few seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Timesteps drawn from this share of the schedule: at the ends every caption explains the noise
# equally well (t ~ T) or the picture needs no caption (t ~ 0); the middle carries the label.
T_RANGE = (0.2, 0.8)


@dataclass
class Recognised:
    prompt: str                          # the best caption, no view suffix
    scores: list[tuple[str, float]]      # (caption, mean prediction error), best first, the finalists
    margin: float                        # (second best - best) / best error: how sure, 0 = a tie


def candidate_prompts() -> list[str]:
    """Every caption with a look (the bare nouns, "a mug", are any look: no help to a picture)."""
    from backend.prior.catalogue import CATEGORIES
    from backend.prior.grammar import caption

    return list(dict.fromkeys(caption(c.name, look) for c in CATEGORIES for look in c.looks))


def picture_tensor(rgb: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """A prepared reference (``reference_image.PreparedImage``: (S, S, 3) rgb, (S, S) mask) on white,
    as Float[Tensor, "1 3 S S"] in [0, 1]."""
    on_white = rgb * mask[..., None] + (1.0 - mask[..., None])
    return torch.from_numpy(np.ascontiguousarray(on_white, dtype=np.float32)).permute(2, 0, 1)[None]


@torch.no_grad()
def recognise(picture: torch.Tensor, elevation: float, azimuth: float, guidance, *,
              prompts: list[str] | None = None, samples: tuple[int, int] = (4, 24), top: int = 4,
              seed: int = 0, naming: str = "compass", overhead_threshold: float = 60.0,
              distance: float = 1.8, fovy: float = 50.0, chunk: int = 512) -> Recognised:
    """The caption of ``prompts`` (default: every caption of the vocabulary) that best explains
    ``picture`` (Float[Tensor, "1 3 H W"] in [0, 1], the object on white, framed as the prior's
    camera at ``distance``/``fovy`` frames it), seen from ``elevation``/``azimuth`` (degrees).
    ``guidance``: a loaded ``StableDiffusionGuidance`` of the text prior."""
    from backend.engine.cameras import camera_condition, orbit_cameras, view_direction, view_suffixes

    prompts = list(prompts or candidate_prompts())
    if not prompts:
        raise ValueError("recognise: no candidate prompts")
    dev, dtype = guidance.device, guidance.dtype
    size = guidance.native_resolution
    x = F.interpolate(picture.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    z0 = guidance.vae.encode((x * 2.0 - 1.0).to(dev, dtype)).latent_dist.mean.float() * guidance.latent_scale
    suffix = view_suffixes(naming)[view_direction(elevation, azimuth, overhead_threshold=overhead_threshold,
                                                  naming=naming)]
    camera = None
    if guidance.camera_conditioned:
        camera = camera_condition(orbit_cameras(elevation, [azimuth], distance, fovy).c2w).to(dev)
    context = {p: guidance._embed(p + suffix)[0] for p in prompts}
    gen = torch.Generator().manual_seed(seed)
    n_steps = guidance.num_train_timesteps

    def noisings(n: int):
        lo, hi = T_RANGE
        # stratified timesteps: n evenly spaced strata of the range, one draw in each
        u = (torch.arange(n) + torch.rand(n, generator=gen)) / n
        t = ((lo + (hi - lo) * u) * (n_steps - 1)).long()
        eps = torch.randn((n, *z0.shape[1:]), generator=gen)
        return t.to(dev), eps.to(dev)

    def errors(candidates: list[str], t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Mean squared prediction error per candidate over the noisings: Float[Tensor, "P"]."""
        a = guidance.alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        target = eps if guidance.prediction_type != "v_prediction" else a.sqrt() * eps - (1 - a).sqrt() * z0
        n = len(t)
        pairs = [(i, j) for i in range(len(candidates)) for j in range(n)]
        err = torch.zeros(len(candidates), device=dev)
        for start in range(0, len(pairs), chunk):
            part = pairs[start:start + chunk]
            ci = torch.tensor([i for i, _ in part], device=dev)
            nj = torch.tensor([j for _, j in part], device=dev)
            ctx = torch.stack([context[candidates[i]] for i, _ in part]).to(dtype)
            labels = None if camera is None else camera.expand(len(part), -1).to(dtype)
            pred = guidance.unet(zt[nj].to(dtype), t[nj], encoder_hidden_states=ctx, class_labels=labels).sample
            e = (pred.float() - target[nj]).pow(2).mean(dim=(1, 2, 3))
            err.index_add_(0, ci, e)
        return err / n

    t1, eps1 = noisings(samples[0])
    first = errors(prompts, t1, eps1)
    finalists = [prompts[i] for i in torch.argsort(first)[:max(2, min(top, len(prompts)))].tolist()]
    t2, eps2 = noisings(samples[1])
    second = errors(finalists, torch.cat([t1, t2]), torch.cat([eps1, eps2]))
    order = torch.argsort(second).tolist()
    scores = [(finalists[i], float(second[i])) for i in order]
    best, runner_up = scores[0][1], scores[1][1] if len(scores) > 1 else scores[0][1]
    return Recognised(scores[0][0], scores, (runner_up - best) / max(best, 1e-12))
