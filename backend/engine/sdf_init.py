"""A triangle mesh -> its signed distance on a regular grid: how the fine stage's SDF starts.

The fine stage (``backend.engine.fine``) starts its signed distance field from a surface: the coarse
NeRF's marching-cubes surface, or the mesh an artist selected for Refine Selected. That surface's
signed distance, sampled on a grid, becomes the SDF field's fixed base (``SDFField.base_sdf``), so the
fine stage starts *exactly* on the surface it was given (no fitting iterations, no drift) and its
network only learns a residual.

How: near the surface (a band of ``BAND_CELLS`` grid cells around it) the unsigned distance is the
distance to the nearest of ``SURFACE_SAMPLES`` area-uniform surface samples (scipy's cKDTree), whose
error is below the samples' spacing (~0.01 on a 1.2-unit cube, under a cell of a 128^3 grid); its sign
is a vote of the ``SIGN_NEIGHBOURS`` nearest samples: outside when ``(p - q) . n_q > 0`` (the nearest-point normal test, exact where the
nearest point lies inside a face); where they disagree (within a sample spacing of an edge) the mesh's
generalised winding number decides, or, when the surface is an iso-surface of a grid on the same lattice
(the coarse stage's marching cubes), that grid's own sign (``inside``): exact and free, where the winding
number is O(points x faces) (a coarse pyramid's lumpy surface left ~30k points to it: 190 s of a 260 s CPU
run, and up to 170 s of fine stage a cube or pyramid on the GPU machine's shared CPU, session 26). Away from the band only the
sign and a rough size matter (the renderer sees nothing there): the sign comes from the connected
regions the band separates (the ones touching the grid's border are outside), the size from scipy's
Euclidean distance transform. Querying the tree at every point of a 128^3 grid instead took 140 s on
this (busy, 2-core) CPU (the band: 3.7 s); exact point-to-triangle distance (trimesh.proximity) was
not tried at this size (it needs rtree, not a dependency), and a
voxel fill (trimesh) signs every cell the surface crosses as inside: half a cell of bias. No library
does mesh -> SDF grid on the CPU without a native build or OpenGL (mesh-to-sdf renders depth maps
with pyrender; pysdf and libigl are not dependencies here), so this is written out with numpy/scipy.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

SURFACE_SAMPLES = 100_000
SIGN_NEIGHBOURS = 5
BAND_CELLS = 2


def grid_points(resolution: int, bound: float) -> np.ndarray:
    """The ``resolution^3`` grid points spanning [-bound, bound]^3, indexed [x, y, z] -> float32 [R^3, 3]."""
    axis = np.linspace(-bound, bound, resolution, dtype=np.float32)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


def surface_samples(vertices: np.ndarray, faces: np.ndarray, count: int = SURFACE_SAMPLES, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``count`` area-uniform points on the mesh and their faces' unit normals (float32 [N, 3] each).
    A fixed seed: the same surface always gives the same SDF (checkpoint/resume relies on it)."""
    import trimesh

    mesh = trimesh.Trimesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), process=False)
    points, face_index = trimesh.sample.sample_surface(mesh, count, seed=seed)
    normals = np.asarray(mesh.face_normals, np.float64)[face_index]
    return points.astype(np.float32), normals.astype(np.float32)


