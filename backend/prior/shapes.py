"""The prior's shapes as analytic signed distance functions, in engine coordinates.

Canonical size and placement: centred on the origin, Z up, every shape inside a sphere of radius
about 0.55-0.7 (the field's initial blob has radius 0.5); flat faces of the cube and pyramid face
the axes. These SDFs render the training images (``backend.prior.render``) and are the ground
truth of the quality benchmark (``backend.bench``). All take points ``(N, 3)`` (torch) and return
``(N,)``: negative inside. Most are exact; the pyramid's is a bound (the max of its plane
distances), exact in sign, which is all sphere tracing and inside tests need.
"""

from __future__ import annotations

import math

import torch

from backend.prior import sdf as S

SHAPES: tuple[str, ...] = ("cube", "sphere", "cone", "cylinder", "torus", "pyramid", "capsule")

# Dimensions (scene units): the single source for rendering, ground truth and the README.
CUBE_HALF = 0.40                       # side 0.8
SPHERE_R = 0.50
CONE_R, CONE_HALF_H = 0.45, 0.45       # base radius 0.45 at z=-0.45, apex at z=+0.45
CYLINDER_R, CYLINDER_HALF_H = 0.40, 0.40
TORUS_R, TORUS_r = 0.36, 0.16          # lying flat (axis = Z): hole radius 0.20, thickness 0.32
PYRAMID_HALF, PYRAMID_HALF_H = 0.45, 0.45   # square base 0.9 wide at z=-0.45, apex at z=+0.45
CAPSULE_R, CAPSULE_HALF_SEG = 0.30, 0.25    # total height 1.1

DIMENSIONS = {
    "cube": f"side {2 * CUBE_HALF:.2f}",
    "sphere": f"radius {SPHERE_R:.2f}",
    "cone": f"base radius {CONE_R:.2f}, height {2 * CONE_HALF_H:.2f}, apex up",
    "cylinder": f"radius {CYLINDER_R:.2f}, height {2 * CYLINDER_HALF_H:.2f}, axis Z",
    "torus": f"major radius {TORUS_R:.2f}, minor radius {TORUS_r:.2f}, lying flat (axis Z)",
    "pyramid": f"square base {2 * PYRAMID_HALF:.2f}, height {2 * PYRAMID_HALF_H:.2f}, apex up",
    "capsule": f"radius {CAPSULE_R:.2f}, height {2 * (CAPSULE_R + CAPSULE_HALF_SEG):.2f}, axis Z",
}


# The primitives are the props library's (``backend.prior.sdf``): one implementation of each.
def _radial(p: torch.Tensor) -> torch.Tensor:
    return S.radial(p)


def sd_box(p: torch.Tensor, half: float) -> torch.Tensor:
    return S.box(p, half, half, half)


sd_sphere = S.sphere
sd_cylinder = S.cylinder
sd_torus = S.torus
sd_capsule = S.capsule_z
rotate_z = S.rotate_z


def _sd_triangle_2d(q: torch.Tensor, a, b, c) -> torch.Tensor:
    """Exact signed distance from 2D points ``q`` (N, 2) to the triangle abc (Inigo Quilez)."""
    p0, p1, p2 = (q.new_tensor(v) for v in (a, b, c))
    e0, e1, e2 = p1 - p0, p2 - p1, p0 - p2
    v0, v1, v2 = q - p0, q - p1, q - p2

    def edge(v, e):
        h = ((v * e).sum(1) / (e * e).sum()).clamp(0.0, 1.0)
        return v - e * h[:, None]

    pq0, pq1, pq2 = edge(v0, e0), edge(v1, e1), edge(v2, e2)
    s = math.copysign(1.0, float(e0[0] * e2[1] - e0[1] * e2[0]))
    dist = torch.stack([(pq0 * pq0).sum(1), (pq1 * pq1).sum(1), (pq2 * pq2).sum(1)], 1).amin(1)
    side = torch.stack([s * (v0[:, 0] * e0[1] - v0[:, 1] * e0[0]), s * (v1[:, 0] * e1[1] - v1[:, 1] * e1[0]),
                        s * (v2[:, 0] * e2[1] - v2[:, 1] * e2[0])], 1).amin(1)
    return -dist.sqrt() * torch.sign(side)


