"""Fused multiresolution hash encoding on CUDA (Triton): every level in one launch.

Why by hand: tiny-cuda-nn would need a CUDA compiler at install time and has no closed-form
Jacobian output, and the PyTorch reference (``HashGridEncoding._forward_torch``) launches ~15
small kernels per level whose launch gaps and (double) backward dominated the GPU step (see
``results/speed/NOTES.md``). One program handles ``BLOCK`` points at one level; the forward
writes the features and, when asked, d(features)/d(x); the backward scatters the table gradient
of both with atomic adds (as tiny-cuda-nn does). Positions get no gradient: nothing upstream of
the encoder is learnt, and analytic normals use the Jacobian output instead of a double backward.

Checked against the PyTorch reference by ``backend/bench/hashgrid_check.py``, which
``tests/test_hashgrid_triton.py`` runs (on a GPU, or on the CPU under ``TRITON_INTERPRET=1``) and
``python -m backend bench speed`` reports.
"""

from __future__ import annotations

import functools

import torch

from backend.engine.hash_primes import PRIMES

try:
    import triton
    import triton.language as tl
except ImportError:              # CPU-only installs: the PyTorch path is used
    triton = None

BLOCK = 128


@functools.lru_cache(maxsize=None)
def available() -> bool:
    return triton is not None and torch.cuda.is_available()


