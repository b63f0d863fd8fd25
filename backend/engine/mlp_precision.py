"""The precision of the field's small MLPs (the ``field_precision`` setting): fp32, TF32 or bf16.

Why: on an H200 the field's MLPs (hash-grid features -> 64 -> 4, over ~0.5M sampler points and
~0.13M rendered samples a 64^2 step) ran as fp32 FFMA GEMMs, without tensor cores: ~2.5 ms of a
~36 ms step (results/speed/NOTES.md, measurement 6). tiny-cuda-nn, which threestudio and
Instant-NGP use for these MLPs, runs them in fp16 throughout; TF32 keeps fp32 storage and range and
rounds only the products' inputs to a 10-bit mantissa (fp16's), with fp32 accumulation.

- ``tf32``: the MLP's products, forward and backward, on the tensor cores in TF32. PyTorch has no
  per-operation TF32 switch, only a process-wide flag, so ``TF32Linear`` turns it on around its own
  products and back after (its backward too, wherever the backward is called from). Another
  thread's fp32 CUDA matmul that runs in the same instant may run in TF32 as well (the engine runs no
  other fp32 CUDA products of weight).
- ``bf16``: the MLP under ``torch.autocast`` (bfloat16 products, activations and their backward;
  thread-local, no flag), its output back in fp32. Halves the MLP's memory traffic, 7-bit mantissa.
- ``fp32``: plain PyTorch (``auto`` on the CPU, where there is no TF32).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

PRECISIONS = ("fp32", "tf32", "bf16")


def resolve(precision: str, device: torch.device | str) -> str:
    """The setting's ``auto``: TF32 on CUDA (tensor cores, fp32 range and storage), fp32 elsewhere."""
    if precision == "auto":
        return "tf32" if torch.device(device).type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"field_precision must be auto or one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


@contextlib.contextmanager
def tf32_matmuls():
    """CUDA fp32 matrix products in TF32 inside the block (the process-wide flag, restored after)."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):          # PyTorch >= 2.9: mixing in the legacy flag is an error
        previous = matmul.fp32_precision
        matmul.fp32_precision = "tf32"
        try:
            yield
        finally:
            matmul.fp32_precision = previous
    else:
        previous = matmul.allow_tf32
        matmul.allow_tf32 = True
        try:
            yield
        finally:
            matmul.allow_tf32 = previous


class TF32Linear(torch.autograd.Function):
    """``F.linear`` whose forward and backward products run in TF32 (``tf32_matmuls``); the same
    values as ``F.linear`` on the CPU (``tests/test_engine.py`` checks the hand-written backward with
    ``gradcheck``). Not twice differentiable: the field's normals are in closed form."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        with tf32_matmuls():
            return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        with tf32_matmuls():
            if ctx.needs_input_grad[0]:
                grad_x = grad @ weight
            if ctx.needs_input_grad[1]:
                grad_w = grad.t() @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, precision: str) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` in ``precision`` (resolved: fp32, tf32 or bf16). bf16 returns a
    bfloat16 tensor (the next layer takes it as is); the caller converts the MLP's output back."""
    if precision == "tf32" and x.is_cuda:
        return TF32Linear.apply(x, weight, bias)
    if precision == "bf16":
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return F.linear(x, weight, bias)
    return F.linear(x, weight, bias)
