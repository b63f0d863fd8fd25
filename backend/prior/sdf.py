"""Signed distance primitives and CSG operations for the built-in prior's objects (torch).

Every function takes points ``p`` of shape ``(N, 3)`` and returns distances ``(N,)``, negative
inside. Size arguments are floats or per-point tensors ``(N,)`` (broadcast), so a batch of
renders can give every image its own proportions in one call. Formulas follow Inigo Quilez's
distance-function notes; a few (the capped cone's outside, ``max`` of planes) are bounds rather
than exact distances away from the surface, which is all sphere tracing and inside tests need.
Written here rather than taken from a library: the PyPI SDF packages (``sdf``, ``pysdf``) work on
NumPy meshes or one shape at a time, not on batched torch tensors with per-point parameters.
"""

from __future__ import annotations

import math

import torch

def _t(x, p: torch.Tensor) -> torch.Tensor:
    """A float or tensor size argument as a tensor on ``p``'s device."""
    return torch.as_tensor(x, dtype=p.dtype, device=p.device)


def length2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x * x + y * y)


def radial(p: torch.Tensor) -> torch.Tensor:
    """Distance from the Z axis."""
    return length2(p[:, 0], p[:, 1])


def shift(p: torch.Tensor, x=0.0, y=0.0, z=0.0) -> torch.Tensor:
    """Points in the frame of a part centred at (x, y, z)."""
    return torch.stack([p[:, 0] - x, p[:, 1] - y, p[:, 2] - z], dim=1)


def axis_x(p: torch.Tensor) -> torch.Tensor:
    """Coordinates in which a Z-axis primitive lies along X (its axis becomes the world X)."""
    return torch.stack([p[:, 1], p[:, 2], p[:, 0]], dim=1)


def axis_y(p: torch.Tensor) -> torch.Tensor:
    """Coordinates in which a Z-axis primitive lies along Y."""
    return torch.stack([p[:, 2], p[:, 0], p[:, 1]], dim=1)


def rotate_z(p: torch.Tensor, degrees: float) -> torch.Tensor:
    """Points rotated by ``degrees`` about the up (Z) axis, counter-clockwise seen from above."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    x, y = p[:, 0], p[:, 1]
    return torch.stack([c * x - s * y, s * x + c * y, p[:, 2]], dim=1)


# -- primitives -------------------------------------------------------------------------------------
def box(p: torch.Tensor, hx, hy, hz) -> torch.Tensor:
    """Axis-aligned box of half extents (hx, hy, hz), centred at the origin (exact)."""
    qx, qy, qz = p[:, 0].abs() - hx, p[:, 1].abs() - hy, p[:, 2].abs() - hz
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2 + qz.clamp(min=0) ** 2)
    return outside + torch.maximum(torch.maximum(qx, qy), qz).clamp(max=0)


def sphere(p: torch.Tensor, r) -> torch.Tensor:
    return torch.linalg.vector_norm(p, dim=1) - r


def ellipsoid(p: torch.Tensor, rx, ry, rz) -> torch.Tensor:
    """Ellipsoid (Quilez's bound: exact on the surface, good enough off it)."""
    k0 = torch.sqrt((p[:, 0] / rx) ** 2 + (p[:, 1] / ry) ** 2 + (p[:, 2] / rz) ** 2)
    k1 = torch.sqrt((p[:, 0] / rx**2) ** 2 + (p[:, 1] / ry**2) ** 2 + (p[:, 2] / rz**2) ** 2)
    return k0 * (k0 - 1.0) / k1.clamp(min=1e-6)


def cylinder(p: torch.Tensor, r, h) -> torch.Tensor:
    """Capped cylinder about Z, radius ``r``, half height ``h`` (exact)."""
    dx, dz = radial(p) - r, p[:, 2].abs() - h
    return torch.maximum(dx, dz).clamp(max=0) + length2(dx.clamp(min=0), dz.clamp(min=0))


def tube(p: torch.Tensor, r_out, r_in, h) -> torch.Tensor:
    """A hollow cylinder (pipe) about Z: outer radius, inner radius, half height."""
    return torch.maximum(cylinder(p, r_out, h), -(radial(p) - r_in))


def cone(p: torch.Tensor, r_bottom, r_top, h) -> torch.Tensor:
    """Capped cone (frustum) about Z from radius ``r_bottom`` at z=-h to ``r_top`` at z=+h.

    The distance to the slanted side is measured perpendicular to it (exact for the side and
    the caps where they dominate; a bound near the rims)."""
    q = radial(p)
    z = p[:, 2]
    slope = _t((r_bottom - r_top) / (2 * h), p)
    r_at = r_bottom - slope * (z + h)                   # radius of the side at this height
    side = (q - r_at) / torch.sqrt(1 + slope**2)
    return torch.maximum(side, z.abs() - h)


def torus(p: torch.Tensor, major, minor) -> torch.Tensor:
    """Torus lying flat (axis Z)."""
    return length2(radial(p) - major, p[:, 2]) - minor


def capsule_z(p: torch.Tensor, r, half_seg) -> torch.Tensor:
    """Capsule about Z: a segment of half length ``half_seg`` thickened by ``r``."""
    hs = _t(half_seg, p)
    z = torch.maximum(torch.minimum(p[:, 2], hs), -hs)
    return torch.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2 + (p[:, 2] - z) ** 2) - r


