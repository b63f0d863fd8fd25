"""Procedural training images: the prior's objects seen exactly as the engine sees its field.

Every image uses the engine's own machinery: cameras from ``sample_cameras`` with the default
``GenerationSettings`` elevation and azimuth ranges and up jitter, at the prior's fixed distance
and field of view without look-at or eye jitter (``backend.prior.CAMERA``), rays from
``camera_rays``, colour from the renderer's ``shade`` (albedo, lambertian or textureless, with
the trainer's DreamFusion point light), composited over the kinds of background the trainer
renders (solid colours, white, black, and smooth gradients over the view direction like the
learned background MLP). The surface is found by sphere tracing the signed distance fields of
``backend.prior.catalogue`` (each image with its own sampled proportions and part counts), the
albedo is the category's procedural material at the hit point; images are rendered at 2x and
box-filtered down, and a fraction is blurred by a round trip through half resolution, as the
guidance sees a low-resolution render upsampled to its input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backend.engine.cameras import CameraBatch, camera_condition, camera_rays, sample_cameras, view_direction
from backend.engine.renderer import shade
from backend.prior.catalogue import CATEGORIES, SHAPE_CATEGORIES
from backend.prior.grammar import VIEW_NAMING, VIEWS
from backend.prior.props import FILLED, evaluate

SHADINGS = ("albedo", "lambertian", "textureless")
SHADING_PROBS = (0.45, 0.40, 0.15)
BACKGROUNDS = ("solid", "white", "black", "gradient")
BACKGROUND_PROBS = (0.35, 0.15, 0.10, 0.40)
BLUR_PROB = 0.25
SCENE_RADIUS = 0.85          # every object lies inside this sphere: rays start tracing at it
TRACE_STEPS = 80
HIT_EPS = 1e-3

# What an image shows: one entry per (category, look) of the catalogue.
ENTRIES: tuple[tuple[int, str | None], ...] = tuple((k, w) for k, c in enumerate(CATEGORIES) for w in c.looks)
# Categories are drawn with these weights (then a look uniformly): the seven solids a little more
# often than a prop, so the first priors' 56 prompts keep their share of the data.
SOLID_WEIGHT = 1.3
CATEGORY_WEIGHTS = tuple(SOLID_WEIGHT if k < len(SHAPE_CATEGORIES) else 1.0 for k in range(len(CATEGORIES)))


@dataclass
class Batch:
    images: torch.Tensor       # (B, 3, H, W) in [0, 1]
    entry: torch.Tensor        # (B,) index into ENTRIES (category and look)
    view: torch.Tensor         # (B,) index into VIEWS (the engine's view name of the camera)
    shading: torch.Tensor      # (B,) index into SHADINGS
    camera: torch.Tensor       # (B, 16) ``cameras.camera_condition`` of each image's camera (camera-aware priors)
    filled: torch.Tensor       # (B,) bool: a hollow prop drawn with its cavity filled (``props.FILLED``)


def default_settings():
    """The engine's default settings with the prior's camera (``backend.prior.CAMERA``)."""
    from backend.prior import CAMERA
    from shared.settings import GenerationSettings

    return GenerationSettings().replace(**CAMERA)


def trace(sdf, rays_o: torch.Tensor, rays_d: torch.Tensor):
    """Sphere-trace flat rays against ``sdf(points (R,3)) -> (R,)``: (hit mask (R,), hit points (R,3),
    normals (R,3))."""
    # Start on the bounding sphere (rays that miss it miss the object).
    b = (rays_o * rays_d).sum(-1)
    c = (rays_o * rays_o).sum(-1) - SCENE_RADIUS**2
    disc = b * b - c
    t = (-b - disc.clamp(min=0.0).sqrt()).clamp(min=0.0)
    t_far = -b + disc.clamp(min=0.0).sqrt()
    alive = disc > 0
    for _ in range(TRACE_STEPS):
        d = sdf(rays_o + rays_d * t[:, None])
        t = torch.where(alive, t + 0.9 * d.clamp(min=0.0) + 1e-5, t)
        alive = alive & (t < t_far)
    points = rays_o + rays_d * t[:, None]
    hit = (disc > 0) & (sdf(points).abs() < 4 * HIT_EPS) & (t < t_far)
    eps = 1e-3
    offsets = torch.eye(3, device=points.device) * eps
    grad = torch.stack([sdf(points + o) - sdf(points - o) for o in offsets], -1)
    return hit, points, F.normalize(grad, dim=-1, eps=1e-8)


def backgrounds(kind: torch.Tensor, rays_d: torch.Tensor, generator=None) -> torch.Tensor:
    """Background colour per ray (B, H, W, 3); ``kind`` (B,) indexes BACKGROUNDS."""
    b, dev = rays_d.shape[0], rays_d.device
    solid = torch.rand(b, 1, 1, 3, device=dev, generator=generator)
    # Smooth gradient over the view direction, as an early background MLP produces.
    base = 0.2 + 0.6 * torch.rand(b, 1, 1, 3, device=dev, generator=generator)
    slope = 0.6 * torch.randn(b, 3, 3, device=dev, generator=generator)
    gradient = (base + torch.einsum("bhwj,bij->bhwi", rays_d, slope)).clamp(0.0, 1.0)
    k = kind.view(b, 1, 1, 1)
    out = torch.where(k == BACKGROUNDS.index("solid"), solid.expand_as(rays_d), gradient)
    out = torch.where(k == BACKGROUNDS.index("white"), torch.ones_like(out), out)
    return torch.where(k == BACKGROUNDS.index("black"), torch.zeros_like(out), out)


def _per_ray(params: dict, sel: torch.Tensor, per: int) -> dict:
    return {k: v[sel].repeat_interleave(per, 0) for k, v in params.items()}


def render(entry_idx: torch.Tensor, cams: CameraBatch, resolution: int, *, shading: torch.Tensor,
           background: torch.Tensor, supersample: int = 2, blur: torch.Tensor | None = None, vary: bool = True,
           generator=None, params: dict | None = None, filled: torch.Tensor | None = None,
           views_per_object: int = 1, centred: float = 0.0) -> torch.Tensor:
    """Render one image per camera: (B, 3, resolution, resolution) in [0, 1].

    ``entry_idx`` (B,) indexes ENTRIES; ``shading`` and ``background`` (B,) index SHADINGS and
    BACKGROUNDS; ``blur`` (B,) bool. With ``vary`` every image draws its own proportions and part
    counts from its category's ranges; without, all are canonical (the benchmark's ground truth).
    ``params``: given proportions instead (one category's parameter dict, tensors of one value
    each, for every image: the image benchmark's objects drawn outside training). ``filled`` (B,) bool:
    hollow props (``Category.hollow``) drawn with the cavity filled. ``views_per_object`` V: the images come
    in groups of V consecutive views of one object (one entry, proportions and fill per group). ``centred``: the
    share of objects drawn from the middle of their ranges (``Category.sample``).
    """
    dev = cams.c2w.device
    n = entry_idx.shape[0]
    size = resolution * supersample
    per = size * size
    rays_o, rays_d = camera_rays(cams, size)                          # (B, S, S, 3)
    bg = backgrounds(background, rays_d, generator)
    # The trainer's DreamFusion light: near the camera direction, 0.8-1.5 units from the centre.
    direction = F.normalize(cams.positions + torch.randn(n, 3, device=dev, generator=generator), dim=-1)
    light = direction * (0.8 + 0.7 * torch.rand(n, 1, device=dev, generator=generator))
    image = bg.clone()
    cat_of = torch.tensor([k for k, _ in ENTRIES], device=dev)[entry_idx]
    for k, category in enumerate(CATEGORIES):
        sel = torch.nonzero(cat_of == k)[:, 0]
        if sel.numel() == 0:
            continue
        if params is not None:
            chosen = {key: params[key].to(dev).reshape(1).expand(sel.numel()) for key in category.canonical()}
        elif vary:
            # a group's views are consecutive and of one category, so ``sel`` holds whole groups in order
            chosen = {key: t.repeat_interleave(views_per_object, 0) for key, t in
                      category.sample(sel.numel() // views_per_object, dev, generator, centred).items()}
        else:
            chosen = {key: torch.full((sel.numel(),), v, device=dev) for key, v in category.canonical().items()}
        if filled is not None and category.hollow:
            chosen[FILLED] = filled[sel].to(dev, torch.float32)
        ray_params = _per_ray(chosen, torch.arange(sel.numel(), device=dev), per)
        flat_o, flat_d = rays_o[sel].reshape(-1, 3), rays_d[sel].reshape(-1, 3)
        hit, points, normals = trace(lambda q: evaluate(category, q, ray_params, None), flat_o, flat_d)
        albedo = torch.zeros_like(points)
        looks = [ENTRIES[int(e)][1] for e in entry_idx[sel].tolist()]
        look_of_ray = torch.tensor([category.looks.index(w) for w in looks], device=dev).repeat_interleave(per, 0)
        for j, look in enumerate(category.looks):
            rows = torch.nonzero(hit & (look_of_ray == j))[:, 0]
            if rows.numel():
                sub = {key: v[rows] for key, v in ray_params.items()}
                albedo[rows] = evaluate(category, points[rows], sub, look, albedo=True)[1]
        lights = light[sel].repeat_interleave(per, 0)
        mode = shading[sel].repeat_interleave(per, 0)[:, None]
        colour = shade(albedo, normals, points, lights, "albedo")
        for m in ("lambertian", "textureless"):
            colour = torch.where(mode == SHADINGS.index(m), shade(albedo, normals, points, lights, m), colour)
        fg = torch.where(hit[:, None], colour, bg[sel].reshape(-1, 3))
        image[sel] = fg.reshape(-1, size, size, 3)
    image = image.permute(0, 3, 1, 2)
    if supersample > 1:
        image = F.avg_pool2d(image, supersample)
    if blur is not None and bool(blur.any()):
        half = F.avg_pool2d(image[blur], 2)
        image[blur] = F.interpolate(half, (resolution, resolution), mode="bilinear", align_corners=False)
    return image.clamp(0.0, 1.0).contiguous()


def entry_index(name: str, look: str | None) -> int:
    """Index into ENTRIES of a category name and look (None: the category's default look)."""
    k = next(i for i, c in enumerate(CATEGORIES) if c.name == name)
    look = CATEGORIES[k].looks[0] if look is None else look
    return ENTRIES.index((k, look))


def sample_batch(n: int, resolution: int = 64, *, device="cpu", settings=None, generator=None,
                 camera_chunk: int = 32, categories: list[str] | None = None, p_filled: float = 0.0,
                 views_per_object: int = 1, shadings: tuple[str, ...] | None = None, centred: float = 0.0) -> Batch:
    """``n`` random training images (objects, looks, proportions, cameras, shading, backgrounds, blur);
    a hollow prop is drawn filled with probability ``p_filled``.

    ``views_per_object`` V > 1 (a multi-view prior's data): ``n / V`` objects, each seen by V consecutive
    images at one elevation, 360 / V degrees apart (``sample_cameras(views_per_object=V)``), with one look,
    proportions, fill and shading (a run's batch is shaded alike); backgrounds, lights and blur stay per image,
    as the trainer draws them. ``shadings``: only these (``SHADINGS`` names, at their relative odds). ``centred``:
    the share of objects drawn from the middle of their proportions' ranges (``Category.sample``).

    Cameras come from the engine's ``sample_cameras`` (torch's global RNG; it draws the elevation
    law once per call, so it is called in chunks of ``camera_chunk``); everything else uses
    ``generator`` when given.
    """
    s = settings or default_settings()
    dev = torch.device(device)
    v = int(views_per_object)
    if v < 1 or n % v:
        raise ValueError(f"n ({n}) must be a multiple of views_per_object ({v})")
    objects = n // v
    per_view = lambda t: t.repeat_interleave(v, 0) if v > 1 else t
    weights = torch.tensor(CATEGORY_WEIGHTS, device=dev)
    if categories is not None:          # only these (a fine-tune's data)
        weights = weights * torch.tensor([float(c.name in categories) for c in CATEGORIES], device=dev)
    cat = torch.multinomial(weights, objects, replacement=True, generator=generator)
    n_looks = torch.tensor([len(c.looks) for c in CATEGORIES], device=dev)
    first = torch.cumsum(n_looks, 0) - n_looks
    look = torch.floor(torch.rand(objects, device=dev, generator=generator) * n_looks[cat]).long()
    cat, entry = per_view(cat), per_view(first[cat] + look)
    chunk = max(v, camera_chunk // v * v)
    parts = [sample_cameras(s, min(chunk, n - i), device=dev, views_per_object=v) for i in range(0, n, chunk)]
    cams = CameraBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in
                         ("c2w", "fovy", "elevation", "azimuth", "distance")))
    odds = torch.tensor(SHADING_PROBS, device=dev)
    if shadings is not None:
        odds = odds * torch.tensor([float(name in shadings) for name in SHADINGS], device=dev)
    shading = per_view(torch.multinomial(odds, objects, replacement=True, generator=generator))
    background = torch.multinomial(torch.tensor(BACKGROUND_PROBS, device=dev), n, replacement=True,
                                   generator=generator)
    blur = torch.rand(n, device=dev, generator=generator) < BLUR_PROB
    hollow = torch.tensor([c.hollow for c in CATEGORIES], device=dev)[cat]
    # drawn only when asked, so the earlier priors' data (p_filled 0) keeps its random stream
    filled = hollow & per_view(torch.rand(objects, device=dev, generator=generator) < p_filled) if p_filled > 0 \
        else hollow & False
    images = render(entry, cams, resolution, shading=shading, background=background, blur=blur, generator=generator,
                    filled=filled, views_per_object=v, centred=centred)
    views = torch.tensor([VIEWS.index(view_direction(float(e), float(a), s.front_threshold, s.overhead_threshold,
                                                     VIEW_NAMING))
                          for e, a in zip(cams.elevation.cpu(), cams.azimuth.cpu())], device=dev)
    return Batch(images, entry, views, shading, camera_condition(cams.c2w).to(dev), filled)
