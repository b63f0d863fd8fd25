# Session 57 scratch script, kept as run: paths are the session's (/work/main, /work/s57, checkpoints in /work/s55 and /work/s57).
import numpy as np
from scipy import ndimage

def fill_underside_dents(grid, level, max_depth, *, bound=1.0, min_depth=0.03):
    """grid [x,y,z], z up, above level inside. Fill upward dents in the underside no deeper than max_depth."""
    cell = 2.0 * bound / (grid.shape[0] - 1)
    solid = grid > level
    has = solid.any(2)
    if not has.any():
        return grid
    nz = grid.shape[2]
    bottom = np.where(has, solid.argmax(2), nz).astype(np.float64)     # first solid index from below
    elev = -bottom                                                       # seen from below: a dent is a depression
    drain = ~has
    low = elev.min() - 1.0
    elev = np.where(drain, low, elev)
    # reconstruction by erosion (fill holes of a grey image): start high inside, at the image on the drains/border
    filled = np.full_like(elev, elev.max())
    edge = np.zeros_like(drain); edge[[0, -1], :] = True; edge[:, [0, -1]] = True
    fixed = drain | edge
    filled[fixed] = elev[fixed]
    while True:
        nxt = np.maximum(elev, ndimage.grey_erosion(filled, size=(3, 3)))
        nxt[fixed] = elev[fixed]
        if np.array_equal(nxt, filled):
            break
        filled = nxt
    depth = filled - elev                                                # cells to fill up from the bottom
    dent = (depth > 0) & has
    if not dent.any():
        return grid
    labels, n = ndimage.label(dent)
    deepest = ndimage.maximum(depth, labels, index=np.arange(1, n + 1))
    keep = np.zeros(n + 1, bool); deepest = np.asarray(deepest) * cell; keep[1:] = (deepest <= max_depth) & (deepest > min_depth)
    fill_cols = keep[labels]
    z = np.arange(nz)[None, None, :]
    new_bottom = bottom - depth
    add = fill_cols[..., None] & (z >= new_bottom[..., None]) & (z < bottom[..., None])
    out = grid.copy()
    out[add] = np.maximum(2.0 * level - grid[add], level + 1e-6 * (abs(level) + 1.0))
    return out