def segment(p: torch.Tensor, a, b, r) -> torch.Tensor:
    """Capsule between points ``a`` and ``b`` (3-tuples of floats) of radius ``r``."""
    a_t, b_t = p.new_tensor(a), p.new_tensor(b)
    pa, ba = p - a_t, b_t - a_t
    h = ((pa * ba).sum(1) / (ba * ba).sum()).clamp(0.0, 1.0)
    return torch.linalg.vector_norm(pa - ba * h[:, None], dim=1) - r


def prism_roof(p: torch.Tensor, half_width, height, half_length) -> torch.Tensor:
    """A gable roof: triangular prism along Y, base ``2*half_width`` wide (X) at z=0, ridge at
    z=``height``, ``2*half_length`` long (bound)."""
    x, z = p[:, 0].abs(), p[:, 2]
    norm = torch.sqrt(_t(height, p) ** 2 + half_width**2)
    slope = (x * height + z * half_width - half_width * height) / norm
    return torch.maximum(torch.maximum(slope, -z), p[:, 1].abs() - half_length)


# -- operations -------------------------------------------------------------------------------------
def union(*ds: torch.Tensor) -> torch.Tensor:
    out = ds[0]
    for d in ds[1:]:
        out = torch.minimum(out, d)
    return out


def subtract(d: torch.Tensor, *cut: torch.Tensor) -> torch.Tensor:
    """``d`` with the solids ``cut`` removed."""
    return torch.maximum(d, -union(*cut))


def intersect(*ds: torch.Tensor) -> torch.Tensor:
    out = ds[0]
    for d in ds[1:]:
        out = torch.maximum(out, d)
    return out


def smooth_union(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def repeat_index(u: torch.Tensor, spacing, count) -> torch.Tensor:
    """Index (as float) of the nearest of ``count`` copies spaced ``spacing`` apart and centred on
    0 along a coordinate ``u`` (domain repetition with a finite count; count may be per point)."""
    k = torch.round(u / spacing + (count - 1) / 2)
    return torch.minimum(torch.maximum(k, torch.zeros_like(k)), count - 1 + torch.zeros_like(k))


def repeat_local(u: torch.Tensor, spacing, count) -> torch.Tensor:
    """``u`` in the frame of its nearest copy (see ``repeat_index``)."""
    return u - (repeat_index(u, spacing, count) - (count - 1) / 2) * spacing
