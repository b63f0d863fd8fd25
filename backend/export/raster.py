"""A small vectorised triangle rasteriser: which triangle covers each pixel, and where.

Hand-written on purpose. The texture bake needs per-texel triangle ids and barycentrics of 2D UV
triangles, and the turntable needs the same for projected triangles with a depth test. No
maintained CPU library gives barycentrics without an OpenGL context (pyrender, moderngl, Open3D's
renderer all want one), and nvdiffrast needs CUDA or OpenGL: headless GL is the most reported
export failure in threestudio's issues. This file is plain numpy and runs anywhere.

Conventions: pixel (x, y) has its centre at (x + 0.5, y + 0.5); x indexes columns, y rows (down).
A pixel is covered when its centre is inside the triangle or on its edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Pixel/triangle candidate pairs tested per chunk (about 100 bytes each): bounds the memory.
CANDIDATES_PER_CHUNK = 1 << 20
# Barycentric tolerance (float32 rounding), so that pixel centres exactly on an edge shared by two
# triangles are not lost to both.
EDGE_EPS = 1e-5


@dataclass
class Fragments:
    """The covered pixels, one entry each: flat pixel index (y * width + x), triangle, barycentrics."""

    pixel: np.ndarray        # int64 [K]
    triangle: np.ndarray     # int64 [K]
    bary: np.ndarray         # float64 [K, 3], weights of the triangle's three corners


def rasterize(triangles: np.ndarray, width: int, height: int,
              depth: np.ndarray | None = None) -> Fragments:
    """Rasterise 2D triangles ``[F, 3, 2]`` (pixel units) into a ``width`` x ``height`` image.

    ``depth`` (``[F, 3]``, per corner, smaller = nearer, interpolated with the screen-space
    barycentrics) resolves overlaps: the nearest triangle wins each pixel. Without it, overlaps
    (only shared edges, for a UV atlas) go to an arbitrary one of the triangles.
    """
    tris = np.asarray(triangles, dtype=np.float64)
    origin, counts, row_len = _candidate_boxes(tris, width, height)
    coefficients = _barycentric_planes(tris, origin)
    parts = [_rasterize_chunk(coefficients, ids, origin, counts, row_len, width, depth)
             for ids in _chunks(counts)]
    if not parts:
        return Fragments(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)))
    pixel, triangle, bary, z = (np.concatenate(p) for p in zip(*parts))
    # One fragment per pixel: the nearest (sort by pixel, then depth; keep each pixel's first).
    order = np.lexsort((z, pixel))
    pixel, triangle, bary = pixel[order], triangle[order], bary[order]
    first = np.ones(len(pixel), bool)
    first[1:] = pixel[1:] != pixel[:-1]
    return Fragments(pixel[first], triangle[first], bary[first].astype(np.float64))


def _candidate_boxes(tris, width, height):
    """Per triangle: first pixel of its bounding box [F, 2], its pixel count, and its row length."""
    lo = np.ceil(tris.min(axis=1) - 0.5)       # first pixel whose centre is >= the min corner
    hi = np.floor(tris.max(axis=1) - 0.5)      # last pixel whose centre is <= the max corner
    lo = np.maximum(lo, 0).astype(np.int64)
    hi = np.minimum(hi, [width - 1, height - 1]).astype(np.int64)
    size = np.maximum(hi - lo + 1, 0)
    area2 = _cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    counts = np.where(area2 != 0, size[:, 0] * size[:, 1], 0)   # degenerate triangles cover nothing
    return lo, counts, np.maximum(size[:, 0], 1)


def _barycentric_planes(tris, origin):
    """Per triangle [F, 9]: barycentric i = c[i] * dx + c[3 + i] * dy + c[6 + i] at the pixel
    ``origin + (dx, dy)``. Relative to the box's first pixel the numbers stay small, so float32
    keeps the edge test exact to ~1e-6 and halves the memory traffic per candidate."""
    centre = origin + 0.5
    area2 = _cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    inv = 1.0 / np.where(area2 != 0, area2, 1.0)      # degenerate triangles have no candidates
    planes = np.empty((len(tris), 9))
    for i in range(3):   # barycentric i: signed area of (centre, next corner, corner after) / area
        q, r = tris[:, (i + 1) % 3], tris[:, (i + 2) % 3]
        edge = r - q
        planes[:, i] = -edge[:, 1] * inv
        planes[:, 3 + i] = edge[:, 0] * inv
        planes[:, 6 + i] = _cross(edge, centre - q) * inv
    return planes.astype(np.float32)


def _chunks(counts):
    """Split the triangles with candidates into runs of about CANDIDATES_PER_CHUNK candidates."""
    ids = np.flatnonzero(counts)
    if len(ids) == 0:
        return []
    bucket = np.cumsum(counts[ids]) // CANDIDATES_PER_CHUNK
    cuts = np.flatnonzero(np.diff(bucket)) + 1
    return np.split(ids, cuts)


def _rasterize_chunk(planes, ids, origin, counts, row_len, width, depth):
    n = counts[ids]
    tri = np.repeat(ids, n)
    # Position of each candidate inside its triangle's box.
    local = np.arange(len(tri)) - np.repeat(np.cumsum(n) - n, n)
    dy, dx = np.divmod(local, row_len[tri])
    p = planes[tri]
    bary = (p[:, 0:3] * dx[:, None].astype(np.float32) + p[:, 3:6] * dy[:, None].astype(np.float32)
            + p[:, 6:9])
    inside = bary.min(axis=1) >= -EDGE_EPS
    tri, dx, dy, bary = tri[inside], dx[inside], dy[inside], bary[inside]
    z = (bary * depth[tri]).sum(axis=1) if depth is not None else np.zeros(len(tri))
    return (origin[tri, 1] + dy) * width + origin[tri, 0] + dx, tri, bary, z


def _cross(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
