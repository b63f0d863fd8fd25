"""Trained field -> textured GLB: marching cubes, cleanup, decimation, UV atlas, bake, glTF.

The field comes as two callables on world-space points (engine coordinates: Z up, front = +X,
object inside [-bound, bound]^3): ``density_fn(points[N,3]) -> [N]`` (non-negative density) and
``albedo_fn(points[N,3]) -> [N,3]`` in [0, 1]. Both may live on CUDA, so they are called in chunks
under ``torch.no_grad()`` on ``device`` and only their results come back to numpy.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional

import fast_simplification
import mcubes
import numpy as np
import torch
import trimesh
import xatlas
from PIL import Image
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from backend.export.raster import rasterize
from shared.settings import BASE_READS

DensityFn = Callable[[torch.Tensor], torch.Tensor]
AlbedoFn = Callable[[torch.Tensor], torch.Tensor]
ProgressFn = Callable[[str, float], None]

# Points per field call: large enough to keep a GPU busy, small enough for its memory.
CHUNK = 1 << 18
# Density below which nothing shows: even across the whole cube's diagonal (3.5 units) it makes
# under 0.4 % opacity. Auto-threshold ignores it, and a field without any is empty.
VISIBLE_DENSITY = 1e-3
# xatlas grows charts and parameterises each one as a whole, superlinearly in its size: a smooth
# 50k-face blob becomes ~8 huge charts and takes ~8 s; capping a chart at 1/64 of the surface
# takes ~1 s for a few percent of texture utilisation.
MAX_CHART_FRACTION = 1 / 64
# ``thin_inset``: half-thicknesses (scene units; objects are about 1 across) up to which a part is thin
# (the whole inset) and from which it is thick (none), and how far around a point its thickness is
# looked for (session 23, results/quality/runs/2026-11-30-session23-thin-inset-cpu.md).
THIN_PART_RADIUS = 0.03
THICK_PART_RADIUS = 0.12
THICKNESS_WINDOW = 0.2
# thin_inset leaves every part at least this many grid cells of half-thickness: thinner, marching cubes
# breaks it up and keep_components drops the pieces (GPU, 3 seeds, uncapped: a stool lost its legs, a
# lamp post its arm and lamp)
MIN_HALF_THICKNESS_CELLS = 1.0
# ``keep_largest_components``: a piece at least this share of the largest's faces, within this many grid cells of
# a kept piece, is kept with it (a part drawn detached by a gap, not a floater)
NEAR_PIECE_SHARE = 0.05
NEAR_PIECE_CELLS = 2.5
# A thin part is about as deep along its length as across it (a leg, a blade: their deepest point close by
# is nearly their deepest within THICKNESS_WINDOW); a tip or an edge of a thick part is not (a pyramid's
# apex deepens towards its body). thin_inset fades the inset out as that ratio falls from HI to LO.
TIP_RATIO_LO, TIP_RATIO_HI = 0.3, 0.6
# ``flat_base``: a base's inner bottoms (the footprint eroded by BASE_RIM_CELLS) lie within BASE_SPREAD (10th-90th
# percentile), the object's lowest point is within BASE_LOWEST of the base's height (a seat over legs is not a base),
# and the section BASE_SECTION_RISE above it covers BASE_SECTION of the footprint (a base is the widest part: a torus
# lying down or a barrel's bulge is not one).
BASE_RIM_CELLS = 2
BASE_SPREAD = 0.12
BASE_LOWEST = 0.06
BASE_SECTION_RISE = 0.03
BASE_SECTION = 0.8
# Where a flat base's height is read (``fine_base_read``, one of ``BASE_READS``). "rim": the median bottom of the
# footprint's outer BASE_RIM_CELLS, where sloped sides end. "bottoms": the same, except for an object with upright sides
# (its section BASE_UPRIGHT_RISE above the rim's read still covers BASE_UPRIGHT of the footprint: a cube, a crate, a
# cylinder; not a pyramid or a cone, 0.74-0.78), read at the BASE_QUANTILE quantile of every footprint column's bottom.
# Why: a field draws an upright object's bottom edges rounded over several centimetres, so its footprint's outer ring
# lies on the rounding and the rim reads the base 2.6-3.3 cm high, cutting the bottom off (CPU, seed 0, fine grids: red /
# white cube -0.374 / -0.367 against the truth's -0.400; two more cubes read 4-4.5 cm high were not cut at all,
# BASE_LOWEST). Its column bottoms are the base over most of the footprint, a skirt under it (up to ~40% of the
# columns) and the rounding and dents above it (up to ~30%): their 0.7 quantile reads the cubes -0.400 / -0.393. On
# sloped sides the rim is right and the quantile is not: under a pyramid or a cone the field's skirt can span most of
# the footprint (red pyramid: the rim 0.9 cm low, the quantile 2.1 cm low). results/quality/README.md, session 61.
BASE_QUANTILE = 0.7
BASE_UPRIGHT_RISE = 0.15
BASE_UPRIGHT = 0.9
# Dilation of the baked colours past chart borders in export_field: mip levels up to 2^4 texels
# per texel then read chart colours, not the gutter fill.
EXPORT_DILATION_PX = 16

# Engine (Z up, front +X) -> glTF (Y up, front +Z). Blender's glTF importer maps glTF (x, y, z) to
# Blender (x, -z, y), so engine (x, y, z) lands at Blender (y, -x, z): upright, and the engine's
# front (+X) faces Blender's front view (-Y). A cyclic axis permutation: det = +1, a proper
# rotation, so triangle winding (outward normals) survives the transform.
ENGINE_TO_GLTF = np.array([[0.0, 1.0, 0.0],
                           [0.0, 0.0, 1.0],
                           [1.0, 0.0, 0.0]])


class EmptyMeshError(ValueError):
    """Marching cubes found no surface; the message says the threshold and the density range."""

    def __init__(self, threshold: float, density_min: float, density_max: float):
        self.threshold, self.density_min, self.density_max = threshold, density_min, density_max
        super().__init__(f"no surface at density threshold {threshold:.4g}: the field's density "
                         f"ranges over [{density_min:.4g}, {density_max:.4g}]. "
                         + _empty_mesh_hint(threshold, density_min, density_max))


def _empty_mesh_hint(threshold, lo, hi):
    if hi <= VISIBLE_DENSITY:
        return "The field is empty: the optimisation produced nothing to export."
    if threshold >= hi:
        return f"Lower mesh_threshold below {hi:.4g}, or set it to auto."
    return f"The whole grid is denser than the threshold: raise mesh_threshold above {lo:.4g}."


@dataclass
class ExportResult:
    """The exported mesh; ``vertices``/``faces``/``uvs`` are the GLB's, in engine coordinates."""

    glb: bytes
    vertices: np.ndarray                       # float32 [V, 3]
    faces: np.ndarray                          # int32 [F, 3]
    threshold: float                           # the density iso-level used
    timings: dict                              # stage -> seconds
    uvs: Optional[np.ndarray] = None           # float32 [V, 2] (texture mode)
    texture: Optional[np.ndarray] = None       # uint8 [S, S, 3] (texture mode)
    vertex_colors: Optional[np.ndarray] = None  # float32 [V, 3] in [0, 1] (vertex-colour mode)

    @property
    def n_faces(self) -> int:
        return len(self.faces)

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)


