"""Which prompt of the built-in prior's vocabulary a picture shows, read by the text prior itself.

A diffusion classifier (Li et al. 2023, "Your Diffusion Model is Secretly a Zero-Shot Classifier"):
noise the picture's latent at a set of timesteps, ask the text prior's UNet for the noise under each
candidate caption, and pick the caption whose prediction errs least (the same noises and timesteps
for every caption, so their differences are the captions'). The caption carries the picture's view
word and, for a camera-aware prior (v6), the UNet gets the picture's camera too, as in training. Read by an image
job's text prior (``text_model``: the built-in one is prior v6, ``models.BUILTIN_IMAGE_TEXT_DIR``; the text jobs'
v12, trained on albedo renders alone, read shaded pictures with a fifth of v6's margin, session 50).

Why this and not a captioning model: image-to-3D with the built-in priors is better with the text
prior beside the view prior (Magic123's joint mode), but a user who drops in a picture types no prompt.
The text prior already knows every object it can draw; a BLIP-class captioner would be gigabytes
that cannot be downloaded here, and would name things the prior cannot draw anyway.

The prior was trained at one camera, so it knows each object's size in the frame (its renders fill
0.38 (anvil) to 0.80 (chair) of the picture), while a user's picture is framed anyhow (the engine
scales it to ``reference_fill``, 0.8 by default): at 0.8 a red cube read as a wooden fence and every
solid as a shield. So the picture is read at several framings (``FILLS``), each caption's error taken
relative to the unconditional prediction's on the same framing and noisings (how much the caption
helps), and the framing kept is the one where the best caption stands out most from the runner-up:
letting each caption pick its own best framing read spheres as shields (errors of different framings
are not comparable: a larger object is a different picture to denoise), and so did reading each caption
at its own object's framing (``framing``; session 20, pictures framed at 0.8: a red cube read as a red
shield, a red cylinder as a red mug with margin 0.80, i.e. used). Once a reading is used, the job
re-frames the picture to ``framing`` of what was read (``backend.engine.reference.prior_framing``).

Cost: two rounds (every caption on ``samples[0]`` noisings, the ``top`` best again on ``samples[1]``
more), x the framings: about 2,000 UNet rows at 16x16 latents, 20-30 s on a 2-core CPU, nothing on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Timesteps drawn from this share of the schedule: at the ends every caption explains the noise
# equally well (t ~ T) or the picture needs no caption (t ~ 0); the middle carries the label.
T_RANGE = (0.2, 0.8)
# Framings the picture is read at (its bounding box's share of the frame): the prior's own range.
FILLS = (0.45, 0.6, 0.75)
# Below this margin the reading is a guess: the job then runs on the picture alone rather than on a wrong prompt.
# A picture framed anyhow (a user's: read at the prior's framings, FILLS): wrong readings had margins 0.02-0.54 in the
# first CPU check, right ones 0.87 and up. Session 35, every category in two looks from a new side each (51 pictures,
# CPU, framed at 0.8 as the engine frames a user's): 32 right, 19 wrong, two of those over 0.6 (a red capsule read
# as a red mug at 0.76, a red cylinder as a red mug at 1.22): 0.8 stays.
MIN_MARGIN = 0.8
# A picture framed as the prior's own camera frames it (``reference_fill`` 0: a render made with that camera, as the
# image benchmark's): the same 51 pictures all read right, 8 of them under 0.8 (fence 0.18 / 0.58, house 0.22 /
# 0.29, shield 0.60, well 0.63, crate 0.68, candle 0.73), and the image benchmark's crate, read right at 0.70 and so
# not used, came out 0.51 on the picture alone against 0.77 read (results/image/README.md, session 35;
# runs/2026-12-02-session35-recognise-margins-cpu.jsonl). 0.6 there: above every wrong reading seen, 46 of 51 kept.
# (Session 50 read with v12 and lowered this to 0.45; since session 51 image jobs read with v6 again, and 0.6 is v6's.)
MIN_MARGIN_AS_FRAMED = 0.6


@dataclass
class Recognised:
    prompt: str                          # the best caption, no view suffix
    scores: list[tuple[str, float]]      # (caption, error / unconditional error), best first, the finalists
    margin: float                        # (second best - best) / best: how sure, 0 = a tie
    fill: float = 0.0                    # the framing it was read at (0: as given, the prior's camera's framing)

    @property
    def confident(self) -> bool:
        return self.margin >= (MIN_MARGIN if self.fill > 0 else MIN_MARGIN_AS_FRAMED)


def candidate_prompts() -> list[str]:
    """Every caption with a look (the bare nouns, "a mug", are any look: no help to a picture)."""
    from backend.prior.catalogue import CATEGORIES
    from backend.prior.grammar import caption

    return list(dict.fromkeys(caption(c.name, look) for c in CATEGORIES for look in c.looks))


def picture_tensor(rgb: np.ndarray, mask: np.ndarray, fills: tuple[float, ...] = ()) -> torch.Tensor:
    """A prepared reference (``reference_image.PreparedImage``: (S, S, 3) rgb, (S, S) mask) on white,
    as given (no ``fills``: Float[Tensor, "1 3 S S"] in [0, 1]) or re-framed so that its bounding box
    fills each of ``fills`` of the frame (Float[Tensor, "F 3 S S"])."""
    from backend.engine.reference_image import recentre

    framings = [recentre(rgb, mask, rgb.shape[0], f) for f in fills] if fills else [(rgb, mask)]
    out = []
    for c, m in framings:
        on_white = c * m[..., None] + (1.0 - m[..., None])
        out.append(torch.from_numpy(np.ascontiguousarray(on_white, dtype=np.float32)).permute(2, 0, 1))
    return torch.stack(out)


@torch.no_grad()
def recognise(picture: torch.Tensor, elevation: float, azimuth: float, guidance, *, fills: tuple[float, ...] = (),
              prompts: list[str] | None = None, samples: tuple[int, int] = (4, 24), top: int = 4,
              seed: int = 0, naming: str = "compass", overhead_threshold: float = 60.0,
              distance: float = 1.8, fovy: float = 50.0, chunk: int = 512) -> Recognised:
    """The caption of ``prompts`` (default: every caption of the vocabulary) that best explains
    ``picture`` (Float[Tensor, "F 3 H W"] in [0, 1], the object on white: F framings of one picture,
    read at the one where the best caption stands out most), seen from ``elevation``/``azimuth``
    (degrees) by the prior's camera at ``distance``/``fovy``. ``guidance``: a loaded
    ``StableDiffusionGuidance`` of the text prior. ``fills``: the framing of each of the F pictures
    (``picture_tensor``'s), the chosen one reported back as ``Recognised.fill``."""
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
    # each caption as a "view" of the empty prompt: one call, cached by the guidance
    embedded = guidance.encode_prompts("", "", {p: p + suffix for p in prompts})
    context = {p: embedded.by_view[p][0] for p in prompts}
    unconditional = "\0"            # a key no caption can be
    context[unconditional] = embedded.uncond[0]
    gen = torch.Generator().manual_seed(seed)
    n_steps = guidance.num_train_timesteps

    def noisings(n: int):
        lo, hi = T_RANGE
        # stratified timesteps: n evenly spaced strata of the range, one draw in each
        u = (torch.arange(n) + torch.rand(n, generator=gen)) / n
        t = ((lo + (hi - lo) * u) * (n_steps - 1)).long()
        eps = torch.randn((n, *z0.shape[1:]), generator=gen)
        return t.to(dev), eps.to(dev)

    def errors(candidates: list[str], t: torch.Tensor, eps: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        """Mean squared prediction error per candidate and framing (``z0``: Float[Tensor, "F C h w"]) over
        the noisings (the same noisings for every framing): Float[Tensor, "P F"]."""
        n_framings = z0.shape[0]
        a = guidance.alphas[t].view(1, -1, 1, 1, 1)
        zt = (a.sqrt() * z0[:, None] + (1 - a).sqrt() * eps[None]).flatten(0, 1)        # (F*N, C, h, w)
        target = (eps[None].expand(n_framings, *eps.shape) if guidance.prediction_type != "v_prediction" else
                  a.sqrt() * eps[None] - (1 - a).sqrt() * z0[:, None]).flatten(0, 1)
        t_all = t.repeat(n_framings)
        rows = len(t_all)
        pairs = [(i, j) for i in range(len(candidates)) for j in range(rows)]
        err = torch.zeros(len(candidates) * n_framings, device=dev)
        for start in range(0, len(pairs), chunk):
            part = pairs[start:start + chunk]
            # slot = candidate * F + framing (row j is framing j // N)
            slot = torch.tensor([i * n_framings + j // len(t) for i, j in part], device=dev)
            nj = torch.tensor([j for _, j in part], device=dev)
            ctx = torch.stack([context[candidates[i]] for i, _ in part]).to(dtype)
            labels = None if camera is None else camera.expand(len(part), -1).to(dtype)
            pred = guidance.unet(zt[nj].to(dtype), t_all[nj], encoder_hidden_states=ctx, class_labels=labels).sample
            e = (pred.float() - target[nj]).pow(2).mean(dim=(1, 2, 3))
            err.index_add_(0, slot, e)
        return err.view(len(candidates), n_framings) / len(t)

    def relative_errors(candidates, t, eps, z0) -> torch.Tensor:
        """Each candidate's error over the unconditional one's, per framing: Float[Tensor, "P F"]."""
        err = errors([unconditional, *candidates], t, eps, z0)
        return err[1:] / err[:1].clamp_min(1e-12)

    t1, eps1 = noisings(samples[0])
    first = relative_errors(prompts, t1, eps1, z0)                              # (P, F)
    # The framing to read at: where the best caption stands out most from the rest (at a wrong
    # framing several captions explain the picture about as badly).
    ranked = first.sort(dim=0).values
    confidence = (ranked[1] - ranked[0]) / ranked[0].clamp_min(1e-12) if len(prompts) > 1 else -ranked[0]
    framing = int(confidence.argmax())
    finalists = [prompts[i] for i in torch.argsort(first[:, framing])[:max(2, min(top, len(prompts)))].tolist()]
    t2, eps2 = noisings(samples[1])
    # the finalists at the chosen framing only
    second = relative_errors(finalists, torch.cat([t1, t2]), torch.cat([eps1, eps2]), z0[framing:framing + 1])[:, 0]
    order = torch.argsort(second).tolist()
    scores = [(finalists[i], float(second[i])) for i in order]
    best, runner_up = scores[0][1], scores[1][1] if len(scores) > 1 else scores[0][1]
    return Recognised(scores[0][0], scores, (runner_up - best) / max(best, 1e-12),
                      fill=float(fills[framing]) if fills else 0.0)


@torch.no_grad()
def framing(prompt: str, elevation: float, azimuth: float, *, distance: float = 1.8, fovy: float = 50.0,
            resolution: int = 64) -> float:
    """The share of the frame that ``prompt``'s object fills (its bounding box's longer side, as
    ``reference_image.recentre`` measures a picture) in the prior's camera at ``elevation``/``azimuth``,
    ``distance``/``fovy``: the size the text prior knows it at (its canonical proportions).

    Why: a picture the engine re-frames to ``reference_fill`` (0.8) shows a mug as large as a chair,
    while the text prior draws every object at its own size in the frame (0.38 to 0.80). Once the
    picture is read, re-framing it to this size makes the reference view and the text prior agree."""
    from backend.engine.cameras import orbit_cameras
    from backend.prior.catalogue import parse_prompt
    from backend.prior.render import BACKGROUNDS, SHADINGS, entry_index, render

    name, look = parse_prompt(prompt)
    cams = orbit_cameras(elevation, [azimuth], distance, fovy)
    entry = torch.tensor([entry_index(name, look)])
    shading = torch.tensor([SHADINGS.index("albedo")])
    on = [render(entry, cams, resolution, shading=shading, supersample=2, vary=False,
                 background=torch.tensor([BACKGROUNDS.index(b)]), generator=torch.Generator().manual_seed(0))[0]
          for b in ("black", "white")]
    cover = (1.0 - (on[1] - on[0]).mean(dim=0)).numpy()          # opacity: white minus black backdrop
    ys, xs = np.nonzero(cover > 0.5)
    if len(ys) == 0:
        return 0.0
    return float(max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min())) / resolution

