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


def wanted(settings, prompt: str | None = None) -> bool:
    """Whether a run opens its result: ``hollow`` "on" / "off", or "auto": the built-in prior's hollow props
    (``Category.hollow``: the mug, the bowl, the bucket). ``prompt``: the run's prompt when the settings have
    none (an image job's, read from its picture)."""
    if settings.hollow != "auto":
        return settings.hollow == "on"
    from backend.prior.catalogue import prompt_category

    drawn = prompt_category(settings, prompt)
    return drawn is not None and drawn.hollow


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

    from backend.engine.mesh_init import fit_density_to_solid
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
    carved = solid & ~emptied
    axis = torch.linspace(-bound, bound, GRID, device=device)
    with torch.no_grad():
        # The albedo as it was on the cells that stay (and around them, where renders sample it).
        kept = torch.from_numpy(ndimage.binary_dilation(carved, iterations=2)).to(device)
        kept_points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)[kept]
        kept_albedo = field.albedo(kept_points)
    fit_density_to_solid(trainer, carved, iterations=FIT_ITERATIONS, albedo_points=kept_points,
                         albedo_values=kept_albedo)
    return float(emptied.sum() / solid.sum())