# -- field sampling ------------------------------------------------------------------------------

def density_grid(density_fn: DensityFn, *, resolution: int, bound: float = 1.0,
                 device="cpu") -> np.ndarray:
    """Density at ``resolution^3`` points spanning [-bound, bound]^3, indexed [x, y, z]."""
    axis = torch.linspace(-bound, bound, resolution, device=device)
    grid = np.empty((resolution,) * 3, dtype=np.float32)
    slabs = max(1, CHUNK // resolution ** 2)     # whole x-slabs per call, built on the device
    with torch.no_grad():
        for i in range(0, resolution, slabs):
            xs = axis[i:i + slabs]
            points = torch.stack(torch.meshgrid(xs, axis, axis, indexing="ij"), dim=-1)
            density = density_fn(points.reshape(-1, 3))
            grid[i:i + len(xs)] = density.reshape(len(xs), resolution, resolution).float().cpu().numpy()
    return grid


def evaluate(fn: Callable[[torch.Tensor], torch.Tensor], points: np.ndarray, device="cpu") -> np.ndarray:
    """``fn`` at numpy points [N, 3], in chunks on ``device``; float32 numpy result."""
    out = []
    with torch.no_grad():
        for start in range(0, len(points), CHUNK):
            chunk = torch.from_numpy(np.ascontiguousarray(points[start:start + CHUNK], np.float32))
            out.append(fn(chunk.to(device)).float().cpu().numpy())
    return np.concatenate(out)


def albedo_at(albedo_fn: AlbedoFn, points: np.ndarray, device="cpu") -> np.ndarray:
    return np.clip(evaluate(albedo_fn, points, device), 0.0, 1.0)


# -- iso-surface ---------------------------------------------------------------------------------

def thin_inset(inside: np.ndarray, inset: float, *, bound: float = 1.0, thin: float = THIN_PART_RADIUS,
               thick: float = THICK_PART_RADIUS, window: float = THICKNESS_WINDOW) -> np.ndarray:
    """A signed-distance grid (``inside`` = -sdf, positive inside, indexed [x, y, z] over [-bound,
    bound]^3) with its thin parts' surface moved ``inset`` inwards, its thick parts' left in place.

    Why: a field optimised through renders of a few dozen pixels draws every part at least about a
    render pixel thick, so a blade, leg or board thinner than that comes out 2-3x its volume, while a
    part many pixels thick sits where it should. A part's thickness near a point is taken as the
    deepest inside distance within ``window`` of it (a half-thickness): the full inset at or below
    ``thin``, none from ``thick`` on, linear between. No part is thinned below MIN_HALF_THICKNESS_CELLS
    of half-thickness, and a part cut off at a neck gets the neck back (``_rejoin``), so none breaks off;
    tips and edges of thicker bodies (deeper within the window than close by: TIP_RATIO_LO/HI) keep theirs.
    GPU, 83 prompts x 3 seeds, inset 0.015 (the built-in preset's since session 24): props' mean IoU
    0.594 -> 0.618 (sword 0.34 -> 0.49, signpost 0.33 -> 0.52, chair 0.37 -> 0.48), solids unchanged,
    albedo error +0.003 (a thinned part's surface moves into its colour field); results/quality/README.md.
    Not a library operation: a morphological erosion would thin the thick parts too."""
    if inset <= 0.0:
        return inside
    from scipy import ndimage

    cell = 2.0 * bound / (inside.shape[0] - 1)
    reach = max(1, int(round(window / cell)))
    depth = ndimage.maximum_filter(inside, size=2 * reach + 1, mode="nearest")   # separable: a box, fast
    weight = np.clip((thick - depth) / (thick - thin), 0.0, 1.0)
    # Never below the thinnest part the grid holds together. The part's own half-thickness is its deepest
    # point close by: a window just wider than the parts at risk (not ``depth``'s, which near a joint
    # reaches into the thick part it joins and would let the joint be cut through).
    keep = MIN_HALF_THICKNESS_CELLS * cell
    near = int(np.ceil((inset + keep) / cell)) + 1
    core = ndimage.maximum_filter(inside, size=2 * near + 1, mode="nearest")
    room = np.clip(core - keep, 0.0, None)
    tip_ratio = core / np.maximum(depth, 1e-6)          # ~1 along a leg or blade, small at a body's tip
    weight = weight * np.clip((tip_ratio - TIP_RATIO_LO) / (TIP_RATIO_HI - TIP_RATIO_LO), 0.0, 1.0)
    thinned = (inside - np.minimum(inset * weight, room)).astype(inside.dtype)
    return _rejoin(thinned, inside, reach=int(np.ceil(inset / cell)) + 1)


def seal_pores(grid: np.ndarray, level: float, radius: float, *, bound: float = 1.0) -> np.ndarray:
    """``grid`` (indexed [x, y, z] over [-bound, bound]^3, values above ``level`` inside: a density grid, or
    -sdf at level 0) with the hollows hidden inside the object filled: the air a ball of ``radius`` (scene
    units) cannot reach from outside, less the last ``ceil(radius / 2) + 1`` cells of any pore into them.

    Why: SDS only ever sees an object's outside, and nothing holds the density of its inside up. A red cube
    made from one face-on picture came out a shell over caverns that open to the air through pits a grid cell
    or two wide (genus 5-12; CPU, the image preset with the shape prior, seed 1: 0.72 of the truth's volume,
    IoU 0.61); marching cubes draws the caverns' walls as surface, so the mesh carries hidden faces, a
    printer or a boolean sees a sponge, and ``thin_inset`` takes the shell over a cavern for a thin part. A
    plain ``binary_fill_holes`` misses caverns that a pit opens to the air. The air a ball of ``radius``
    reaches is the opening of the air; what it cannot reach of a concave corner of the outside (a fillet
    about 0.4 ``radius`` deep) is given back by growing the reached air that many cells through the air, so
    the outer shape is unchanged and only hollows behind necks narrower than ``2 radius`` are filled (a
    cup's mouth, a handle's loop, the gap between a chair's legs are wider). A filled cell's value is its
    own reflected through ``level``, so marching cubes closes the pore where it opens. Not a library
    operation: morphological closing would round the concave edges of the outside as well."""
    cell = 2.0 * bound / (grid.shape[0] - 1)
    r = radius / cell
    solid = grid > level
    if r < 1.0 or not solid.any():
        return grid
    # Only the box around the object (and a margin of air wider than the ball) is worked on: a fine export
    # grid is large, the object a part of it.
    margin = int(np.ceil(r)) + 2
    nz = np.nonzero(solid)
    lo = [max(int(a.min()) - margin, 0) for a in nz]
    hi = [min(int(a.max()) + margin + 1, n) for a, n in zip(nz, grid.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    air = np.pad(~solid[box], margin, constant_values=True)
    # The opening of the air by a ball: cells at least r from the solid, grown back by r.
    centres = ndimage.distance_transform_edt(air) > r
    reached = ndimage.distance_transform_edt(~centres) <= r
    labels, _ = ndimage.label(reached)
    border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(),
                                       labels[:, :, [0, -1]].ravel()]))
    outside = np.isin(labels, border[border > 0])
    outside = ndimage.binary_dilation(outside, np.ones((3, 3, 3), bool), iterations=int(np.ceil(r / 2)) + 1,
                                      mask=air)
    hidden = (air & ~outside)[margin:-margin, margin:-margin, margin:-margin]
    if not hidden.any():
        return grid
    out = grid.copy()
    out[box][hidden] = np.maximum(2.0 * level - grid[box][hidden], level + 1e-6 * (abs(level) + 1.0))
    return out


