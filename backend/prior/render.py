"""Procedural training images: the prior's shapes seen exactly as the engine sees its field.

Every image uses the engine's own machinery: cameras from ``sample_cameras`` with the default
``GenerationSettings`` elevation and azimuth ranges and up jitter, at the prior's fixed distance
and field of view without look-at or eye jitter (``backend.prior.CAMERA``), rays from ``camera_rays``, colour from the renderer's ``shade`` (albedo,
lambertian or textureless, with the trainer's DreamFusion point light), composited over the
kinds of background the trainer renders (solid colours, white, black, and smooth gradients over
the view direction like the learned background MLP). The surface is found by sphere tracing the
analytic SDFs of ``backend.prior.shapes``; images are rendered at 2x and box-filtered down, and a
fraction is blurred by a round trip through half resolution, as the guidance sees a 32 px render
upsampled to its 64 px input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backend.engine.cameras import CameraBatch, camera_rays, sample_cameras, view_direction
from backend.engine.renderer import shade
from backend.prior import shapes
from backend.prior.grammar import COLOURS, SHAPES, VIEW_NAMING, VIEWS

SHADINGS = ("albedo", "lambertian", "textureless")
SHADING_PROBS = (0.45, 0.40, 0.15)
BACKGROUNDS = ("solid", "white", "black", "gradient")
BACKGROUND_PROBS = (0.35, 0.15, 0.10, 0.40)
BLUR_PROB = 0.25
SCENE_RADIUS = 0.85          # every shape lies inside this sphere: rays start tracing at it
TRACE_STEPS = 64
HIT_EPS = 1e-3


@dataclass
class Batch:
    images: torch.Tensor       # (B, 3, H, W) in [0, 1]
    shape: torch.Tensor        # (B,) index into SHAPES
    colour: torch.Tensor       # (B,) index into COLOURS
    view: torch.Tensor         # (B,) index into VIEWS (the engine's view name of the camera)


def default_settings():
    """The engine's default settings with the prior's camera (``backend.prior.CAMERA``)."""
    from backend.prior import CAMERA
    from shared.settings import GenerationSettings

    return GenerationSettings().replace(**CAMERA)


def trace(shape: str, rays_o: torch.Tensor, rays_d: torch.Tensor):
    """Sphere-trace flat rays against one shape: (hit mask (R,), hit points (R,3), normals (R,3))."""
    # Start on the bounding sphere (rays that miss it miss the shape).
    b = (rays_o * rays_d).sum(-1)
    c = (rays_o * rays_o).sum(-1) - SCENE_RADIUS**2
    disc = b * b - c
    t = (-b - disc.clamp(min=0.0).sqrt()).clamp(min=0.0)
    t_far = -b + disc.clamp(min=0.0).sqrt()
    alive = disc > 0
    for _ in range(TRACE_STEPS):
        d = shapes.sdf(shape, rays_o + rays_d * t[:, None])
        t = torch.where(alive, t + 0.9 * d.clamp(min=0.0) + 1e-5, t)
        alive = alive & (t < t_far)
    points = rays_o + rays_d * t[:, None]
    hit = (disc > 0) & (shapes.sdf(shape, points).abs() < 4 * HIT_EPS) & (t < t_far)
    eps = 1e-3
    offsets = torch.eye(3, device=points.device) * eps
    grad = torch.stack([shapes.sdf(shape, points + o) - shapes.sdf(shape, points - o) for o in offsets], -1)
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


def render(shape_idx: torch.Tensor, colour_rgb: torch.Tensor, cams: CameraBatch, resolution: int, *,
           shading: torch.Tensor, background: torch.Tensor, supersample: int = 2,
           blur: torch.Tensor | None = None, generator=None) -> torch.Tensor:
    """Render one image per camera: (B, 3, resolution, resolution) in [0, 1].

    ``shading`` and ``background`` (B,) index SHADINGS and BACKGROUNDS; ``blur`` (B,) bool.
    """
    dev = cams.c2w.device
    n = shape_idx.shape[0]
    size = resolution * supersample
    per = size * size
    rays_o, rays_d = camera_rays(cams, size)                          # (B, S, S, 3)
    bg = backgrounds(background, rays_d, generator)
    # The trainer's DreamFusion light: near the camera direction, 0.8-1.5 units from the centre.
    direction = F.normalize(cams.positions + torch.randn(n, 3, device=dev, generator=generator), dim=-1)
    light = direction * (0.8 + 0.7 * torch.rand(n, 1, device=dev, generator=generator))
    image = bg.clone()
    for k, name in enumerate(SHAPES):
        sel = torch.nonzero(shape_idx == k)[:, 0]
        if sel.numel() == 0:
            continue
        hit, points, normals = trace(name, rays_o[sel].reshape(-1, 3), rays_d[sel].reshape(-1, 3))
        albedo = colour_rgb[sel].repeat_interleave(per, 0)
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


def sample_batch(n: int, resolution: int = 64, *, device="cpu", settings=None, generator=None,
                 camera_chunk: int = 32) -> Batch:
    """``n`` random training images (shapes, colours, cameras, shading, backgrounds, blur).

    Cameras come from the engine's ``sample_cameras`` (torch's global RNG; it draws the elevation
    law once per call, so it is called in chunks of ``camera_chunk``); everything else uses
    ``generator`` when given.
    """
    s = settings or default_settings()
    dev = torch.device(device)
    shape_idx = torch.randint(len(SHAPES), (n,), generator=generator, device=dev)
    colour_idx = torch.randint(len(COLOURS), (n,), generator=generator, device=dev)
    table = torch.tensor(list(COLOURS.values()), dtype=torch.float32, device=dev)
    parts = [sample_cameras(s, min(camera_chunk, n - i), device=dev) for i in range(0, n, camera_chunk)]
    cams = CameraBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in
                         ("c2w", "fovy", "elevation", "azimuth", "distance")))
    shading = torch.multinomial(torch.tensor(SHADING_PROBS, device=dev), n, replacement=True, generator=generator)
    background = torch.multinomial(torch.tensor(BACKGROUND_PROBS, device=dev), n, replacement=True,
                                   generator=generator)
    blur = torch.rand(n, device=dev, generator=generator) < BLUR_PROB
    images = render(shape_idx, table[colour_idx], cams, resolution, shading=shading, background=background,
                    blur=blur, generator=generator)
    views = torch.tensor([VIEWS.index(view_direction(float(e), float(a), s.front_threshold, s.overhead_threshold,
                                                     VIEW_NAMING))
                          for e, a in zip(cams.elevation.cpu(), cams.azimuth.cpu())], device=dev)
    return Batch(images, shape_idx, colour_idx, views)
