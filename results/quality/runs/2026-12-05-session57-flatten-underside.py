# Session 57 scratch script, kept as run: paths are the session's (/work/main, /work/s57, checkpoints in /work/s55 and /work/s57).
import numpy as np
from scipy import ndimage

def flatten_underside(inside, *, bound=1.0, spread_max=0.12, erode_cells=2, info=None):
    """inside: -sdf grid [x,y,z], z up, positive inside (the fine export's). A nearly flat underside (the bottoms of
    the footprint's inner columns within spread_max, 10th-90th percentile) made flat at their median height."""
    n = inside.shape[0]
    cell = 2.0 * bound / (n - 1)
    solid = inside > 0
    has = solid.any(2)
    if not has.any():
        return inside
    inner = ndimage.binary_erosion(has, iterations=erode_cells)
    if inner.sum() < 20:
        return inside
    bottom = solid.argmax(2)
    z = -bound + cell * np.arange(n)
    # each column's bottom surface where marching cubes puts it: between its first inside sample and the one under it
    below = np.clip(bottom - 1, 0, None)
    g1 = np.take_along_axis(inside, bottom[..., None], 2)[..., 0]
    g0 = np.take_along_axis(inside, below[..., None], 2)[..., 0]
    frac = np.where(bottom > 0, np.clip(-g0 / np.maximum(g1 - g0, 1e-9), 0.0, 1.0), 1.0)
    surface = z[below] + frac * cell
    heights = surface[inner]
    p10, p50, p90 = np.percentile(heights, [10, 50, 90])
    if info is not None:
        info.update(p10=p10, p50=p50, p90=p90)
    if p90 - p10 > spread_max:
        return inside
    zl = p50
    lowest = surface[has].min()
    section = solid[:, :, min(n - 1, int(round((zl + 0.03 + bound) / cell)))]
    if info is not None:
        info.update(lowest=lowest, section=section.sum() / has.sum())
    # a base is the object's bottom (not a seat over legs) and its widest part (not a ring's round underside)
    if zl - lowest > 0.06 or section.sum() < 0.8 * has.sum():
        return inside
    out = np.minimum(inside, (z - zl)[None, None, :])                  # cut what hangs below the base
    plug = inner[..., None] & (z[None, None, :] >= zl) & (z[None, None, :] <= surface[..., None] + cell)
    out = np.where(plug, np.maximum(out, np.minimum(z - zl, cell)[None, None, :]), out)   # fill the dents above it
    if info is not None:
        info.update(applied=True, zl=zl)
    return out.astype(inside.dtype)