CAVITY_CRACK_CELLS = 2          # container_cavity: gaps in a wall up to about twice this many cells are closed
MIN_WALL_CELLS = 2              # cavity_inset leaves a wall at least this many grid samples thick


def container_cavity(solid: np.ndarray) -> np.ndarray:
    """Bool[ndarray, "X Y Z"] (z up): the air a container's walls enclose, slice by horizontal slice (the holes
    of each z slice of ``solid``). A cup's inside is a hole in every slice its wall rings; the air around a
    handle or over a rim is not (a handle's loop stands upright: a horizontal slice cuts it into blobs)."""
    from scipy import ndimage

    cavity = np.zeros_like(solid)
    for k in range(solid.shape[2]):
        if solid[:, :, k].any():
            # closed first: a wall with a crack a cell or two wide still rings its cavity
            ring = ndimage.binary_closing(solid[:, :, k], iterations=CAVITY_CRACK_CELLS)
            cavity[:, :, k] = ndimage.binary_fill_holes(ring) & ~ring
    return cavity


def cavity_inset(inside: np.ndarray, inset: float, *, bound: float = 1.0) -> np.ndarray:
    """A signed-distance grid (``inside`` = -sdf, positive inside, indexed [x, y, z] over [-bound, bound]^3)
    with the surface a container's cavity (``container_cavity``) faces moved ``inset`` into its walls and
    bottom, the outside left where it is; a grid with no cavity comes back unchanged.

    Why: a cup's wall comes out of the fine stage about twice the truth's 0.03-0.04, and the excess is on the
    inside: its outer surface is what the renders' silhouettes pin (GPU preset on the CPU, seed 0: a mug's wall
    0.219-0.266 from the axis against the truth's 0.242-0.273; a bowl's inner surface 0.02-0.03 too deep). The
    symmetric ``thin_inset`` cannot fix that: it moves the outside in by as much (and stops a grid cell short of
    a wall that thin), and a finer grid that lets it thin further lost IoU (mug 0.45 -> 0.39, bowl 0.42 -> 0.34
    at 192^3, session 47). So the wall cells nearer the cavity than the outside air get, as their value, their
    distance to the cavity's face less the inset (where that is lower than their own); a wall keeps
    MIN_WALL_CELLS grid samples. GPU preset, v9d, seeds 0-2, inset 0.02: bowl 0.39-0.42 -> 0.43-0.48, mug 0.39-0.45 ->
    0.43-0.50 (results/quality/README.md, session 47). Not a library operation: it needs to know which side of a
    wall is the inside of a container."""
    if inset <= 0.0:
        return inside
    from scipy import ndimage

    solid = inside > 0
    cavity = container_cavity(solid)
    if not cavity.any():
        return inside
    cell = 2.0 * bound / (inside.shape[0] - 1)
    outside = ~solid & ~cavity

    def face_distance(air: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each cell's distance to the nearest cell of ``air`` (cells), and to the faces of that air (scene
        units): less how far that cell lies from the face (its own value, within a cell of it, where the field
        is a signed distance; the distance transform alone is off by up to a cell)."""
        cells, nearest = ndimage.distance_transform_edt(~air, return_indices=True)
        return cells, cells * cell - np.clip(-inside[tuple(nearest)], 0.0, cell)

    _, to_inner = face_distance(cavity)
    from_outside, to_outer = face_distance(outside)
    # Only cells more than MIN_WALL_CELLS from the outside air move, so a wall keeps that many grid samples
    # through it: a cap on the estimated thickness (to_inner + to_outer >= two cells) still let walls of the CPU
    # preset's mug, thinner than the GPU's, fall to one sample and open holes (session 47).
    inner_side = solid & (to_inner < to_outer) & (from_outside > MIN_WALL_CELLS)
    moved = (to_inner - inset).astype(inside.dtype)
    return np.where(inner_side, np.minimum(inside, moved), inside)


def bottom_surface(inside: np.ndarray, *, bound: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(Bool[ndarray, "X Y"] the columns with solid, Float[ndarray, "X Y"] the height of each one's lowest surface,
    where marching cubes puts it: between its first inside sample and the one under it) of the grid ``inside``
    (-sdf, positive inside, indexed [x, y, z] over [-bound, bound]^3)."""
    n = inside.shape[2]
    cell = 2.0 * bound / (n - 1)
    solid = inside > 0
    has = solid.any(2)
    first = solid.argmax(2)
    under = np.clip(first - 1, 0, None)
    above = np.take_along_axis(inside, first[..., None], 2)[..., 0]
    below = np.take_along_axis(inside, under[..., None], 2)[..., 0]
    frac = np.where(first > 0, np.clip(-below / np.maximum(above - below, 1e-9), 0.0, 1.0), 1.0)
    return has, -bound + cell * under + frac * cell


