"""Session 48: the GPU preset's fine-stage SDF grids of every prop (seeds 0-2, dumped on the device by
tools/device/grid_dump.py through tools/device/props_grids.sh) exported again on the CPU with export-time variants
(geometry only) and scored against the truth; a replay of the run's own settings scores as the run did (81 of 81
within 0.0001). `python <this file> VARIANT [PROMPT WORDS...]` with the grids in /work/s48/dev2/grids.
Variants: thin025 (the thin-part inset 0.025 for every prop), vb01 (session 47's vertical-board extra inset),
pl01/pl02 (an orientation-free plate detector: rejected before a full pass, it read a lamp post's pole as a plate).
Rows: runs/2026-12-04-session48-export-replay-props-gpu-grids.jsonl."""

import json, sys, glob, os
import numpy as np
import backend.export.mesh as M
from backend.bench.quality import score
from backend.engine import hollow
from backend.prior.catalogue import ground_truth
from backend.prior.catalogue import category

def load(path):
    z = np.load(path)
    return z["grid"].astype(np.float32)

def export_mesh(grid, prompt, thin=0.015, cav=0.02, flat=False, extra=None, keep=1, faces=20000):
    name = ground_truth(prompt).name
    try:
        is_hollow = category(name).hollow
    except Exception:
        is_hollow = False
    g = M.thin_inset(grid, inset=thin, bound=1.0)
    if extra is not None:
        try:
            g = extra(g, grid, hollow=is_hollow)
        except TypeError:
            g = extra(g, grid)
    g = M.cavity_inset(g, cav if is_hollow else 0.0, bound=1.0)
    if flat:
        g = M.flat_base(g, bound=1.0)
    v, f = M.surface_from_grid(g, 0.0, bound=1.0, keep_components=keep)
    v, f = M.simplify_mesh(v, f, faces)
    return M.to_glb(v, f)

def metrics(glb, prompt, seed):
    m = score(glb, prompt, seed, views=False)
    return {k: round(float(m[k]), 4) for k in ("iou", "iou_canonical", "volume_ratio", "chamfer", "normal_consistency")}

def thin02():
    return {'thin': 0.02}

import numpy as np

def thin025():
    return {'thin': 0.025}

