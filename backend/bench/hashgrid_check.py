"""The fused Triton hash-grid kernel against the PyTorch reference encoder, on fresh random inputs.

Run by ``python -m backend bench speed`` (on the GPU it measures) and by
``tests/test_hashgrid_triton.py`` (on a GPU, or on the CPU under Triton's interpreter). It lives
with the benchmarks, not in the kernel's module, so that module never imports the reference encoder
that dispatches to it.
"""

from __future__ import annotations

import torch

from backend.engine.hashgrid import HashGridEncoding
from backend.engine.hashgrid_triton import hash_encode

# Relative error allowed against the PyTorch reference on a GPU. The compiled kernel computes a cell's
# fraction as one fused multiply-add (x01 * res - floor), the reference rounds x01 * res first: at
# res 4096 that rounding is up to 2.4e-4 of a cell, which gives a relative difference of 5.7e-5 over
# 16 levels (measured on the H100, and reproduced exactly on the CPU by emulating the FMA in float64;
# see results/speed/NOTES.md). A wrong corner, weight or hash shows as 1e-2 or more. Under Triton's
# interpreter (numpy, no FMA) the two agree to float32 rounding, and the CPU test holds them to 1e-5.
GPU_TOLERANCE = 1e-3
INTERPRETER_TOLERANCE = 1e-5


def compare_with_reference(device: str | torch.device, *, n_points: int = 20000, seed: int = 0) -> dict:
    """Relative errors of the fused kernel against the PyTorch reference (features, Jacobian and the
    table gradient of both; all levels and with locked levels; dense and hashed tables), on fresh
    random inputs that include points outside the box. Used by the GPU test and ``bench speed``."""
    gen = torch.Generator().manual_seed(seed)
    errors: dict[str, float] = {}
    # The reference's bmm must be true float32 (TF32 matmuls, which libraries may switch on, err ~1e-4).
    tf32, precision = torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        _compare(device, n_points, gen, errors)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.set_float32_matmul_precision(precision)
    return errors


def _compare(device, n_points: int, gen: torch.Generator, errors: dict) -> None:
    for log2, n_active in ((10, 16), (19, 16), (19, 11)):
        enc = HashGridEncoding(n_levels=16, n_features=2, log2_table_size=log2, base_resolution=16,
                               max_resolution=4096).to(device)
        with torch.no_grad():
            enc.table.copy_(torch.rand(enc.table.shape, generator=gen) * 2 - 1)
        enc.set_active_levels(n_active)
        x = (torch.rand(n_points, 3, generator=gen) * 2.1 - 1.05).to(device)
        ref_f, ref_j = enc._forward_torch(x, with_jacobian=True)
        meta = enc.level_meta(torch.device(device))
        f, j = hash_encode(x, enc.table, meta, enc.n_active, enc.bound, with_jacobian=True)
        gf = torch.randn(f.shape, generator=gen).to(device)
        gj = torch.randn(j.shape, generator=gen).to(device)
        g_ref, = torch.autograd.grad((ref_f.double() * gf).sum() + (ref_j.double() * gj).sum(), enc.table)
        g, = torch.autograd.grad((f * gf).sum() + (j * gj).sum(), enc.table)
        f_only, _ = hash_encode(x, enc.table, meta, enc.n_active, enc.bound, with_jacobian=False)
        tag = f"log2={log2},active={n_active}"

        def rel(a, b):
            return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm().clamp(min=1e-30))
        errors[f"features {tag}"] = rel(f, ref_f)
        errors[f"jacobian {tag}"] = rel(j, ref_j)
        errors[f"table grad {tag}"] = rel(g, g_ref)
        errors[f"features-only {tag}"] = rel(f_only, ref_f)
        if n_active < 16:
            errors[f"locked levels zero {tag}"] = float(f[:, n_active * 2:].abs().max() + j[:, n_active * 2:].abs().max())