def base_height(inside: np.ndarray, *, bound: float = 1.0, read: str = "rim") -> float | None:
    """The height of the flat base the solid ``inside`` stands on (read as ``read`` says: ``BASE_READS``), or None:
    no nearly flat underside that is both the object's lowest and its widest part (``BASE_*``)."""
    found = _flat_underside(inside, bound=bound, read=read)
    return None if found is None else found[0]


def _flat_underside(inside: np.ndarray, *, bound: float = 1.0, read: str = "rim"):
    """(base height, Bool[ndarray, "X Y"] the footprint's inner columns, Float[ndarray, "X Y"] each column's bottom
    surface) of ``base_height``'s base, or None."""
    if read not in BASE_READS:
        raise ValueError(f"fine_base_read must be one of {', '.join(BASE_READS)}, got {read!r}")
    has, surface = bottom_surface(inside, bound=bound)
    inner = ndimage.binary_erosion(has, iterations=BASE_RIM_CELLS)
    if inner.sum() < 20:
        return None
    p10, p90 = np.percentile(surface[inner], [10, 90])
    if p90 - p10 > BASE_SPREAD:
        return None
    # Not the inner bottoms' median: inside the rim a field draws a skirt under the base and dents up into it (no
    # camera sees there). The rim's median bottom is where sloped sides (a pyramid's, a cone's) end; "bottoms" reads
    # an object with upright sides (a cube's, a crate's) at its column bottoms instead (BASE_QUANTILE says why).
    base = float(np.median(surface[has & ~inner]))
    if read == "bottoms" and _section_share(inside, base + BASE_UPRIGHT_RISE, has, bound) >= BASE_UPRIGHT:
        base = float(np.quantile(surface[has], BASE_QUANTILE))
    if base - surface[has].min() > BASE_LOWEST:
        return None
    if _section_share(inside, base + BASE_SECTION_RISE, has, bound) < BASE_SECTION:
        return None
    return base, inner, surface