def _planarity(grid, window=0.08):
    from scipy import ndimage
    cell = 2.0 / (grid.shape[0] - 1)
    gx, gy, gz = np.gradient(grid.astype(np.float32))
    norm = np.sqrt(gx * gx + gy * gy + gz * gz) + 1e-9
    band = (np.abs(grid) < 2 * cell).astype(np.float32)
    u = [gx / norm * band, gy / norm * band, gz / norm * band]
    size = 2 * int(round(window / cell)) + 1
    T = np.empty(grid.shape + (3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            T[..., i, j] = T[..., j, i] = ndimage.uniform_filter(u[i] * u[j], size)
    solid = grid > -cell
    out = np.zeros(grid.shape, np.float32)
    ev = np.linalg.eigvalsh(T[solid])            # ascending
    l1, l2 = ev[:, 2], ev[:, 1]
    out[solid] = (l1 - l2) / np.maximum(l1, 1e-9)
    return out

def plate(extra=0.01, lo=0.5, hi=0.8):
    def f(g, grid):
        import backend.export.mesh as M
        p = np.clip((_planarity(grid) - lo) / (hi - lo), 0, 1)
        # the extra only where thin_inset thins (its weight: thin parts), from a second thin_inset pass
        thinned = M.thin_inset(g, inset=extra, bound=1.0)
        return np.where(p > 0, g + (thinned - g) * p, g).astype(g.dtype)
    return f

def plate01():
    return {'extra': plate(0.01)}

def plate02():
    return {'extra': plate(0.02)}

def _run_length(mask, axis):
    m = np.moveaxis(mask, axis, -1)
    shape = m.shape
    m = m.reshape(-1, shape[-1])
    padded = np.pad(m, ((0, 0), (1, 0)))
    starts = m & ~padded[:, :-1]
    ids = np.cumsum(starts.ravel()) * m.ravel()
    out = np.bincount(ids)[ids]
    out[~m.ravel()] = 0
    return np.moveaxis(out.reshape(shape), -1, axis)

def vboard(extra):
    def f(g, grid):
        from scipy import ndimage
        solid = g > 0
        rx, ry = _run_length(solid, 0), _run_length(solid, 1)
        thin, wide = np.minimum(rx, ry), np.maximum(rx, ry)
        board = solid & (thin <= 4) & (wide >= 6)
        near = ndimage.binary_dilation(board, iterations=2)
        return np.where(near, g - extra, g).astype(g.dtype)
    return f

def vb01():
    return {'extra': vboard(0.01)}

def vb02():
    return {'extra': vboard(0.02)}

def _dir_runs(solid, d, cap=16):
    """Run length (cells) through the solid along 2D direction d=(dx,dy) in each z-slice, capped."""
    def shift(a, dx, dy):
        out = np.zeros_like(a)
        X, Y = a.shape[0], a.shape[1]
        xs_src = slice(max(0, -dx), X - max(0, dx)); xs_dst = slice(max(0, dx), X - max(0, -dx))
        ys_src = slice(max(0, -dy), Y - max(0, dy)); ys_dst = slice(max(0, dy), Y - max(0, -dy))
        out[xs_dst, ys_dst] = a[xs_src, ys_src]
        return out
    s = solid.astype(np.int16)
    f = s.copy(); b = s.copy()
    for _ in range(cap):
        f = s * (shift(f, d[0], d[1]) + 1)
        b = s * (shift(b, -d[0], -d[1]) + 1)
    return (f + b - 1) * s

def plate_weight(g, lo=1.7, hi=2.5, thin_cells=6):
    from scipy import ndimage
    solid = g > 0
    runs = [_dir_runs(solid, (1, 0)), _dir_runs(solid, (0, 1)),
            _dir_runs(solid, (1, 1)) * np.sqrt(2), _dir_runs(solid, (1, -1)) * np.sqrt(2)]
    runs = np.stack(runs).astype(np.float32)
    mn, mx = runs.min(0), runs.max(0)
    w = np.clip((mx / np.maximum(mn, 1) - lo) / (hi - lo), 0, 1) * (mn <= thin_cells) * solid
    return ndimage.maximum_filter(w.astype(np.float32), size=5)

def thin_inset_arr(inside, inset, bound=1.0):
    from scipy import ndimage
    import backend.export.mesh as M
    thin, thick, window = M.THIN_PART_RADIUS, M.THICK_PART_RADIUS, M.THICKNESS_WINDOW
    cell = 2.0 * bound / (inside.shape[0] - 1)
    reach = max(1, int(round(window / cell)))
    depth = ndimage.maximum_filter(inside, size=2 * reach + 1, mode="nearest")
    weight = np.clip((thick - depth) / (thick - thin), 0.0, 1.0)
    keep = M.MIN_HALF_THICKNESS_CELLS * cell
    imax = float(np.max(inset))
    near = int(np.ceil((imax + keep) / cell)) + 1
    core = ndimage.maximum_filter(inside, size=2 * near + 1, mode="nearest")
    room = np.clip(core - keep, 0.0, None)
    tip_ratio = core / np.maximum(depth, 1e-6)
    weight = weight * np.clip((tip_ratio - M.TIP_RATIO_LO) / (M.TIP_RATIO_HI - M.TIP_RATIO_LO), 0.0, 1.0)
    thinned = (inside - np.minimum(inset * weight, room)).astype(inside.dtype)
    return M._rejoin(thinned, inside, reach=int(np.ceil(imax / cell)) + 1)

def plateinset(extra, **kw):
    def f(g, grid, hollow=False):
        if hollow:
            return g
        first = M_thin(grid, 0.015)
        w = plate_weight(first, **kw)
        return thin_inset_arr(grid, 0.015 + extra * w)
    return f

def M_thin(grid, v):
    import backend.export.mesh as M
    return M.thin_inset(grid, inset=v, bound=1.0)

def pl01():
    return {'extra': plateinset(0.01)}

def pl02():
    return {'extra': plateinset(0.02)}

from multiprocessing import Pool

ROWS = {}
for l in open('/work/s48/dev2/props/quality.jsonl'):
    r = json.loads(l)
    if r['stages'] == 'coarse,fine':
        ROWS[(r['prompt'], r['seed'])] = r

def job(args):
    path, variant = args
    base = os.path.basename(path)[:-4]
    prompt, seed = base.rsplit('_', 1)[0].replace('_', ' '), int(base.rsplit('_', 1)[1])
    kw = globals()[variant]() if variant != 'base' else {}
    try:
        m = metrics(export_mesh(load(path), prompt, **kw), prompt, seed)
    except Exception as e:
        m = {'iou': 0.0, 'error': repr(e)}
    return {'prompt': prompt, 'seed': seed, 'variant': variant, 'row_iou': round(ROWS[(prompt, seed)]['iou'], 4), **m}

if __name__ == '__main__':
    variant = sys.argv[1]
    only = sys.argv[2:] 
    paths = sorted(glob.glob('/work/s48/dev2/grids/*.npz'))
    if only:
        paths = [p for p in paths if any(o in p for o in only)]
    import warnings; warnings.filterwarnings('ignore')
    with Pool(2) as pool:
        out = pool.map(job, [(p, variant) for p in paths])
    with open(f'/work/s48/replay_{variant}.jsonl', 'a') as f:
        for r in out:
            f.write(json.dumps(r) + '\n')
            print(json.dumps(r))