def winding_number(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, chunk: int = 1 << 22,
                   device="cpu") -> np.ndarray:
    """Generalised winding number of a triangle mesh at ``points`` [P, 3] (1 inside a closed mesh, 0
    outside): the sum of the triangles' solid angles (Van Oosterom and Strackee) over 4 pi. O(P x F):
    only for the few points whose nearest samples disagree. In torch on ``device`` (the fine stage's:
    a GPU where there is one), float32: 5x faster than the float64 numpy it replaced on the CPU (a 49k-face
    box, 444 points: 10.2 -> 1.9 s), within 2e-6 of it. (libigl's fast winding number would be O(log F), but
    is a 14 MB native dependency for what is, off the coarse stage's path, a few seconds.)"""
    import torch

    tri = torch.as_tensor(np.asarray(vertices, np.float32)[np.asarray(faces, np.int64)], device=device)   # (F, 3, 3)
    pts = torch.as_tensor(np.asarray(points, np.float32), device=device)
    out = torch.empty(len(pts), device=device)
    step = max(1, chunk // max(1, len(tri)))
    with torch.no_grad():
        for i in range(0, len(pts), step):
            rel = tri[None] - pts[i:i + step, None, None, :]                              # (p, F, 3, 3)
            a, b, c = rel.unbind(2)
            la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
            det = (a * torch.linalg.cross(b, c, dim=-1)).sum(-1)
            den = la * lb * lc + (a * b).sum(-1) * lc + (a * c).sum(-1) * lb + (b * c).sum(-1) * la
            out[i:i + step] = torch.atan2(det, den).sum(-1) / (2 * np.pi)
    return out.cpu().double().numpy()


def signed_distance(points: np.ndarray, samples: np.ndarray, normals: np.ndarray,
                    vertices: np.ndarray, faces: np.ndarray, inside: Optional[np.ndarray] = None,
                    device="cpu") -> np.ndarray:
    """Signed distance (negative inside) of ``points`` [P, 3] to the surface ``samples``/``normals``
    (``surface_samples`` of the mesh ``vertices``/``faces``) -> float32 [P]. Where the nearest samples'
    normal test is not unanimous (near edges) ``inside`` (bool [P], when known) or else the mesh's
    winding number decides."""
    from scipy.spatial import cKDTree

    tree = cKDTree(samples)
    k = min(SIGN_NEIGHBOURS, len(samples))
    dist, idx = tree.query(points, k=k, workers=-1)
    dist, idx = dist.reshape(len(points), k), idx.reshape(len(points), k)
    offsets = points[:, None, :] - samples[idx]                          # (P, k, 3)
    outside_votes = ((offsets * normals[idx]).sum(-1) > 0).sum(-1)
    outside = outside_votes * 2 > k
    split = np.nonzero((outside_votes > 0) & (outside_votes < k))[0]
    if len(split):
        outside[split] = ~inside[split] if inside is not None else (
            winding_number(points[split], vertices, faces, device=device) < 0.5)
    return (np.where(outside, 1.0, -1.0) * dist[:, 0]).astype(np.float32)


def sdf_grid_from_mesh(vertices: np.ndarray, faces: np.ndarray, *, resolution: int, bound: float = 1.0,
                       inside: Optional[np.ndarray] = None, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """The mesh's signed distance at the grid points -> (float32 [R, R, R] indexed [x, y, z], the surface
    samples float32 [N, 3] for the fine stage's regularisers). ``inside`` (bool [R, R, R], optional): which
    grid points the mesh encloses, when that is known without it (``inside_of_iso_surface``)."""
    from scipy import ndimage

    if len(faces) == 0:
        raise ValueError("the surface to start the fine stage from is empty")
    if inside is not None and inside.shape != (resolution,) * 3:
        raise ValueError(f"inside must be a {resolution}^3 grid, got {inside.shape}")
    samples, normals = surface_samples(vertices, faces)
    cell = 2.0 * bound / (resolution - 1)
    shape = (resolution,) * 3
    # The band: grid points within BAND_CELLS cells of a surface sample.
    nearest = np.clip(np.rint((samples + bound) / cell).astype(np.int64), 0, resolution - 1)
    band = np.zeros(shape, bool)
    band[nearest[:, 0], nearest[:, 1], nearest[:, 2]] = True
    band = ndimage.binary_dilation(band, iterations=BAND_CELLS)
    band_index = np.nonzero(band.ravel())[0]
    # Away from the band: regions touching the border are outside, enclosed ones inside.
    labels, _ = ndimage.label(~band)
    border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(),
                                       labels[:, :, [0, -1]].ravel()]))
    solid = ~np.isin(labels, border[border > 0]) & ~band
    band_sdf = signed_distance(grid_points(resolution, bound)[band_index], samples, normals, vertices, faces,
                               None if inside is None else inside.ravel()[band_index], device=device)
    solid.ravel()[band_index] = band_sdf < 0
    # Rough size away from the surface: the distance to the nearest grid point of the other sign.
    far = np.where(solid, -ndimage.distance_transform_edt(solid), ndimage.distance_transform_edt(~solid))
    sdf = (far - 0.5 * np.sign(far)).astype(np.float32) * cell
    sdf.ravel()[band_index] = band_sdf
    return sdf, samples


def smooth_sdf(sdf: np.ndarray, cells: float) -> np.ndarray:
    """``sdf`` (a grid) blurred by a Gaussian of std ``cells`` grid cells: how the fine stage starts
    from a coarse NeRF's surface. That surface (marching cubes of an SDS-trained density) carries lumps
    a few cells across, which the fine stage's normal term would have to iron out through the residual
    within its few steps; blurred, they are gone before it starts (``fine.COARSE_SMOOTHING_CELLS``;
    ``results/quality/runs/2026-11-29-fine-tuning-cpu.md``). A blur of
    a signed distance leaves a flat face where it is and rounds an edge by about ``cells``; the
    surface's own lumps, not the edges, were what the fine meshes lost most to."""
    from scipy import ndimage

    if cells <= 0:
        return sdf
    return ndimage.gaussian_filter(sdf, cells, mode="nearest").astype(np.float32)


def inside_of_iso_surface(grid: np.ndarray, level: float, vertices: np.ndarray, *, bound: float = 1.0) -> np.ndarray:
    """Which points of ``grid``'s lattice lie inside the surface ``vertices`` that marching cubes made of
    ``grid`` at ``level`` (values above it inside) and that lost some pieces since (floaters dropped:
    ``export.mesh.keep_largest_components``) -> bool [R, R, R]. A lattice point's side of a marching-cubes
    surface is its value's side of the level, by construction; a region above the level counts only if
    the kept surface bounds it (one of its points is an end of the grid edge a kept vertex lies on), and
    what the kept surface encloses counts whole (a dropped inner shell's void is filled, as the mesh is)."""
    from scipy import ndimage

    res = grid.shape[0]
    above = grid > level
    labels, _ = ndimage.label(above, structure=np.ones((3, 3, 3), bool))
    # each vertex sits on a lattice edge between a point above the level and one below: both ends
    cell = (np.asarray(vertices, np.float64) + bound) / (2.0 * bound) * (res - 1)
    ends = np.concatenate([np.floor(cell), np.ceil(cell)]).astype(np.int64).clip(0, res - 1)
    kept = np.unique(labels[ends[:, 0], ends[:, 1], ends[:, 2]])
    return ndimage.binary_fill_holes(np.isin(labels, kept[kept > 0]))
