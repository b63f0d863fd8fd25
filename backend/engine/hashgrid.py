"""Multiresolution hash encoding (Instant-NGP), in plain PyTorch, with a fused Triton kernel on CUDA.

Written by hand because tiny-cuda-nn is CUDA-only and needs a compiler at install time; this
version runs everywhere and is the tested reference for the fused kernel (``hashgrid_triton``;
``backend/bench/hashgrid_check.py`` compares the two).
``forward_with_jacobian`` also returns d(features)/d(x) in closed form, so analytic normals need
no double backward (the fused kernel computes both in one launch); ``forward`` on the PyTorch path
supports double backward as well, which the tests use as the reference for the closed form.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from backend.engine.hash_primes import PRIMES

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
                 base_resolution: int = 16, max_resolution: int = 4096, bound: float = 1.0, fused: bool = True):
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
        # ``fused``: use the fused Triton kernel for CUDA inputs when Triton is there (the
        # ``hashgrid_backend`` setting); the PyTorch path is the reference and the CPU path.
        self.fused = fused
        self._meta: dict = {}

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

    def _use_fused(self, x: torch.Tensor) -> bool:
        if not (self.fused and x.is_cuda) or x.requires_grad:
            return False             # the kernel has no d/dx backward: position gradients take PyTorch
        from backend.engine import hashgrid_triton

        return hashgrid_triton.available()

    def level_meta(self, device: torch.device) -> torch.Tensor:
        """(n_levels, 4) int64 [resolution, size, offset, dense] for the fused kernel, cached per device."""
        key = str(device)
        if key not in self._meta:
            self._meta[key] = torch.tensor([[r, s, o, int(d)] for r, s, o, d in
                                            zip(self.resolutions, self.sizes, self.offsets, self.dense)],
                                           dtype=torch.int64, device=device)
        return self._meta[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: Float[Tensor, "N 3"] in [-bound, bound]^3 -> Float[Tensor, "N L*F"] features."""
        if self._use_fused(x):
            from backend.engine.hashgrid_triton import hash_encode

            return hash_encode(x, self.table, self.level_meta(x.device), self.n_active, self.bound,
                               with_jacobian=False)[0]
        return self._forward_torch(x, with_jacobian=False)[0]

    def forward_with_jacobian(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features Float[Tensor, "N L*F"] and their Jacobian d(features)/d(x) Float[Tensor, "N L*F 3"]
        of points Float[Tensor, "N 3"], both differentiable
        in the table (not in ``x``): what analytic normals need, without a double backward."""
        if self._use_fused(x):
            from backend.engine.hashgrid_triton import hash_encode

            return hash_encode(x, self.table, self.level_meta(x.device), self.n_active, self.bound,
                               with_jacobian=True)
        return self._forward_torch(x, with_jacobian=True)

    def _forward_torch(self, x: torch.Tensor, with_jacobian: bool):
        raw01 = (x + self.bound) / (2 * self.bound)
        x01 = raw01.clamp(0.0, 1.0)
        # d(x01)/dx: 1/(2*bound) inside the box, 0 where the clamp holds (as autograd's clamp).
        inside = ((raw01 >= 0.0) & (raw01 <= 1.0)).to(x.dtype) / (2 * self.bound)
        outputs, jacobians = [], []
        # One level at a time keeps the (N, 8) index tensors small; the fused kernel does all at once.
        for level, res in enumerate(self.resolutions):
            if level >= self.n_active:
                outputs.append(x.new_zeros(x.shape[0], self.n_features))
                if with_jacobian:
                    jacobians.append(x.new_zeros(x.shape[0], self.n_features, 3))
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
            if with_jacobian:
                # d(w_corner)/d(frac_axis): the other two axes' weights times -1 or +1.
                sign = torch.tensor([-1.0, 1.0], dtype=x.dtype, device=x.device)
                dwx = (wz[:, :, None, None] * wy[:, None, :, None] * sign[None, None, None, :]).reshape(-1, 8)
                dwy = (wz[:, :, None, None] * sign[None, None, :, None] * wx[:, None, None, :]).reshape(-1, 8)
                dwz = (sign[None, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]).reshape(-1, 8)
                dw = torch.stack([dwx, dwy, dwz], dim=-1).detach() * (inside * res)[:, None, :]   # (N, 8, 3)
                jacobians.append(torch.bmm(feats.transpose(1, 2), dw))                          # (N, F, 3)
        feats = torch.cat(outputs, dim=-1)
        return feats, (torch.cat(jacobians, dim=1) if with_jacobian else None)
