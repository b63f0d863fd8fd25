"""Shape and colour metrics of an exported GLB against an analytic ground truth.

- ``load_glb``: the GLB back in engine coordinates (undoing ``ENGINE_TO_GLTF``), with a colour
  lookup for surface points (texture through the UVs, or vertex colours).
- ``voxelize``: inside/outside of a closed mesh on a grid over [-1, 1]^3, by ray parity along
  each axis, majority of the three (robust to a stray hole or a doubled crossing).
- ``best_yaw_iou``: volumetric IoU against a ground-truth SDF, maximised over rotations of the
  ground truth about the up (Z) axis (the prior places shapes canonically but leaves yaw free).
- ``chamfer``: symmetric mean nearest-neighbour distance between surface samples (scene units;
  the shapes are about 1 unit across), after the best yaw.
- ``albedo_error``: mean absolute RGB difference (channels in [0, 1]) between the mesh's colour
  at area-uniform surface samples and the ground-truth albedo.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

SdfFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LoadedMesh:
    vertices: np.ndarray                 # float64 [V, 3], engine coordinates
    faces: np.ndarray                    # int64 [F, 3]
    uvs: Optional[np.ndarray] = None     # [V, 2], OBJ convention (v = 0 at the image bottom)
    texture: Optional[np.ndarray] = None  # float [H, W, 3] in [0, 1]
    vertex_colors: Optional[np.ndarray] = None   # float [V, 3] in [0, 1]

    @property
    def empty(self) -> bool:
        return len(self.faces) == 0

    def colors_at(self, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """RGB in [0, 1] at points given by face index and barycentrics."""
        if self.texture is not None and self.uvs is not None:
            from backend.export.mesh import sample_bilinear

            uv = np.einsum("kc,kcd->kd", bary, self.uvs[self.faces[face]])
            return sample_bilinear(self.texture, uv)
        if self.vertex_colors is not None:
            return np.einsum("kc,kcd->kd", bary, self.vertex_colors[self.faces[face]])
        return np.full((len(face), 3), np.nan)


def load_glb(glb: bytes) -> LoadedMesh:
    """Parse a GLB (as ``backend.export.mesh.to_glb`` writes it) back into engine coordinates."""
    import trimesh

    from backend.export.mesh import ENGINE_TO_GLTF

    scene = trimesh.load(io.BytesIO(glb), file_type="glb", process=False)
    parts = []            # (mesh, 4x4 transform) without copying (a copy drops COLOR_0)
    if isinstance(scene, trimesh.Trimesh):
        parts = [(scene, np.eye(4))]
    else:
        for node in scene.graph.nodes_geometry:
            transform, name = scene.graph[node]
            parts.append((scene.geometry[name], np.asarray(transform)))
    parts = [(m, t) for m, t in parts if len(m.faces)]
    if not parts:
        return LoadedMesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))

    def placed(mesh, transform):
        v = np.asarray(mesh.vertices, np.float64) @ transform[:3, :3].T + transform[:3, 3]
        return v @ ENGINE_TO_GLTF             # glTF -> engine (ENGINE_TO_GLTF is orthogonal)

    if len(parts) > 1:
        # Several pieces: geometry only (our exporter writes one mesh).
        verts, faces, offset = [], [], 0
        for mesh, transform in parts:
            verts.append(placed(mesh, transform))
            faces.append(np.asarray(mesh.faces, np.int64) + offset)
            offset += len(mesh.vertices)
        return LoadedMesh(np.concatenate(verts), np.concatenate(faces))
    mesh, transform = parts[0]
    out = LoadedMesh(placed(mesh, transform), np.asarray(mesh.faces, np.int64))
    visual = mesh.visual
    if getattr(visual, "kind", None) == "texture" and getattr(visual, "uv", None) is not None:
        image = getattr(visual.material, "baseColorTexture", None) or getattr(visual.material, "image", None)
        if image is not None:
            out.uvs = np.asarray(visual.uv, np.float64)
            out.texture = np.asarray(image.convert("RGB"), np.float64) / 255.0
    if out.texture is None:
        colors = None
        attrs = getattr(visual, "vertex_attributes", None) or {}
        if "color" in attrs:
            colors = np.asarray(attrs["color"])
        elif getattr(visual, "kind", None) == "vertex":
            colors = np.asarray(visual.vertex_colors)
        if colors is not None and len(colors) == len(out.vertices):
            out.vertex_colors = colors[:, :3].astype(np.float64) / (255.0 if colors.dtype == np.uint8 else 1.0)
    return out


# -- sampling -------------------------------------------------------------------------------------------
def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator):
    """Area-uniform random points: (points [n, 3], face index [n], barycentrics [n, 3])."""
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face = rng.choice(len(faces), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    return np.einsum("kc,kcd->kd", bary, tri[face]), face, bary


def grid_centres(res: int, bound: float = 1.0) -> np.ndarray:
    return (np.arange(res) + 0.5) / res * 2 * bound - bound


def voxelize(vertices: np.ndarray, faces: np.ndarray, res: int = 64, bound: float = 1.0) -> np.ndarray:
    """Occupancy [res, res, res] (indexed x, y, z) of a closed triangle mesh: majority of ray parity
    along x, y and z through the voxel centres."""
    if len(faces) == 0:
        return np.zeros((res,) * 3, bool)
    votes = np.zeros((res,) * 3, np.int8)
    for axis in range(3):
        votes += _parity(vertices, faces, res, bound, axis)
    return votes >= 2


def _parity(vertices, faces, res, bound, axis) -> np.ndarray:
    # Columns along ``axis``; the other two axes (a, b) span the column grid. A tiny irrational
    # offset keeps column centres off mesh edges and vertices.
    a_ax, b_ax = [i for i in range(3) if i != axis]
    tri = vertices[faces].astype(np.float64)
    scale = res / (2 * bound)
    pa = (tri[:, :, a_ax] + bound) * scale - 0.5 + 1e-7 * math.sqrt(2)    # pixel coordinates, centre at integers
    pb = (tri[:, :, b_ax] + bound) * scale - 0.5 + 1e-7 * math.sqrt(3)
    lo_a, hi_a = np.ceil(pa.min(1)).astype(int), np.floor(pa.max(1)).astype(int)
    lo_b, hi_b = np.ceil(pb.min(1)).astype(int), np.floor(pb.max(1)).astype(int)
    lo_a, lo_b = np.maximum(lo_a, 0), np.maximum(lo_b, 0)
    hi_a, hi_b = np.minimum(hi_a, res - 1), np.minimum(hi_b, res - 1)
    na, nb = hi_a - lo_a + 1, hi_b - lo_b + 1
    keep = (na > 0) & (nb > 0)
    counts = np.zeros((res * res, res + 1), np.int32)
    centres = grid_centres(res, bound)
    idx = np.nonzero(keep)[0]
    cand = (na * nb)[idx]
    # Process triangles in chunks so the candidate arrays stay small.
    starts = np.concatenate([[0], np.cumsum(cand)])
    chunk_ends = np.searchsorted(starts, np.arange(0, starts[-1] + 1, 1 << 21)[1:], side="right")
    bounds = [0, *np.unique(np.clip(chunk_ends, 1, len(idx))), len(idx)]
    for c0, c1 in zip(bounds[:-1], bounds[1:]):
        if c1 <= c0:
            continue
        t = np.repeat(idx[c0:c1], cand[c0:c1])
        k = np.arange(len(t)) - np.repeat(starts[c0:c1] - starts[c0], cand[c0:c1])
        ia = lo_a[t] + k % na[t]
        ib = lo_b[t] + k // na[t]
        x0, y0 = pa[t, 0], pb[t, 0]
        x1, y1 = pa[t, 1], pb[t, 1]
        x2, y2 = pa[t, 2], pb[t, 2]
        det = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)
        ok = np.abs(det) > 1e-12
        det = np.where(ok, det, 1.0)
        w0 = ((y1 - y2) * (ia - x2) + (x2 - x1) * (ib - y2)) / det
        w1 = ((y2 - y0) * (ia - x2) + (x0 - x2) * (ib - y2)) / det
        w2 = 1 - w0 - w1
        inside = ok & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        t, ia, ib = t[inside], ia[inside], ib[inside]
        w = np.stack([w0[inside], w1[inside], w2[inside]], 1)
        depth = (w * tri[t, :, axis]).sum(1)
        # Voxels beyond this crossing along the column: from the first centre above it.
        first = np.searchsorted(centres, depth, side="right")
        np.add.at(counts, (ia * res + ib, first), 1)
    occ = (np.cumsum(counts, axis=1)[:, :res] % 2).astype(bool).reshape(res, res, res)   # [a, b, axis]
    order = {0: (2, 0, 1), 1: (0, 2, 1), 2: (0, 1, 2)}[axis]
    return np.transpose(occ, order).astype(np.int8)


# -- metrics --------------------------------------------------------------------------------------------
def sdf_occupancy(sdf: SdfFn, res: int = 64, yaw_deg: float = 0.0, bound: float = 1.0) -> np.ndarray:
    """Ground truth occupancy [res]^3 of ``sdf`` rotated by ``yaw_deg`` about Z."""
    from backend.prior.shapes import rotate_z

    c = torch.from_numpy(grid_centres(res, bound)).float()
    pts = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
    # A point p is inside the rotated shape when rotate(p, -yaw) is inside the canonical one.
    with torch.no_grad():
        inside = sdf(rotate_z(pts, -yaw_deg)) < 0
    return inside.reshape(res, res, res).numpy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def best_yaw_iou(pred: np.ndarray, sdf: SdfFn, *, period: float = 360.0, coarse_step: float = 3.0,
                 fine_step: float = 0.5, bound: float = 1.0) -> tuple[float, float]:
    """(best IoU, its yaw in degrees) of the predicted occupancy against ``sdf`` rotated about Z.

    ``period``: the shape's yaw symmetry (90 for a cube or square pyramid, 0 for solids of
    revolution: no search)."""
    res = pred.shape[0]
    if period <= 0:
        return iou(pred, sdf_occupancy(sdf, res, 0.0, bound)), 0.0
    scores = {}

    def score(yaw):
        yaw = float(yaw) % period
        key = round(yaw, 4)
        if key not in scores:
            scores[key] = iou(pred, sdf_occupancy(sdf, res, yaw, bound))
        return scores[key]

    best = max(np.arange(0.0, period, coarse_step), key=score)
    best = max(np.arange(best - coarse_step, best + coarse_step + 1e-9, fine_step), key=score)
    return score(best), float(best) % period


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric mean nearest-neighbour distance between point sets a [N, 3] and b [M, 3]."""
    from scipy.spatial import cKDTree

    d_ab = cKDTree(b).query(a, workers=1)[0]
    d_ba = cKDTree(a).query(b, workers=1)[0]
    return float(0.5 * (d_ab.mean() + d_ba.mean()))