def _section_share(inside: np.ndarray, height: float, footprint: np.ndarray, bound: float) -> float:
    """The share of the footprint (Bool[ndarray, "X Y"]) that the solid's horizontal section at ``height`` covers."""
    cell = 2.0 * bound / (inside.shape[0] - 1)
    level = int(np.clip(round((height + bound) / cell), 0, inside.shape[2] - 1))
    return float((inside[:, :, level] > 0).sum() / max(1, footprint.sum()))


def flat_base(inside: np.ndarray, *, bound: float = 1.0, read: str = "rim") -> np.ndarray:
    """A signed-distance grid (``inside`` = -sdf, positive inside, indexed [x, y, z] over [-bound, bound]^3)
    with its underside made flat at its base's height (``base_height``): what hangs under it cut off, the dents
    up into it filled. Unchanged when it has no flat base.

    Why: cameras from 10 degrees below the horizon up see the underside of a flat base edge-on or not at all, so
    SDS leaves what the field drew there: CPU, seed 0, a purple cone's base is a disc dented 0.01-0.08 up into the
    cone around a ring hanging 0.04 under it, normal consistency 0.79 over 36% of its surface, its sides 0.995;
    a pyramid's extra volume is a skirt under its base (results/quality/README.md, sessions 39 and 57). Where the
    base is is read from its rim, where the sides the cameras see end (under upright sides, with ``read`` "bottoms", from
    its column bottoms: BASE_QUANTILE says why). Session 38's rule (cut a dome that grows
    from a point) found no base under the GPU's skirts and read a rock's bottom as a dome. Not a library
    operation: it is a judgement about this project's fields."""
    found = _flat_underside(inside, bound=bound, read=read)
    if found is None:
        return inside
    base, inner, surface = found
    cell = 2.0 * bound / (inside.shape[0] - 1)
    z = (-bound + cell * np.arange(inside.shape[2]))[None, None, :]
    out = np.minimum(inside, z - base)                                              # the skirt cut
    dent = inner[..., None] & (z >= base) & (z <= surface[..., None] + cell)
    out = np.where(dent, np.maximum(out, np.minimum(z - base, cell)), out)          # the dents filled
    return out.astype(inside.dtype)


def _rejoin(thinned: np.ndarray, inside: np.ndarray, reach: int) -> np.ndarray:
    """``thinned`` with the original values back where thinning cut a part off the largest piece it was
    joined to: the neck between them (inside before, within ``reach`` cells of both; ``reach`` doubled
    until the parts are joined, as far as the neck is long). Why: a joint can be thinner than the parts
    it joins (a stool's leg under its seat, CPU seed 2: the seat alone was kept, IoU 0.46 -> 0.08), which
    no per-point cap sees."""
    from scipy import ndimage

    out = thinned
    whole, _ = ndimage.label(inside > 0)                 # the pieces before thinning
    for _ in range(6):
        pieces, count = ndimage.label(out > 0)
        if count <= 1:
            return out
        sizes = np.bincount(pieces.ravel())[1:]
        largest = pieces == 1 + int(np.argmax(sizes))
        cut_off = (pieces > 0) & ~largest & np.isin(whole, np.unique(whole[largest]))   # once one with it
        if not cut_off.any():
            return out
        neck = (ndimage.binary_dilation(largest, iterations=reach)
                & ndimage.binary_dilation(cut_off, iterations=reach) & (inside > 0))
        out = np.where(neck, inside, out)
        reach *= 2
    return out


def auto_threshold(density_grid: np.ndarray) -> float:
    """Iso-level for marching cubes, chosen from the density values alone.

    Rule: split the visible voxels (density > VISIBLE_DENSITY) into "object" and "surroundings"
    with Otsu's method on log-density; the level is halfway between the object's density-weighted
    median (half of its mass is denser) and the surroundings' median (invisible voxels count as
    0): the middle of the wall between the two, where the renders put the surface.
    Why: a trained NeRF is a plateau of high density (tens to hundreds, varying run to run) in
    surroundings that are mostly empty but may hold haze, floaters and a softplus background.
    Otsu on log-density separates the two whatever fraction of the cube each fills. Weighting by
    density finds the plateau even on small or thin objects, whose voxels are mostly soft wall
    (a plain median lands in the wall and bloats them), and a few hot voxels hold too little mass
    to move it. The midpoint follows the haze as well as the plateau. The field mean
    (threestudio's "auto", stable-dreamfusion's min(mean, 10)) instead shrinks with the object's
    volume fraction and sinks into the haze for small objects. A grid with nothing visible gets
    VISIBLE_DENSITY, which gives an empty mesh.
    """
    visible = density_grid[density_grid > VISIBLE_DENSITY]
    if visible.size == 0:
        return VISIBLE_DENSITY
    split = float(np.exp(_otsu_split(np.log(visible))))
    return 0.5 * (_mass_median(visible[visible >= split]) + _surroundings_median(density_grid, visible, split))


def _mass_median(densities: np.ndarray) -> float:
    """The density that splits the total mass in half (density-weighted median)."""
    ordered = np.sort(densities)
    mass = np.cumsum(ordered, dtype=np.float64)
    return float(ordered[np.searchsorted(mass, 0.5 * mass[-1])])


