"""A candidate export rule tried for thin props (not shipped: it helped the chair, hurt the barrel;
results/quality/runs/2026-11-29-thin-props-cpu.md)."""
import numpy as np

from backend.export.mesh import VISIBLE_DENSITY


def silhouette_threshold(density_grid: np.ndarray, *, bound: float = 1.0, opacity: float = 0.5,
                         candidates: int = 160) -> float:
    """Iso-level whose surface shows the silhouettes the field's own renders show.

    Seen along each grid axis, a ray is covered by the volume render where its opacity
    ``1 - exp(-sum(density) * dx)`` exceeds ``opacity``, and by the iso-surface at level L where the
    densest point on it exceeds L. The level is the geometric middle of the levels (log-spaced between
    VISIBLE_DENSITY and the grid's maximum) whose covered rays match the render's within 0.01 of the
    best intersection-over-union, summed over the three axes.
    Why: a field trained by SDS on low-resolution renders keeps thin parts (legs, blades, walls) as
    semi-transparent haze: each ray through a leg sums to the right opacity, but the density's plateau
    is low and wide, and ``auto_threshold`` (midway between the plateau and the surroundings) lands
    in the haze, one render pixel outside the surface the renders show: the exported chair, fence or
    sword had 2.5-9x the true volume (results/quality/runs/2026-11-29-thin-props-cpu.md). Matching the
    renders' silhouettes moves the level up through the haze for such fields and leaves it inside the
    wall of a dense, sharp one, where every level between haze and plateau matches equally well.
    """
    peak = float(density_grid.max())
    if peak <= VISIBLE_DENSITY:
        return VISIBLE_DENSITY
    dx = 2.0 * bound / (density_grid.shape[0] - 1)
    covered = [density_grid.sum(axis) * dx > -np.log(1.0 - opacity) for axis in range(3)]
    peaks = [density_grid.max(axis) for axis in range(3)]
    levels = np.exp(np.linspace(np.log(VISIBLE_DENSITY), np.log(peak), candidates))[:-1]
    scores = np.empty(len(levels))
    for i, level in enumerate(levels):
        inter = union = 0
        for seen, top in zip(covered, peaks):
            shown = top > level
            inter += np.count_nonzero(seen & shown)
            union += np.count_nonzero(seen | shown)
        scores[i] = inter / max(1, union)
    good = levels[scores >= scores.max() - 0.01]
    return float(np.sqrt(good.min() * good.max()))
