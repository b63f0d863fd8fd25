"""Procedural albedo of the built-in prior's objects: wood, planks, staves, stone, bricks, metal,
glaze, foliage and painted patterns (spots, stripes), as functions of position.

A material is a callable ``f(p) -> (N, 3)`` linear RGB in [0, 1], evaluated at surface points
``p`` (N, 3) in the frame of the part it colours. Pattern contrast is kept moderate (about
+-10-15% of the base colour) except where the pattern is the point (mushroom spots, vase
stripes): a 64 px prior can learn a modest pattern, and a blurred result still has the right
mean colour, which is what the benchmark's albedo error measures first.
Patterns are written here because they are a handful of lines each over the project's own
coordinates; noise libraries (``noise``, ``opensimplex``) are NumPy/scalar and not batched on the GPU.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Material = Callable[[torch.Tensor], torch.Tensor]

# Albedo of each colour word of the prompt grammar, linear RGB in [0, 1]: the ground truth of the
# quality benchmark (re-exported as ``grammar.COLOURS``).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.95, 0.50, 0.08),
    "yellow": (0.95, 0.85, 0.12),
    "green": (0.15, 0.65, 0.20),
    "cyan": (0.10, 0.75, 0.80),
    "blue": (0.12, 0.25, 0.85),
    "purple": (0.55, 0.20, 0.75),
    "white": (0.92, 0.92, 0.92),
}

# Base colours of the props' materials (linear RGB).
WOOD = (0.55, 0.34, 0.17)
DARK_WOOD = (0.36, 0.21, 0.10)
LIGHT_WOOD = (0.72, 0.52, 0.30)
STONE = (0.55, 0.54, 0.51)
DARK_STONE = (0.38, 0.37, 0.36)
IRON = (0.30, 0.30, 0.32)
STEEL = (0.70, 0.72, 0.75)
BRASS = (0.78, 0.62, 0.25)
GLOW = (1.00, 0.85, 0.35)
FOLIAGE = (0.16, 0.45, 0.14)
PINE = (0.10, 0.33, 0.16)
CREAM = (0.90, 0.86, 0.74)
WAX = (0.93, 0.91, 0.84)
FLAME = (1.00, 0.65, 0.10)
CORK = (0.70, 0.55, 0.35)
ROOF_RED = (0.65, 0.16, 0.10)
DOOR = (0.30, 0.17, 0.08)
DARK = (0.08, 0.07, 0.07)


def _rgb(colour, p: torch.Tensor) -> torch.Tensor:
    return p.new_tensor(colour).expand(p.shape[0], 3)


def hash01(k: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A stable pseudo-random value in [0, 1) per integer cell ``k`` (float tensor of integers)."""
    i = k.to(torch.int64) * 73856093 + seed * 19349663
    i = (i ^ (i >> 13)) * 83492791
    return ((i ^ (i >> 16)) % 1000).abs().to(k.dtype) / 1000.0


def flat(colour) -> Material:
    return lambda p: _rgb(colour, p)


def grain(colour, axis: int = 2, strength: float = 0.10) -> Material:
    """Wood grain: soft stripes along ``axis`` (the wood's length), wavy across it."""
    def f(p):
        u = p[:, (axis + 1) % 3] + 0.5 * p[:, (axis + 2) % 3]
        wave = torch.sin(45.0 * u + 4.0 * torch.sin(6.0 * p[:, axis]))
        return (_rgb(colour, p) * (1.0 + strength * wave)[:, None]).clamp(0, 1)
    return f


def planks(colour, across: int, width: float, along: int = 2, seam: float = 0.10) -> Material:
    """Boards of ``width`` side by side along axis ``across``, each a little lighter or darker,
    with dark seams between them and grain along ``along``."""
    base = grain(colour, along, 0.08)

    def f(p):
        u = p[:, across] / width
        k = torch.floor(u)
        jitter = 0.85 + 0.3 * hash01(k, 1)
        gap = (u - k < seam) | (u - k > 1 - seam / 2)
        shade = torch.where(gap, torch.full_like(u, 0.55), jitter)
        return (base(p) * shade[:, None]).clamp(0, 1)
    return f


