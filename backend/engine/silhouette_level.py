"""The coarse field's iso-level matched to its own renders (the ``mesh_level`` setting's "silhouette").

Why: SDS fits what the field *looks like*, and a coarse NeRF's surface is soft, a skin of density a few cells
thick. Where its iso-surface lies inside that skin depends on the shape: a ray grazing a flat face runs through
the skin for the face's whole length and turns opaque far out in it, a ray grazing a sphere crosses it in a
short chord and needs the dense core. So one density level, chosen from the density values alone
(``backend.export.mesh.auto_threshold``), draws a soft cube too large and a soft sphere too small, while the
field's renders of both are right. Measured on this CPU (built-in prior, seed 0, the preset's coarse stage,
192 px views at elevation 0-30): the field's rendered silhouettes (opacity >= 0.5) cover 0.99-1.02 of the
truth's for the red cube and 1.01-1.02 for the red sphere; the automatic level's mesh covers 1.04-1.07 and
0.87-0.88 (volume 1.15 and 0.81 of the truth; ``results/quality/README.md``, session 55).

The rule: render the field's opacity from ``VIEWS`` around it at the run's camera distance and field of view;
for every pixel ray, the largest density of the export's grid along it (trilinear, as marching cubes
interpolates); the level is the density that exactly as many rays exceed as there are pixels the renders
cover. The iso-surface's silhouettes then cover as many pixels as the field's own. Clamped to
``LEVEL_RANGE`` times the automatic level: a field whose renders are mostly translucent haze would
otherwise pick a level far outside anything the density supports. And a level above the automatic one
may take off the skin, never the body: where the density under the skin is thin (a box SDS drew as a shell
of modest density over a weaker inside), a higher level opens holes in the shell and the solid collapses
(a wooden crate, CPU, seed 0: matched at 1.78x, volume 1.17 -> 0.66 of the truth, IoU 0.85 -> 0.57), so
the level is lowered until the solid's largest piece keeps ``KEEP_VOLUME`` of the automatic level's (the
cube's skin at 1.47x: 0.93 of it); the largest piece, so that a thin part is not cut through (``keep_body``).
Only a bulky object takes the matched level (``body_weight``, session 58): one made of thin parts keeps the
automatic level, whose excess there the fine stage's thin-part inset already corrects; and a bulky object's fine
stage draws its surface less far inside (``fine_render_offset``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

# 24 views: three elevations (the built-in prior's cameras span -10..45 degrees) x 8 azimuths, the upper
# rows turned half a step so that no two views look along the same vertical plane.
VIEW_ELEVATIONS = (0.0, 20.0, 40.0)
VIEW_AZIMUTHS = 8
VIEW_RESOLUTION = 96              # pixels a side: ~1 export cell a pixel at the preset's camera
RAY_SAMPLES = 256                 # grid samples along each ray through the scene's bounding sphere
COVERED_OPACITY = 0.5             # a pixel the field covers: the render's silhouette at half opacity
LEVEL_RANGE = (0.4, 1.6)          # times the automatic level
KEEP_VOLUME = 0.8                 # a raised level keeps this share of the automatic level's largest piece
# keep_thin_parts: half-thicknesses (scene units) up to which a part keeps the automatic level, from which it
# takes the raised one (2 and 4 cells of the 128^3 grid)
THIN_HALF_THICKNESS = 0.03
THICK_HALF_THICKNESS = 0.06
# body_weight: an object whose thickest part is at most BODY_THIN half-thick (scene units; the stool's seat, a
# table's top, a mug's wall, a fence's post: 0.045-0.09 at the automatic level) keeps the automatic level, one
# whose thickest part is BODY_THICK or more takes the matched level (a cube, a house, an anvil: 0.135-0.45)
BODY_THIN = 0.09
BODY_THICK = 0.13
MATCHED_RENDER_OFFSET = 1.0       # fine_render_offset's most for a bulky object drawn at the matched level
BISECTIONS = 12                   # keep_body's steps: the level to 2^-12 of the raise
RAY_CHUNK = 8192


def view_cameras(settings, device="cpu"):
    """The views the level is matched on: the run's mean distance and field of view."""
    from backend.engine.cameras import orbit_cameras

    distance = 0.5 * (settings.distance_min + settings.distance_max)
    fovy = 0.5 * (settings.fovy_min + settings.fovy_max)
    step = 360.0 / VIEW_AZIMUTHS
    return [orbit_cameras(el, [k * step + (0.5 * step if row % 2 else 0.0) for k in range(VIEW_AZIMUTHS)],
                          distance, fovy, device=device)
            for row, el in enumerate(VIEW_ELEVATIONS)]