def _surroundings_median(grid: np.ndarray, visible: np.ndarray, split: float) -> float:
    """Median of the voxels below ``split``, counting the (many) invisible ones as 0 instead of
    gathering them; 0 when there are none (a constant, visible grid)."""
    below = visible[visible < split]
    invisible = grid.size - visible.size
    rank = (below.size + invisible) // 2 - invisible
    return float(np.partition(below, rank)[rank]) if 0 <= rank < below.size else 0.0


def _otsu_split(values: np.ndarray, bins: int = 256) -> float:
    """The value that best splits ``values`` into two classes (max between-class variance)."""
    hist, edges = np.histogram(values, bins)
    mids = 0.5 * (edges[:-1] + edges[1:])
    n0 = np.cumsum(hist)[:-1]                  # class sizes and sums when splitting after bin k
    s0 = np.cumsum(hist * mids)[:-1]
    n1, s1 = hist.sum() - n0, (hist * mids).sum() - s0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = n0 * n1 * (s0 / n0 - s1 / n1) ** 2
    return float(edges[1 + np.argmax(np.nan_to_num(between, nan=-1.0))])


def surface_from_grid(grid: np.ndarray, threshold: float, *, bound: float = 1.0,
                      keep_components: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of ``grid`` at ``threshold`` -> (vertices float32 [V,3] world, faces int32 [F,3]).

    PyMCubes treats values above the iso-level as inside and winds triangles counter-clockwise
    seen from outside for an [x, y, z]-indexed grid, so the faces already point outward.
    """
    vertices, faces = mcubes.marching_cubes(grid, float(threshold))
    if len(faces) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    vertices = vertices * (2.0 * bound / (grid.shape[0] - 1)) - bound
    return keep_largest_components(vertices.astype(np.float32), faces.astype(np.int32), keep_components,
                                   cell=2.0 * bound / (grid.shape[0] - 1))


def keep_largest_components(vertices: np.ndarray, faces: np.ndarray, keep: int, *, cell: float | None = None):
    """Drop floaters: keep the ``keep`` connected pieces with the most faces, and with ``cell`` (the grid's
    spacing) every piece of at least ``NEAR_PIECE_SHARE`` of the largest's faces that comes within
    ``NEAR_PIECE_CELLS`` cells of a kept one: a part the field drew detached by a gap a cell wide is a part
    of the object, not a floater (a lamp post's head a cell above its pole, CPU, seed 1, was dropped:
    IoU 0.37). Floaters are small or far."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])),
                       shape=(len(vertices),) * 2)
    n_components, labels = connected_components(graph, directed=False)
    if n_components <= keep:
        return vertices, faces
    face_label = labels[faces[:, 0]]
    counts = np.bincount(face_label, minlength=n_components)
    order = np.argsort(counts)[::-1]
    kept = list(order[:keep])
    if cell is not None:
        from scipy.spatial import cKDTree

        candidates = [c for c in order[keep:] if counts[c] >= NEAR_PIECE_SHARE * counts[order[0]]]
        while candidates:                     # a piece near a piece kept by this rule is near too
            tree = cKDTree(vertices[np.isin(labels, kept)])
            near = [c for c in candidates
                    if np.isfinite(tree.query(vertices[labels == c], distance_upper_bound=NEAR_PIECE_CELLS * cell)[0]).any()]
            if not near:
                break
            kept += near
            candidates = [c for c in candidates if c not in near]
    return compact(vertices, faces[np.isin(face_label, kept)])


def compact(vertices: np.ndarray, faces: np.ndarray):
    """Remove vertices no face uses and renumber the faces."""
    used, remapped = np.unique(faces, return_inverse=True)
    return vertices[used], remapped.reshape(faces.shape).astype(np.int32)