def sdf_surface_points(sdf: SdfFn, n: int, rng: np.random.Generator, res: int = 128, yaw_deg: float = 0.0,
                       bound: float = 1.0) -> np.ndarray:
    """Area-uniform samples of the zero level set (marching cubes of the SDF on a fine grid)."""
    import mcubes

    from backend.prior.shapes import rotate_z

    axis = torch.linspace(-bound, bound, res)
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        values = sdf(rotate_z(pts, -yaw_deg)).reshape(res, res, res).numpy()
    v, f = mcubes.marching_cubes(-values, 0.0)
    v = v * (2 * bound / (res - 1)) - bound
    return sample_surface(v, f.astype(np.int64), n, rng)[0]


def evaluate_mesh(mesh: LoadedMesh, sdf: SdfFn, albedo: tuple[float, float, float], *, period: float = 360.0,
                  res: int = 64, n_samples: int = 20000, seed: int = 0) -> dict:
    """All metrics of one exported mesh against its ground truth."""
    if mesh.empty:
        return {"empty": True, "iou": 0.0, "yaw": 0.0, "chamfer": float("nan"), "albedo_error": float("nan"),
                "mean_color": [float("nan")] * 3, "volume_ratio": 0.0}
    rng = np.random.default_rng(seed)
    pred = voxelize(mesh.vertices, mesh.faces, res)
    best, yaw = best_yaw_iou(pred, sdf, period=period)
    gt_count = sdf_occupancy(sdf, res, yaw).sum()
    pts, face, bary = sample_surface(mesh.vertices, mesh.faces, n_samples, rng)
    gt_pts = sdf_surface_points(sdf, n_samples, rng, yaw_deg=yaw)
    colors = mesh.colors_at(face, bary)
    err = np.abs(colors - np.asarray(albedo)[None]).mean(axis=1)
    return {"empty": False, "iou": best, "yaw": yaw, "chamfer": chamfer(pts, gt_pts),
            "albedo_error": float(np.nanmean(err)), "mean_color": [float(v) for v in np.nanmean(colors, axis=0)],
            "volume_ratio": float(pred.sum() / max(1, gt_count)),
            "centroid": [float(v) for v in pts.mean(axis=0)], "faces": int(len(mesh.faces))}