def largest_density_along(grid: np.ndarray, origins: torch.Tensor, directions: torch.Tensor, *,
                          bound: float, t_near: float, t_far: float, samples: int = RAY_SAMPLES) -> torch.Tensor:
    """Float[Tensor, "R"]: the largest trilinear value of ``grid`` (indexed [x, y, z] over [-bound, bound]^3,
    as ``export.mesh.density_grid`` samples it) along each ray ``origins`` (R, 3) + t ``directions`` (R, 3),
    t in [t_near, t_far]; 0 outside the grid."""
    # grid_sample reads (D, H, W) = (z, y, x) and takes points as (x, y, z) in [-1, 1], corners aligned.
    volume = torch.from_numpy(np.ascontiguousarray(grid.transpose(2, 1, 0), dtype=np.float32))[None, None]
    volume = volume.to(origins.device)
    t = torch.linspace(t_near, t_far, samples, device=origins.device)
    out = []
    for o, d in zip(origins.split(RAY_CHUNK), directions.split(RAY_CHUNK)):
        points = (o[:, None] + t[None, :, None] * d[:, None]) / bound               # (n, S, 3)
        values = F.grid_sample(volume, points[None, None], align_corners=True, padding_mode="zeros")
        out.append(values[0, 0, 0].amax(-1))
    return torch.cat(out)


def level_covering(largest: torch.Tensor, covered: int) -> float:
    """The level that exactly ``covered`` of the rays, whose largest densities are ``largest``, exceed."""
    if covered <= 0:
        return math.inf
    ordered = largest.sort(descending=True).values
    return float(ordered[min(covered, ordered.numel() - 1)])


def silhouette_level(trainer, grid: np.ndarray, *, bound: float = 1.0) -> float:
    """The iso-level of ``grid`` (the coarse ``trainer``'s density, sampled as the export samples it) whose
    surface covers as many pixels of ``VIEWS`` as the field's renders do, within ``LEVEL_RANGE`` of the
    automatic level, taken as far as the object's ``body_weight``."""
    return matched_level(trainer, grid, bound=bound)[0]


def matched_level(trainer, grid: np.ndarray, *, bound: float = 1.0) -> tuple[float, float]:
    """``silhouette_level``, and the ``body_weight`` it was taken with."""
    from backend.engine.cameras import camera_rays
    from backend.export.mesh import auto_threshold

    automatic = auto_threshold(grid)
    modes = [(m, m.training) for m in (trainer.field, trainer.estimator)]
    trainer.field.eval(), trainer.estimator.eval()
    largest, covered = [], 0
    for cameras in view_cameras(trainer.s, device=trainer.device):
        origins, directions = camera_rays(cameras, VIEW_RESOLUTION)
        with torch.no_grad():
            opacity = trainer.renderer.render_image(origins, directions, shading="albedo",
                                                    bg_color=torch.ones_like(origins))["opacity"]
        covered += int((opacity >= COVERED_OPACITY).sum())
        distance = float(cameras.distance[0])
        reach = math.sqrt(3.0) * bound          # the grid's corners
        largest.append(largest_density_along(grid, origins.reshape(-1, 3), directions.reshape(-1, 3),
                                             bound=bound, t_near=max(0.0, distance - reach),
                                             t_far=distance + reach).cpu())
    for module, training in modes:
        module.train(training)
    level = level_covering(torch.cat(largest), covered)
    level = min(max(level, LEVEL_RANGE[0] * automatic), LEVEL_RANGE[1] * automatic)
    weight = body_weight(grid, automatic, bound=bound)
    level = automatic + weight * (level - automatic)
    return keep_body(grid, automatic, level), weight


def body_weight(grid: np.ndarray, automatic: float, *, bound: float = 1.0,
                thin: float = BODY_THIN, thick: float = BODY_THICK) -> float:
    """How much of the matched level an object takes, by its thickest part's half-thickness at the automatic level:
    0 up to ``thin``, 1 from ``thick``. Why: the match is one number for the whole object, and an object made of
    thin parts (legs, boards, walls) is where the level and the fine stage's thin-part inset would both correct the
    same excess; raised, a stool's legs came through the hand-over whole and the fine stage wore them through (CPU,
    seed 0: 0.747 -> 0.508), lowered, a mug's walls thickened (0.592 -> 0.556), while the bulky ones gain (a cube
    0.857 -> 0.924, a house 0.813 -> 0.872; results/quality/README.md, session 58)."""
    cell = 2.0 * bound / (grid.shape[0] - 1)
    deepest = float(ndimage.distance_transform_edt(grid > automatic).max()) * cell
    return float(np.clip((deepest - thin) / (thick - thin), 0.0, 1.0))