def extract_mesh(density_fn: DensityFn, *, resolution: int = 256, bound: float = 1.0,
                 threshold: float | None = None, keep_components: int = 1,
                 device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """Density grid -> marching cubes -> floaters removed. ``threshold=None``: ``auto_threshold``.
    An empty field gives empty arrays."""
    grid = density_grid(density_fn, resolution=resolution, bound=bound, device=device)
    level = auto_threshold(grid) if threshold is None else threshold
    return surface_from_grid(grid, level, bound=bound, keep_components=keep_components)


# -- mesh processing ----------------------------------------------------------------------------

def simplify_mesh(vertices: np.ndarray, faces: np.ndarray, face_budget: int):
    """Quadric decimation down to at most ``face_budget`` faces; unchanged if already under it."""
    if len(faces) <= face_budget:
        return vertices, faces
    v, f = fast_simplification.simplify(vertices, faces, target_count=face_budget)
    return compact(v.astype(np.float32), f)


def unwrap_uv(vertices: np.ndarray, faces: np.ndarray, *, texture_size: int = 1024, padding: int = 4):
    """xatlas UV atlas -> (vertices, faces, uvs float32 [V, 2]); vertices are split at seams.

    Decimate first: xatlas is superlinear in mesh and chart size. ``padding`` texels (in xatlas's
    atlas, which it sizes to roughly ``texture_size``) separate charts so that bilinear filtering
    never mixes two charts. UVs follow the OBJ/trimesh convention (v = 0 at the image bottom).
    """
    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices.astype(np.float32), faces.astype(np.uint32))
    charts = xatlas.ChartOptions()
    charts.max_chart_area = float(trimesh.triangles.area(vertices[faces]).sum() * MAX_CHART_FRACTION)
    packing = xatlas.PackOptions()
    packing.resolution = texture_size
    packing.padding = padding
    atlas.generate(charts, packing)
    vmap, new_faces, uvs = atlas[0]
    return vertices[vmap], new_faces.astype(np.int32), uvs.astype(np.float32)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted smooth normals [V, 3], every one of unit length. Copies of a point (UV seams
    split vertices) share one normal, so seams don't show in the shading.

    A point whose faces have no area, or cancel out, or that no face uses, has no normal of its
    own: it gets the direction from the mesh centre instead (+Z at the centre itself). glTF
    requires unit normals (the Khronos validator rejects zero ones: ACCESSOR_VECTOR3_NON_UNIT), and
    such a point shades nothing anyway."""
    v = vertices.astype(np.float64)
    _, point = np.unique(v, axis=0, return_inverse=True)
    point = point.ravel()
    face_n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    summed = np.zeros((point.max() + 1, 3))
    for corner in range(3):
        np.add.at(summed, point[faces[:, corner]], face_n)
    n = summed[point]
    length = np.linalg.norm(n, axis=1, keepdims=True)
    scale = np.abs(v).max() if len(v) else 1.0
    none = length[:, 0] <= 1e-12 * max(scale, 1e-30) ** 2
    if none.any():
        outward = v[none] - 0.5 * (v.min(axis=0) + v.max(axis=0))
        outward[np.linalg.norm(outward, axis=1) <= 1e-12 * max(scale, 1e-30)] = (0.0, 0.0, 1.0)
        n[none], length[none] = outward, np.linalg.norm(outward, axis=1, keepdims=True)
    return (n / length).astype(np.float32)


# -- texture --------------------------------------------------------------------------------------

def sample_bilinear(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup [K, C] in a float texture [H, W, C] at ``uv`` [K, 2] (OBJ convention: v = 0
    at the image bottom), texel centres at ((i + 0.5) / W, (j + 0.5) / H), as glTF viewers sample.

    Edges: clamp to edge. Past the outermost texel centres (the outer half texel, and any uv
    outside [0, 1]) the edge texels' colour is used, as scipy's ``map_coordinates(mode="nearest")``
    and glTF's CLAMP_TO_EDGE do; a one-texel-wide texture works. The GLB leaves the wrap mode at
    glTF's default (REPEAT), which blends the opposite edge in that outer half texel; that makes no
    difference for baked textures, whose charts stay clear of the border (xatlas padding) and whose
    empty texels hold the nearest chart colour. Used by the turntable and the quality metrics.
    """
    h, w = texture.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def bake_texture(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, albedo_fn: AlbedoFn,
                 size: int = 1024, device="cpu", padding: int = 4) -> np.ndarray:
    """Albedo texture uint8 [size, size, 3] for a UV-mapped mesh.

    Each texel whose centre lies in a UV triangle is mapped through its barycentrics to the 3D
    point on that triangle, where ``albedo_fn`` gives its colour. Texels up to ``padding`` pixels
    outside the charts take the nearest chart texel's colour (so bilinear filtering and mip-maps
    at chart borders read the surface, not the background); the rest get the mean colour.
    """
    corners = uvs[faces].astype(np.float64)
    texel_xy = np.stack([corners[..., 0] * size, (1.0 - corners[..., 1]) * size], axis=-1)
    frags = rasterize(texel_xy, size, size)
    points = np.einsum("kc,kcd->kd", frags.bary, vertices[faces[frags.triangle]].astype(np.float64))
    image = np.zeros((size * size, 3), np.float32)
    image[frags.pixel] = albedo_at(albedo_fn, points, device)
    covered = np.zeros(size * size, bool)
    covered[frags.pixel] = True
    image = _fill_gutters(image.reshape(size, size, 3), covered.reshape(size, size), padding)
    return (image * 255.0 + 0.5).astype(np.uint8)


def _fill_gutters(image: np.ndarray, covered: np.ndarray, padding: int) -> np.ndarray:
    distance, (rows, cols) = ndimage.distance_transform_edt(~covered, return_indices=True)
    filled = image[rows, cols]
    filled[distance > padding] = image[covered].mean(axis=0)
    return filled


# -- glTF -----------------------------------------------------------------------------------------

def to_glb(vertices: np.ndarray, faces: np.ndarray, *, uvs: np.ndarray | None = None,
           texture: np.ndarray | None = None, vertex_colors: np.ndarray | None = None) -> bytes:
    """A GLB (glTF Y-up) of an engine-space mesh, with a matte PBR material.

    Texture mode: ``uvs`` [V, 2] + ``texture`` uint8 [S, S, 3]. Vertex-colour mode:
    ``vertex_colors`` float [V, 3] in [0, 1], written as COLOR_0. The material is set explicitly
    (white base colour factor, metallic 0, roughness 1, double-sided): trimesh's default for an
    image is a SimpleMaterial with a 0.4 grey factor and no metallic factor, which glTF reads as
    fully metallic, i.e. dark in Blender. Smooth normals are written, or Blender shades flat.
    """
    if (uvs is None) != (texture is None):
        raise ValueError("uvs and texture go together")
    if vertex_colors is not None and len(vertex_colors) != len(vertices):
        raise ValueError(f"{len(vertex_colors)} vertex colours for {len(vertices)} vertices")
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=None if texture is None else Image.fromarray(texture),
        baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0, roughnessFactor=1.0,
        doubleSided=True)
    visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    if vertex_colors is not None:
        rgb = np.clip(np.asarray(vertex_colors) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        visual.vertex_attributes["color"] = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1)
    mesh = trimesh.Trimesh(vertices=vertices @ ENGINE_TO_GLTF.T, faces=faces,
                           vertex_normals=vertex_normals(vertices, faces) @ ENGINE_TO_GLTF.T,
                           visual=visual, process=False)
    return trimesh.exchange.gltf.export_glb(mesh, include_normals=True, tree_postprocessor=_set_buffer_view_targets)