def sd_cone(p: torch.Tensor, radius: float, half_h: float) -> torch.Tensor:
    """Solid of revolution of the isosceles triangle (-r,-h), (r,-h), (0,h): exact inside and out."""
    q = torch.stack([_radial(p), p[:, 2]], dim=1)
    return _sd_triangle_2d(q, (-radius, -half_h), (radius, -half_h), (0.0, half_h))


def sd_pyramid(p: torch.Tensor, half: float, half_h: float) -> torch.Tensor:
    """Max of the base plane and the four side planes (a bound outside, exact sign)."""
    slope = math.hypot(2 * half_h, half)             # side plane normal ~ (2h, 0, b) / |.|
    nx, nz = 2 * half_h / slope, half / slope
    # Side plane through the apex (0, 0, h) with outward normal (nx, 0, nz), for each of +-x, +-y.
    sides = torch.stack([p[:, 0].abs(), p[:, 1].abs()], 1) * nx + (p[:, 2:3] - half_h) * nz
    return torch.maximum(sides.amax(1), -half_h - p[:, 2])


def sdf(shape: str, p: torch.Tensor) -> torch.Tensor:
    """Signed distance of the canonical ``shape`` at points ``p`` (N, 3)."""
    if shape == "cube":
        return sd_box(p, CUBE_HALF)
    if shape == "sphere":
        return sd_sphere(p, SPHERE_R)
    if shape == "cone":
        return sd_cone(p, CONE_R, CONE_HALF_H)
    if shape == "cylinder":
        return sd_cylinder(p, CYLINDER_R, CYLINDER_HALF_H)
    if shape == "torus":
        return sd_torus(p, TORUS_R, TORUS_r)
    if shape == "pyramid":
        return sd_pyramid(p, PYRAMID_HALF, PYRAMID_HALF_H)
    if shape == "capsule":
        return sd_capsule(p, CAPSULE_R, CAPSULE_HALF_SEG)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def volume(shape: str) -> float:
    """Closed-form volume (scene units^3)."""
    return {
        "cube": (2 * CUBE_HALF) ** 3,
        "sphere": 4 / 3 * math.pi * SPHERE_R**3,
        "cone": math.pi * CONE_R**2 * 2 * CONE_HALF_H / 3,
        "cylinder": math.pi * CYLINDER_R**2 * 2 * CYLINDER_HALF_H,
        "torus": 2 * math.pi**2 * TORUS_R * TORUS_r**2,
        "pyramid": (2 * PYRAMID_HALF) ** 2 * 2 * PYRAMID_HALF_H / 3,
        "capsule": math.pi * CAPSULE_R**2 * (4 / 3 * CAPSULE_R + 2 * CAPSULE_HALF_SEG),
    }[shape]


def bounding_radius(shape: str) -> float:
    return {
        "cube": CUBE_HALF * math.sqrt(3), "sphere": SPHERE_R, "cone": math.hypot(CONE_R, CONE_HALF_H),
        "cylinder": math.hypot(CYLINDER_R, CYLINDER_HALF_H), "torus": TORUS_R + TORUS_r,
        "pyramid": math.hypot(PYRAMID_HALF * math.sqrt(2), PYRAMID_HALF_H),
        "capsule": CAPSULE_R + CAPSULE_HALF_SEG,
    }[shape]


# Yaw symmetry of each shape (degrees; 0: a solid of revolution about Z, no yaw search needed).
YAW_PERIOD = {"cube": 90.0, "pyramid": 90.0, "sphere": 0.0, "cone": 0.0, "cylinder": 0.0, "torus": 0.0,
              "capsule": 0.0}