def largest_piece(solid: np.ndarray) -> int:
    """Cells in the largest face-connected piece of the boolean grid ``solid``: what the export keeps
    (``keep_components`` 1)."""
    labels, count = ndimage.label(solid)
    return int(np.bincount(labels.ravel())[1:].max()) if count else 0


def keep_body(grid: np.ndarray, automatic: float, level: float, keep: float = KEEP_VOLUME) -> float:
    """``level``, lowered towards ``automatic`` (by bisection) until the largest piece of the solid above it
    holds at least ``keep`` of the largest piece above ``automatic``: a raised level trims the skin, not the
    body. The largest piece, not the whole solid, because the export keeps that piece alone: a level that
    cuts a thin part through (a lamp post's pole, weaker than its head and foot) keeps most of the solid in
    two pieces and exports one (CPU, seed 1: volume 1.77 -> 0.58 of the truth, IoU 0.54 -> 0.32). A piece
    only shrinks as the level rises, so the bisection is sound."""
    base = largest_piece(grid > automatic)
    if level <= automatic or base == 0 or largest_piece(grid > level) >= keep * base:
        return float(level)
    low, high = automatic, level            # low keeps enough, high does not
    for _ in range(BISECTIONS):
        middle = 0.5 * (low + high)
        if largest_piece(grid > middle) >= keep * base:
            low = middle
        else:
            high = middle
    return float(low)


def keep_thin_parts(grid: np.ndarray, automatic: float, level: float, *, bound: float = 1.0,
                    thin: float = THIN_HALF_THICKNESS, thick: float = THICK_HALF_THICKNESS) -> np.ndarray:
    """``grid`` scaled up by ``level / automatic`` where the automatic level's solid is thin, so that its iso-surface
    at ``level`` is the raised level's on the thick parts and the automatic level's on the thin ones (blended
    between ``thin`` and ``thick`` half-thickness, scene units). Why: the raised level trims the soft skin a flat
    face or a bulky body grew, but a pole or a leg is all skin at 48 px renders, and trimmed, the fine stage
    wears it through (a lamp post, CPU, seed 1: 0.54 -> 0.32, its pole gone in the fine stage's 5 steps, the
    start still whole). A part's half-thickness near a point is the deepest inside distance within a window
    just wider than a thin part (a wider one would reach into the body a pole joins and trim the joint)."""
    if level <= automatic:
        return grid
    cell = 2.0 * bound / (grid.shape[0] - 1)
    depth = ndimage.distance_transform_edt(grid > automatic) * cell
    reach = int(np.ceil(thick / cell)) + 1
    depth = ndimage.maximum_filter(depth, size=2 * reach + 1, mode="nearest")
    weight = np.clip((thick - depth) / (thick - thin), 0.0, 1.0)
    return (grid * (1.0 + weight * (level / automatic - 1.0))).astype(grid.dtype)


class CoarseIso(NamedTuple):
    grid: np.ndarray          # the coarse density grid to draw (thin parts scaled: ``keep_thin_parts``)
    level: float              # its iso-level
    body_weight: float        # how much of the matched level the object took (0: the automatic level)


def coarse_iso(trainer, grid: np.ndarray, *, bound: float = 1.0) -> CoarseIso:
    """The coarse field's grid to draw and its iso-level, as the run's settings ask: ``mesh_threshold`` when
    given, else by ``mesh_level`` ("silhouette": the grid's thin parts kept at the automatic level)."""
    from backend.export.mesh import auto_threshold

    s = trainer.s
    if s.mesh_threshold is not None:
        return CoarseIso(grid, float(s.mesh_threshold), 0.0)
    automatic = auto_threshold(grid)
    if s.mesh_level == "silhouette":
        level, weight = matched_level(trainer, grid, bound=bound)
        return CoarseIso(keep_thin_parts(grid, automatic, level, bound=bound), level, weight)
    return CoarseIso(grid, automatic, 0.0)


def fine_render_offset(offset: float, weight: float) -> float:
    """The fine stage's render offset (``fine_render_offset``, betas) for a start drawn at the matched level with
    ``body_weight`` ``weight``: at most ``MATCHED_RENDER_OFFSET`` for a bulky object. Why: the offset makes up for a
    soft surface looking larger than it is, and was tuned (1.5) on starts at the automatic level, which draws a
    bulky object large already; on a start whose outline matches the renders, 1.5 grew the round solids by 3-10%
    (a torus 0.962 -> 0.902, a capsule 0.986 -> 0.949) and 1.0 holds them, while the thin props, which keep the
    automatic level, lose at 1.0 (a table 0.781 -> 0.710; CPU, seed 0, results/quality/README.md, session 58)."""
    return offset + weight * (min(offset, MATCHED_RENDER_OFFSET) - offset)
