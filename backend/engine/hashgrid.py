"""Multiresolution hash encoding (Instant-NGP), in plain PyTorch.

Written by hand because tiny-cuda-nn is CUDA-only and needs a compiler at install time; this
version runs everywhere, is the tested reference for any fused GPU kernel, and supports double
backward (analytic normals need d(features)/d(x) to stay differentiable).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Instant-NGP's spatial hash primes (the first is 1 so coarse levels stay coherent).
PRIMES = (1, 2654435761, 805459861)

# The 8 corners of a voxel, as (dx, dy, dz) in {0,1}; corner i = dx + 2*dy + 4*dz.
CORNERS = torch.tensor([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=torch.long)


def level_resolutions(n_levels: int, base_resolution: int, max_resolution: int) -> list[int]:
    """Grid resolution of each level: geometric from base to max (threestudio/tcnn convention)."""
    if n_levels == 1:
        return [base_resolution]
    scale = math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1))
    return [int(math.floor(base_resolution * scale**level)) for level in range(n_levels)]


class HashGridEncoding(nn.Module):
    """Encode points in [-bound, bound]^3 into ``n_levels * n_features`` trilinearly interpolated features.

    Levels whose dense grid fits in the table are indexed densely (no collisions); finer levels hash.
    Progressive unlocking (``set_active_levels``) zeroes the features of the finer, locked levels.
    """

    def __init__(self, n_levels: int = 16, n_features: int = 2, log2_table_size: int = 19,
                 base_resolution: int = 16, max_resolution: int = 4096, bound: float = 1.0):
        super().__init__()
        self.n_levels, self.n_features, self.bound = n_levels, n_features, bound
        self.resolutions = level_resolutions(n_levels, base_resolution, max_resolution)
        table_size = 2**log2_table_size
        sizes, self.dense = [], []
        for res in self.resolutions:
            dense_size = (res + 1) ** 3
            self.dense.append(dense_size <= table_size)
            sizes.append(min(dense_size, table_size))
        self.sizes = sizes
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.offsets = offsets
        # tcnn's initialisation: tiny uniform values, so the MLP first sees ~zero features.
        self.table = nn.Parameter(torch.empty(offsets[-1], n_features).uniform_(-1e-4, 1e-4))
        # A Python int, not a tensor, so the forward pass never syncs with the GPU to read it;
        # saved in checkpoints through get_extra_state.
        self.n_active = n_levels

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features

    def set_active_levels(self, n_active: int) -> None:
        self.n_active = max(1, min(int(n_active), self.n_levels))

    def get_extra_state(self):
        return {"n_active": self.n_active}

    def set_extra_state(self, state) -> None:
        self.n_active = int(state["n_active"])

    def level_index(self, level: int, corner: torch.Tensor) -> torch.Tensor:
        """Table row of integer grid ``corner`` (..., 3) at ``level`` (the brute-force definition)."""
        res, size = self.resolutions[level], self.sizes[level]
        if self.dense[level]:
            idx = corner[..., 0] + corner[..., 1] * (res + 1) + corner[..., 2] * (res + 1) ** 2
        else:
            idx = (corner[..., 0] * PRIMES[0]) ^ (corner[..., 1] * PRIMES[1]) ^ (corner[..., 2] * PRIMES[2])
            idx = idx % size
        return idx + self.offsets[level]

    def _corner_rows(self, level: int, base: torch.Tensor) -> torch.Tensor:
        """Rows (within the level's table) of the 8 corners (N, 8), corner order dz*4 + dy*2 + dx, built per axis and
        broadcast: 6 small per-axis terms instead of 24 full-size index operations."""
        res, size = self.resolutions[level], self.sizes[level]
        ax = torch.stack([base, base + 1], dim=1)                               # (N, 2, 3)
        if self.dense[level]:
            ax = ax * torch.tensor([1, res + 1, (res + 1) ** 2], device=base.device)
            rows = ax[:, None, None, :, 0] + ax[:, None, :, None, 1] + ax[:, :, None, None, 2]
        else:
            ax = ax * torch.tensor(PRIMES, device=base.device)
            rows = ax[:, None, None, :, 0] ^ ax[:, None, :, None, 1] ^ ax[:, :, None, None, 2]
            rows = rows & (size - 1)         # the table size is a power of two
        return rows.reshape(-1, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x01 = ((x + self.bound) / (2 * self.bound)).clamp(0.0, 1.0)
        outputs = []
        # One level at a time keeps the (N, 8) index tensors small; a fused kernel would do all at once.
        for level, res in enumerate(self.resolutions):
            if level >= self.n_active:
                outputs.append(x.new_zeros(x.shape[0], self.n_features))
                continue
            pos = x01 * res
            base = pos.detach().floor().clamp(max=res - 1)
            frac = pos - base                                          # (N, 3), differentiable in x
            rows = self._corner_rows(level, base.long())               # (N, 8)
            # Gather from this level's slice so the backward pass zero-fills only that slice.
            table = self.table[self.offsets[level]: self.offsets[level + 1]]
            feats = table.index_select(0, rows.reshape(-1)).reshape(-1, 8, self.n_features)
            wx, wy, wz = (torch.stack([1.0 - frac[:, i], frac[:, i]], dim=1) for i in range(3))
            w = (wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]).reshape(-1, 8)
            outputs.append(torch.bmm(w[:, None, :], feats)[:, 0])
        return torch.cat(outputs, dim=-1)