def staves(colour, count: int = 14) -> Material:
    """Barrel and bucket staves: planks around the Z axis (``count`` of them, or per point from a
    fourth column of ``p``), grain along Z."""
    base = grain(colour, 2, 0.08)

    def f(p):
        n = p[:, 3] if p.shape[1] > 3 else count
        p = p[:, :3]
        u = (torch.atan2(p[:, 1], p[:, 0]) / (2 * math.pi) + 0.5) * n
        k = torch.floor(u)
        jitter = 0.85 + 0.3 * hash01(k, 2)
        gap = (u - k) < 0.12
        shade = torch.where(gap, torch.full_like(u, 0.55), jitter)
        return (base(p) * shade[:, None]).clamp(0, 1)
    return f


def bricks(colour, height: float = 0.09, length: float = 0.18, mortar=(0.72, 0.70, 0.66)) -> Material:
    """Stone blocks in running bond (rows of ``height``, offset by half a block every other row),
    on a surface around the Z axis or a wall: the block index uses the angle-free coordinate
    ``x + y`` so the pattern wraps any wall; mortar lines between blocks."""
    def f(p):
        v = p[:, 2] / height
        row = torch.floor(v)
        u = (p[:, 0] + p[:, 1] + 0.5 * length * (row % 2)) / length
        col = torch.floor(u)
        jitter = 0.85 + 0.3 * hash01(row * 131 + col, 3)
        joint = ((v - row) < 0.12) | ((u - col) < 0.07)
        block = _rgb(colour, p) * jitter[:, None]
        return torch.where(joint[:, None], _rgb(mortar, p), block).clamp(0, 1)
    return f


def mottled(colour, strength: float = 0.14) -> Material:
    """Rough natural surfaces (rock, foliage): low-frequency blotches from a sum of sines."""
    def f(p):
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        n = (torch.sin(9.1 * x + 3.0 * torch.sin(7.3 * z)) + torch.sin(8.3 * y - 2.1 * x)
             + torch.sin(10.7 * z + 2.5 * torch.sin(6.1 * y))) / 3.0
        return (_rgb(colour, p) * (1.0 + strength * n)[:, None]).clamp(0, 1)
    return f


def metal(colour, strength: float = 0.06) -> Material:
    """Worked metal: nearly flat, a faint vertical gradient (as if brushed/weathered)."""
    def f(p):
        return (_rgb(colour, p) * (1.0 + strength * torch.tanh(3.0 * p[:, 2]))[:, None]).clamp(0, 1)
    return f


def stripes(colour, stripe_colour, axis: int = 2, period: float = 0.16, duty: float = 0.3) -> Material:
    """Painted bands across ``axis`` (vase, candle): ``duty`` of each ``period`` in ``stripe_colour``."""
    def f(p):
        u = p[:, axis] / period
        band = (u - torch.floor(u)) < duty
        return torch.where(band[:, None], _rgb(stripe_colour, p), _rgb(colour, p))
    return f


# Directions of the white spots on a mushroom cap (unit vectors, upper hemisphere), fixed so the
# ground truth and the training renders agree.
_SPOTS = [(0.0, 0.0, 1.0)] + [
    (math.cos(a) * math.sin(t), math.sin(a) * math.sin(t), math.cos(t))
    for t, n, off in ((0.75, 5, 0.0), (1.25, 8, 0.4)) for a in [off + 2 * math.pi * i / n for i in range(n)]]


def spots(colour, spot_colour=(0.95, 0.95, 0.92), centre=(0.0, 0.0, 0.0), size: float = 0.22) -> Material:
    """Round spots (a fly agaric's cap): points whose direction from ``centre`` is within ``size``
    radians of one of the fixed spot directions."""
    def f(p):
        d = p - p.new_tensor(centre)
        d = d / torch.linalg.vector_norm(d, dim=1, keepdim=True).clamp(min=1e-6)
        cos = d @ p.new_tensor(_SPOTS).T
        spot = cos.amax(dim=1) > math.cos(size)
        return torch.where(spot[:, None], _rgb(spot_colour, p), _rgb(colour, p))
    return f