# glTF bufferView.target values (WebGL buffer binding points).
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


def _set_buffer_view_targets(tree: dict) -> None:
    """Mark the buffer views of vertex attributes and of indices with their GPU buffer kind, as the
    glTF spec asks of vertex and index data (trimesh leaves ``target`` out: the Khronos validator's
    BUFFER_VIEW_TARGET_MISSING). Image buffer views keep no target."""
    accessors, views = tree.get("accessors", []), tree.get("bufferViews", [])
    for mesh in tree.get("meshes", []):
        for primitive in mesh["primitives"]:
            for accessor in primitive.get("attributes", {}).values():
                views[accessors[accessor]["bufferView"]]["target"] = ARRAY_BUFFER
            if "indices" in primitive:
                views[accessors[primitive["indices"]]["bufferView"]]["target"] = ELEMENT_ARRAY_BUFFER


# -- the whole chain ------------------------------------------------------------------------------

class _Stages:
    """Times each stage and reports progress at its start (fraction of stages done)."""

    def __init__(self, names: list[str], progress: Optional[ProgressFn]):
        self.names, self.progress, self.timings = names, progress, {}

    @contextmanager
    def __call__(self, name: str):
        if self.progress:
            self.progress(name, self.names.index(name) / len(self.names))
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start

    def done(self):
        if self.progress:
            self.progress("done", 1.0)


def export_field(density_fn: DensityFn, albedo_fn: AlbedoFn, *, resolution: int,
                 threshold: float | None, keep_components: int, face_budget: int, texture_size: int,
                 vertex_colors: bool, bound: float = 1.0, device="cpu",
                 progress: Optional[ProgressFn] = None,
                 adjust_grid: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                 seal_radius: float = 0.0,
                 iso_fn: Optional[Callable[[np.ndarray], tuple[np.ndarray, float]]] = None) -> ExportResult:
    """Field -> GLB with the export settings. ``progress(stage, fraction)`` is called as each stage
    starts (fraction of the stages done) and with ("done", 1.0) at the end. ``threshold`` None: the
    grid and its iso-level are ``iso_fn(grid)`` (default: the grid at ``auto_threshold``). ``seal_radius`` > 0: the
    hollows hidden inside the object filled first (``seal_pores``); ``adjust_grid`` then changes the
    sampled grid before marching cubes.
    Raises EmptyMeshError when the iso-surface is empty."""
    names = ["density", "marching_cubes", "simplify"]
    names += ["vertex_colors"] if vertex_colors else ["uv_unwrap", "bake"]
    stage = _Stages(names + ["glb"], progress)
    with stage("density"):
        grid = density_grid(density_fn, resolution=resolution, bound=bound, device=device)
        if threshold is not None:
            level = float(threshold)
        else:
            grid, level = iso_fn(grid) if iso_fn is not None else (grid, auto_threshold(grid))
        if seal_radius > 0:         # before the insets: a shell over a hollow would read as a thin part
            grid = seal_pores(grid, level, seal_radius, bound=bound)
        if adjust_grid is not None:      # e.g. thin_inset, on an SDF grid
            grid = adjust_grid(grid)
            level = auto_threshold(grid) if threshold is None else level
    with stage("marching_cubes"):
        vertices, faces = surface_from_grid(grid, level, bound=bound, keep_components=keep_components)
    if len(faces) == 0:
        raise EmptyMeshError(level, float(grid.min()), float(grid.max()))
    with stage("simplify"):
        vertices, faces = simplify_mesh(vertices, faces, face_budget)
    uvs = texture = colours = None
    if vertex_colors:
        with stage("vertex_colors"):
            colours = albedo_at(albedo_fn, vertices, device)
    else:
        with stage("uv_unwrap"):
            vertices, faces, uvs = unwrap_uv(vertices, faces, texture_size=texture_size)
        with stage("bake"):
            texture = bake_texture(vertices, faces, uvs, albedo_fn, size=texture_size, device=device,
                                   padding=EXPORT_DILATION_PX)
    with stage("glb"):
        glb = to_glb(vertices, faces, uvs=uvs, texture=texture, vertex_colors=colours)
    stage.done()
    return ExportResult(glb=glb, vertices=vertices, faces=faces, threshold=level, timings=stage.timings,
                        uvs=uvs, texture=texture, vertex_colors=colours)


def proxy_glb(density_fn: DensityFn, albedo_fn: AlbedoFn, *, resolution: int = 64, bound: float = 1.0,
              device="cpu", face_budget: int = 5000) -> bytes | None:
    """A coarse vertex-coloured GLB for live previews (auto threshold, largest piece only);
    None when the field has no surface yet."""
    vertices, faces = extract_mesh(density_fn, resolution=resolution, bound=bound, device=device)
    if len(faces) == 0:
        return None
    vertices, faces = simplify_mesh(vertices, faces, face_budget)
    return to_glb(vertices, faces, vertex_colors=albedo_at(albedo_fn, vertices, device))
