"""A container that SDS drew filled, opened from the top when the coarse stage ends (the ``hollow`` setting).

Why: the built-in priors draw a mug, a bowl or a bucket as a filled solid (volume 2.5-3.8x the truth in every
run of record, results/quality/README.md), and SDS does not carve a cavity into a surface it has already drawn:
not with a prior that prefers the open cup by 9-19% (session 28), cameras from above or a filled-cup avoid
term (sessions 26-27); but started on an open shape it keeps the cavity (session 29). So the coarse result's own
solid (the exporter's auto threshold, the largest piece) is hollowed: every cell deeper than ``WALL`` inside it,
and everything of the solid above such a cell in its column (the opening), is emptied, which leaves walls and a
bottom ``WALL`` thick and a handle thinner than twice that solid. The field's density is then fitted to the
carved solid, its albedo held where the solid stays, and the run goes on (the fine stage, the export) from the
open cup. The cavity has the object's own proportions, not a template's: a generic open cylinder as the start
gained on the mug and lost the bowl (session 29). Written here because no library cuts a solid open along an
axis; scipy's Euclidean distance transform measures the depth.

Measured (session 34, CPU, seed 0; results/quality/README.md): opened after the coarse stage, with 0.05 walls, the
coarse mesh's IoU mug 0.279 -> 0.530, bowl 0.226 -> 0.538, bucket 0.389 -> 0.428, and 250 more SDS steps kept the
cavity (``results/quality/runs/2026-12-02-session34-hollow-carve-cpu.py``). Through the fine stage as the preset
runs it (coarse + fine): see ``WALL``.
"""

from __future__ import annotations

import numpy as np
import torch

# Wall and bottom thickness in scene units, as the coarse stage leaves them. The fine stage thins them (its start
# smoothed by fine.COARSE_SMOOTHING_CELLS, the thin-part inset at export): the preset's coarse + fine, CPU, seed 0,
# IoU mug / bowl / bucket with walls 0.05: 0.325 / 0.430 / - (the mug's volume 0.46 of the truth's), 0.07: 0.509 /
# 0.430 / 0.451, 0.08: 0.468 / 0.355 / 0.423; not opened: 0.277 / 0.224 / 0.39. The truth's walls are 0.03-0.04.
WALL = 0.07
GRID = 96                   # cells a side over the scene's box (2 units: ~0.02 a cell)
FIT_ITERATIONS = 300        # Adam steps fitting the density to the carved solid (mesh_init's rate and batch)
INSIDE_DENSITY = 50.0       # the carved solid's density target: opaque within ~0.05 units


def wanted(settings, prompt: str | None = None) -> bool:
    """Whether a run opens its result: ``hollow`` "on" / "off", or "auto": the built-in prior's hollow props
    (``Category.hollow``: the mug, the bowl, the bucket). ``prompt``: the run's prompt when the settings have
    none (an image job's, read from its picture)."""
    if settings.hollow != "auto":
        return settings.hollow == "on"
    if settings.model != "builtin":
        return False
    from backend.prior.catalogue import category, parse_prompt

    try:
        name, _ = parse_prompt(settings.prompt or prompt or "")
    except ValueError:
        return False
    return category(name).hollow


def cavity(solid: np.ndarray, wall_cells: float) -> np.ndarray:
    """Bool[ndarray, "X Y Z"] (z up): the part of ``solid`` to empty: cells deeper than ``wall_cells`` inside
    it, and the solid above them in each (x, y) column."""
    from scipy import ndimage

    deep = ndimage.distance_transform_edt(solid) > wall_cells
    return solid & (np.cumsum(deep, axis=2) > 0)


def open_cavity(trainer) -> float:
    """Hollow ``trainer``'s field from the top (see the module); returns the share of its solid emptied (0:
    nothing deep enough to open, the field untouched)."""
    from scipy import ndimage

    from backend.engine.mesh_init import refresh_occupancy
    from backend.export.mesh import auto_threshold, density_grid

    field, device, bound = trainer.field, trainer.device, trainer.renderer.bound
    field.eval()
    grid = density_grid(trainer.occupied_density, resolution=GRID, bound=bound, device=device)
    solid = grid > auto_threshold(grid)
    labels, n = ndimage.label(solid)
    if n > 1:                                   # the largest piece, as the export keeps
        solid = labels == 1 + int(np.argmax(ndimage.sum(solid, labels, range(1, n + 1))))
    cell = 2 * bound / (GRID - 1)
    emptied = cavity(solid, WALL / cell)
    if not emptied.any():
        field.train()
        return 0.0
    carved = torch.from_numpy(solid & ~emptied).to(device)
    axis = torch.linspace(-bound, bound, GRID, device=device)
    with torch.no_grad():
        # The albedo as it was on the cells that stay (and around them, where renders sample it).
        kept = torch.from_numpy(ndimage.binary_dilation(solid & ~emptied, iterations=2)).to(device)
        kept_points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)[kept]
        kept_albedo = field.albedo(kept_points)
    field.train()
    optimizer = torch.optim.Adam(field.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-15)
    generator = torch.Generator(device="cpu").manual_seed(0)
    target_inside = float(np.log1p(INSIDE_DENSITY))
    for _ in range(FIT_ITERATIONS):
        # Half the points uniform over the box, half in its middle where the object is.
        x = (torch.rand(4096, 3, generator=generator) * 2 - 1) * bound
        x[:2048] *= 0.6
        x = x.to(device)
        index = ((x + bound) / cell).round().long().clamp(0, GRID - 1)
        inside = carved[index[:, 0], index[:, 1], index[:, 2]].float()
        loss = ((torch.log1p(field.density(x)) - inside * target_inside) ** 2).mean()
        pick = torch.randint(0, kept_points.shape[0], (2048,), generator=generator).to(device)
        loss = loss + ((field.albedo(kept_points[pick]) - kept_albedo[pick]) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    refresh_occupancy(trainer)
    return float(emptied.sum() / solid.sum())
