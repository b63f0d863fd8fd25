"""Turntable strip of the exported mesh: a few product shots around the up axis, on the CPU.

Renders what the user will get in Blender (the exported triangles, texture or vertex colours),
not the NeRF. Engine coordinates: Z up, azimuth 0 looks at the front (+X) side. Albedo is shaded
with a camera-relative key light (lambertian) plus ambient, so every view is lit alike.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from backend.export.mesh import sample_bilinear, vertex_normals
from backend.export.raster import rasterize

FOV_DEG = 30.0          # narrow lens: little perspective distortion, like a product photo
MARGIN = 1.05           # bounding sphere radius -> frame, with a little air around the object
SUPERSAMPLE = 2         # render at 2x and box-filter down: anti-aliased edges
AMBIENT = 0.35
# Key light in camera coordinates (right, up, towards the camera): upper left, from the front.
KEY_LIGHT = np.array([-0.4, 0.5, 0.75]) / np.linalg.norm([-0.4, 0.5, 0.75])
UNTEXTURED_ALBEDO = 0.8


def render_turntable(vertices: np.ndarray, faces: np.ndarray, *, uvs: np.ndarray | None = None,
                     texture: np.ndarray | None = None, vertex_colors: np.ndarray | None = None,
                     views: int = 8, size: int = 256, elevation_deg: float = 20.0,
                     background=(255, 255, 255)) -> np.ndarray:
    """``views`` renders side by side, uint8 [size, size * views, 3]; view i at azimuth 360*i/views.

    Colour from ``texture`` (uint8 [S, S, 3]) through ``uvs`` (OBJ convention), else from
    ``vertex_colors`` (float [V, 3] in [0, 1]), else light grey.
    """
    if (uvs is None) != (texture is None):
        raise ValueError("uvs and texture go together")
    strip = np.empty((size, size * views, 3), np.uint8)
    strip[:] = background
    if len(faces) == 0:
        return strip
    mesh = _Mesh(vertices, faces, uvs, texture, vertex_colors)
    for i in range(views):
        eye_dir = _direction(2.0 * math.pi * i / views, math.radians(elevation_deg))
        strip[:, i * size:(i + 1) * size] = _render_view(mesh, eye_dir, size, background)
    return strip


def turntable_png(vertices: np.ndarray, faces: np.ndarray, **kwargs) -> bytes:
    """``render_turntable`` (same arguments), PNG-encoded."""
    buffer = io.BytesIO()
    Image.fromarray(render_turntable(vertices, faces, **kwargs)).save(buffer, format="PNG")
    return buffer.getvalue()


class _Mesh:
    """The mesh with what every view needs: normals, framing, an albedo lookup."""

    def __init__(self, vertices, faces, uvs, texture, vertex_colors):
        self.vertices = np.asarray(vertices, np.float64)
        self.faces = np.asarray(faces, np.int64)
        self.normals = vertex_normals(self.vertices, self.faces).astype(np.float64)
        self.uvs, self.vertex_colors = uvs, vertex_colors
        self.texture = None if texture is None else np.asarray(texture, np.float64) / 255.0
        self.outward = _outward_sign(self.vertices, self.faces)
        self.center = 0.5 * (self.vertices.min(axis=0) + self.vertices.max(axis=0))
        radius = np.linalg.norm(self.vertices - self.center, axis=1).max()
        self.distance = MARGIN * radius / math.sin(math.radians(FOV_DEG) / 2)

    def albedo(self, corners: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Albedo [K, 3] in [0, 1] at points given by face corners [K, 3] and weights [K, 3]."""
        if self.texture is not None:
            uv = np.einsum("kc,kcd->kd", weights, self.uvs[corners])
            return sample_bilinear(self.texture, uv)
        if self.vertex_colors is not None:
            return np.einsum("kc,kcd->kd", weights, np.asarray(self.vertex_colors, np.float64)[corners])
        return np.full((len(corners), 3), UNTEXTURED_ALBEDO)


def _outward_sign(vertices: np.ndarray, faces: np.ndarray) -> float:
    """+1 / -1 when the mesh is closed and consistently wound (every edge, vertices merged by position
    since UV seams split them, used once in each direction), with the winding's normals pointing out /
    in; 0 otherwise. Seen from outside, a closed surface's nearest point along any ray faces the
    camera, so a closed mesh's back faces can be skipped: half the rasterising (an exported mesh is
    closed unless it touches the grid's bound)."""
    if len(faces) == 0:
        return 0.0
    _, point = np.unique(vertices, axis=0, return_inverse=True)
    f = point.ravel()[faces]
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    n = int(f.max()) + 1
    directed = edges[:, 0] * n + edges[:, 1]
    reverse = edges[:, 1] * n + edges[:, 0]
    if len(np.unique(directed)) != len(directed) or not np.isin(reverse, directed).all():
        return 0.0
    v = vertices[faces]
    volume = np.einsum("fi,fi->f", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum()
    return float(np.sign(volume))


def _direction(azimuth: float, elevation: float) -> np.ndarray:
    return np.array([math.cos(elevation) * math.cos(azimuth),
                     math.cos(elevation) * math.sin(azimuth),
                     math.sin(elevation)])


def _render_view(mesh: _Mesh, eye_dir: np.ndarray, size: int, background) -> np.ndarray:
    eye = mesh.center + mesh.distance * eye_dir
    forward = -eye_dir
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    to_camera = np.stack([right, up, -forward])           # world -> (right, up, towards camera)
    cam = (mesh.vertices - eye) @ to_camera.T
    depth = -cam[:, 2]                                     # distance along the view axis
    pixels = size * SUPERSAMPLE
    focal = 0.5 * pixels / math.tan(math.radians(FOV_DEG) / 2)
    screen = np.stack([0.5 * pixels + focal * cam[:, 0] / depth,
                       0.5 * pixels - focal * cam[:, 1] / depth], axis=1)
    # 1/depth is affine in screen space, so interpolating it with screen barycentrics is exact;
    # nearer means larger, hence the minus for the rasteriser's smaller-wins test.
    faces = mesh.faces
    if mesh.outward:          # closed: only the faces turned towards the camera can be seen
        v = mesh.vertices[faces]
        normal = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]) * mesh.outward
        faces = faces[np.einsum("fi,fi->f", normal, eye - v.mean(axis=1)) > 0]
    frags = rasterize(screen[faces], pixels, pixels, depth=-1.0 / depth[faces])
    corners = faces[frags.triangle]
    weights = frags.bary / depth[corners]                  # perspective-correct barycentrics
    weights /= weights.sum(axis=1, keepdims=True)
    normal = np.einsum("kc,kcd->kd", weights, mesh.normals[corners]) @ to_camera.T
    normal *= np.where(normal[:, 2:] < 0, -1.0, 1.0)      # double-sided, like the GLB material
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    shade = AMBIENT + (1.0 - AMBIENT) * np.clip(normal @ KEY_LIGHT, 0.0, 1.0)
    image = np.empty((pixels * pixels, 3))
    image[:] = np.asarray(background, np.float64) / 255.0
    image[frags.pixel] = mesh.albedo(corners, weights) * shade[:, None]
    image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