if triton is not None:
    # The hash primes as compile-time constants of the kernels (the same values as the reference).
    _PRIME_X = tl.constexpr(PRIMES[0])
    _PRIME_Y = tl.constexpr(PRIMES[1])
    _PRIME_Z = tl.constexpr(PRIMES[2])

    @triton.jit
    def _corner(ix, iy, iz, res, size, dense, DX: tl.constexpr, DY: tl.constexpr, DZ: tl.constexpr):
        """Row within the level's table of corner (ix+DX, iy+DY, iz+DZ): dense index or spatial hash.

        The hash is computed in uint32 (wrapping, as tiny-cuda-nn does) and keeps the low bits: the
        table size is a power of two <= 2^24, and the low 32 bits of a product or XOR do not depend
        on the higher ones, so this equals the reference's int64 hash exactly. (The int64 version
        cost ~4x the integer work: 64-bit multiplies are emulated on the GPU.) Dense levels have
        (res + 1)^3 <= size rows, so int32 is enough there too."""
        cx = (ix + DX).to(tl.uint32)
        cy = (iy + DY).to(tl.uint32)
        cz = (iz + DZ).to(tl.uint32)
        r1 = (res + 1).to(tl.uint32)
        dense_row = cx + cy * r1 + cz * r1 * r1
        hashed = ((cx * _PRIME_X) ^ (cy * _PRIME_Y) ^ (cz * _PRIME_Z)) & (size.to(tl.uint32) - 1)
        return tl.where(dense != 0, dense_row, hashed).to(tl.int64)

    @triton.jit
    def _weights(fx, fy, fz, DX: tl.constexpr, DY: tl.constexpr, DZ: tl.constexpr):
        """Trilinear weight of a corner and its derivatives along each fraction."""
        wx = fx if DX else 1.0 - fx
        wy = fy if DY else 1.0 - fy
        wz = fz if DZ else 1.0 - fz
        sx = 1.0 if DX else -1.0
        sy = 1.0 if DY else -1.0
        sz = 1.0 if DZ else -1.0
        return wx * wy * wz, sx * wy * wz, wx * sy * wz, wx * wy * sz

    @triton.jit
    def _cell(x_ptr, meta_ptr, level, offs, mask, inv_span, bound):
        x = tl.load(x_ptr + offs * 3 + 0, mask=mask, other=0.0)
        y = tl.load(x_ptr + offs * 3 + 1, mask=mask, other=0.0)
        z = tl.load(x_ptr + offs * 3 + 2, mask=mask, other=0.0)
        res = tl.load(meta_ptr + level * 4 + 0).to(tl.int32)
        size = tl.load(meta_ptr + level * 4 + 1).to(tl.int32)
        offset = tl.load(meta_ptr + level * 4 + 2)
        dense = tl.load(meta_ptr + level * 4 + 3)
        resf = res.to(tl.float32)
        rx, ry, rz = (x + bound) * inv_span, (y + bound) * inv_span, (z + bound) * inv_span
        # d(pos)/dx per axis: res / (2 bound) inside the box, 0 where the clamp holds.
        gx = tl.where((rx >= 0.0) & (rx <= 1.0), resf * inv_span, 0.0)
        gy = tl.where((ry >= 0.0) & (ry <= 1.0), resf * inv_span, 0.0)
        gz = tl.where((rz >= 0.0) & (rz <= 1.0), resf * inv_span, 0.0)
        px = tl.minimum(tl.maximum(rx, 0.0), 1.0) * resf
        py = tl.minimum(tl.maximum(ry, 0.0), 1.0) * resf
        pz = tl.minimum(tl.maximum(rz, 0.0), 1.0) * resf
        bx = tl.minimum(tl.floor(px), resf - 1.0)
        by = tl.minimum(tl.floor(py), resf - 1.0)
        bz = tl.minimum(tl.floor(pz), resf - 1.0)
        return (px - bx, py - by, pz - bz, bx.to(tl.int32), by.to(tl.int32), bz.to(tl.int32),
                gx, gy, gz, res, size, offset, dense)

    # Both kernels work on a [BLOCK points, FP2 features] tile: a corner's row is hashed once and its
    # F features are read (or their gradients added) together, instead of re-hashing per feature.
    @triton.jit
    def _fwd_kernel(x_ptr, table_ptr, meta_ptr, feat_ptr, jac_ptr, N, n_active, inv_span, bound,
                    N_LEVELS: tl.constexpr, F: tl.constexpr, FP2: tl.constexpr, WITH_JAC: tl.constexpr,
                    BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        level = tl.program_id(1)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        feats = tl.arange(0, FP2)
        tile_mask = mask[:, None] & (feats < F)[None, :]
        out_cols = N_LEVELS * F
        out = offs.to(tl.int64)[:, None] * out_cols + level * F + feats[None, :]     # [BLOCK, FP2]
        if level >= n_active:           # locked level: zero features (and Jacobian)
            zero = tl.zeros([BLOCK, FP2], tl.float32)
            tl.store(feat_ptr + out, zero, mask=tile_mask)
            if WITH_JAC:
                for d in tl.static_range(3):
                    tl.store(jac_ptr + out * 3 + d, zero, mask=tile_mask)
        else:
            fx, fy, fz, ix, iy, iz, gx, gy, gz, res, size, offset, dense = _cell(
                x_ptr, meta_ptr, level, offs, mask, inv_span, bound)
            acc = tl.zeros([BLOCK, FP2], tl.float32)
            jx = tl.zeros([BLOCK, FP2], tl.float32)
            jy = tl.zeros([BLOCK, FP2], tl.float32)
            jz = tl.zeros([BLOCK, FP2], tl.float32)
            for c in tl.static_range(8):       # corner c = dx + 2 dy + 4 dz, as CORNERS
                row = _corner(ix, iy, iz, res, size, dense, c & 1, (c >> 1) & 1, (c >> 2) & 1) + offset
                t = tl.load(table_ptr + row[:, None] * F + feats[None, :], mask=tile_mask, other=0.0)
                w, dwx, dwy, dwz = _weights(fx, fy, fz, c & 1, (c >> 1) & 1, (c >> 2) & 1)
                acc += w[:, None] * t
                if WITH_JAC:
                    jx += dwx[:, None] * t
                    jy += dwy[:, None] * t
                    jz += dwz[:, None] * t
            tl.store(feat_ptr + out, acc, mask=tile_mask)
            if WITH_JAC:
                tl.store(jac_ptr + out * 3 + 0, jx * gx[:, None], mask=tile_mask)
                tl.store(jac_ptr + out * 3 + 1, jy * gy[:, None], mask=tile_mask)
                tl.store(jac_ptr + out * 3 + 2, jz * gz[:, None], mask=tile_mask)

    @triton.jit
    def _bwd_kernel(x_ptr, meta_ptr, gfeat_ptr, gjac_ptr, gtable_ptr, N, n_active, inv_span, bound,
                    N_LEVELS: tl.constexpr, F: tl.constexpr, FP2: tl.constexpr, HAS_GFEAT: tl.constexpr,
                    HAS_GJAC: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        level = tl.program_id(1)
        if level < n_active:
            offs = pid * BLOCK + tl.arange(0, BLOCK)
            mask = offs < N
            feats = tl.arange(0, FP2)
            tile_mask = mask[:, None] & (feats < F)[None, :]
            out_cols = N_LEVELS * F
            out = offs.to(tl.int64)[:, None] * out_cols + level * F + feats[None, :]
            fx, fy, fz, ix, iy, iz, gx, gy, gz, res, size, offset, dense = _cell(
                x_ptr, meta_ptr, level, offs, mask, inv_span, bound)
            ge = tl.zeros([BLOCK, FP2], tl.float32)
            if HAS_GFEAT:
                ge = tl.load(gfeat_ptr + out, mask=tile_mask, other=0.0)
            gjx = tl.zeros([BLOCK, FP2], tl.float32)
            gjy = tl.zeros([BLOCK, FP2], tl.float32)
            gjz = tl.zeros([BLOCK, FP2], tl.float32)
            if HAS_GJAC:
                gjx = tl.load(gjac_ptr + out * 3 + 0, mask=tile_mask, other=0.0) * gx[:, None]
                gjy = tl.load(gjac_ptr + out * 3 + 1, mask=tile_mask, other=0.0) * gy[:, None]
                gjz = tl.load(gjac_ptr + out * 3 + 2, mask=tile_mask, other=0.0) * gz[:, None]
            for c in tl.static_range(8):
                row = _corner(ix, iy, iz, res, size, dense, c & 1, (c >> 1) & 1, (c >> 2) & 1) + offset
                w, dwx, dwy, dwz = _weights(fx, fy, fz, c & 1, (c >> 1) & 1, (c >> 2) & 1)
                g = w[:, None] * ge + dwx[:, None] * gjx + dwy[:, None] * gjy + dwz[:, None] * gjz
                # Zero contributions change nothing: skipping them keeps the padding of a fixed
                # sample budget (all at one point) from piling atomics onto a few table rows
                # (run 5: 37 ms a step).
                tl.atomic_add(gtable_ptr + row[:, None] * F + feats[None, :], g, mask=tile_mask & (g != 0.0))


def _launch_grid(n: int, n_levels: int):
    return (triton.cdiv(n, BLOCK), n_levels)


class _FusedHashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, meta, n_active, bound, with_jacobian):
        x = x.contiguous().float()
        n, (n_levels, f) = x.shape[0], (meta.shape[0], table.shape[1])
        feats = torch.empty(n, n_levels * f, device=x.device, dtype=torch.float32)
        jac = torch.empty(n, n_levels * f, 3, device=x.device, dtype=torch.float32) if with_jacobian else feats
        if n:
            _fwd_kernel[_launch_grid(n, n_levels)](x, table, meta, feats, jac, n, n_active, 1.0 / (2 * bound),
                                                   bound, N_LEVELS=n_levels, F=f, FP2=triton.next_power_of_2(f),
                                                   WITH_JAC=with_jacobian, BLOCK=BLOCK)
        ctx.save_for_backward(x, meta)
        ctx.table_shape, ctx.n_active, ctx.bound = table.shape, n_active, bound
        ctx.set_materialize_grads(False)
        if with_jacobian:
            return feats, jac
        return feats

    @staticmethod
    def backward(ctx, grad_feats, grad_jac=None):
        x, meta = ctx.saved_tensors
        grad_table = torch.zeros(ctx.table_shape, device=x.device, dtype=torch.float32)
        n, n_levels = x.shape[0], meta.shape[0]
        if n and (grad_feats is not None or grad_jac is not None):
            gf = grad_feats.contiguous() if grad_feats is not None else grad_table
            gj = grad_jac.contiguous() if grad_jac is not None else grad_table
            _bwd_kernel[_launch_grid(n, n_levels)](x, meta, gf, gj, grad_table, n, ctx.n_active,
                                                   1.0 / (2 * ctx.bound), ctx.bound, N_LEVELS=n_levels,
                                                   F=ctx.table_shape[1], FP2=triton.next_power_of_2(ctx.table_shape[1]),
                                                   HAS_GFEAT=grad_feats is not None,
                                                   HAS_GJAC=grad_jac is not None, BLOCK=BLOCK)
        return None, grad_table, None, None, None, None


def hash_encode(x: torch.Tensor, table: torch.Tensor, meta: torch.Tensor, n_active: int, bound: float,
                with_jacobian: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(features (N, L*F), Jacobian (N, L*F, 3) or None) of points ``x`` (N, 3); ``meta`` is
    ``HashGridEncoding.level_meta``. Differentiable in ``table`` only."""
    out = _FusedHashEncode.apply(x, table, meta, int(n_active), float(bound), bool(with_jacobian))
    if with_jacobian:
        return out[0], out[1]
    return out, None
