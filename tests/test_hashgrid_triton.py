"""The fused Triton hash-grid kernel against the PyTorch reference encoder.

On a CUDA machine it runs on the GPU (``bench speed`` runs the same check); on a CPU machine with
Triton installed it runs under Triton's interpreter (TRITON_INTERPRET=1, in a subprocess because
the variable is read when the kernels are defined), so CI checks the kernel's indexing, weights
and scatter logic without a GPU.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

triton = pytest.importorskip("triton")

CHECK = ("import json, sys; from backend.bench.hashgrid_check import compare_with_reference; "
         "print(json.dumps(compare_with_reference(sys.argv[1], n_points=int(sys.argv[2]))))")


def check_errors(errors: dict, tolerance: float) -> None:
    assert len(errors) == 13
    bad = {k: v for k, v in errors.items() if not v <= tolerance}      # NaN fails too
    assert not bad, bad


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_hashgrid_matches_reference_on_gpu():
    from backend.bench.hashgrid_check import GPU_TOLERANCE, compare_with_reference

    check_errors(compare_with_reference("cuda", n_points=200000, seed=1), GPU_TOLERANCE)


def test_fused_hashgrid_matches_reference_in_triton_interpreter():
    # The interpreter's time goes with the number of programs (one per 128-point block and level):
    # 150 points are two blocks, the second one partly masked (the offsets of a later block and the
    # tail mask are both checked), and about 20 of them lie outside the box. 600 points (five blocks)
    # took 48 s for no further check.
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", CHECK, "cpu", "150"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    from backend.bench.hashgrid_check import INTERPRETER_TOLERANCE

    check_errors(json.loads(out.stdout.strip().splitlines()[-1]), INTERPRETER_TOLERANCE)


def test_encoder_keeps_cpu_tensors_on_the_pytorch_path(monkeypatch):
    """Even where the fused kernel is available, CPU tensors (and inputs that need d/dx) take the
    PyTorch path: the kernel is CUDA-only and has no position backward."""
    from backend.engine import hashgrid_triton
    from backend.engine.hashgrid import HashGridEncoding

    monkeypatch.setattr(hashgrid_triton, "available", lambda: True)     # as on a CUDA machine

    def no_kernel(*args, **kwargs):
        raise AssertionError("the fused kernel was called for a CPU tensor")

    monkeypatch.setattr(hashgrid_triton, "hash_encode", no_kernel)
    enc = HashGridEncoding(n_levels=4, log2_table_size=12, base_resolution=4, max_resolution=64)
    x = torch.rand(8, 3)
    assert not enc._use_fused(x)
    features, jacobian = enc.forward_with_jacobian(x)
    assert features.shape == (8, enc(x).shape[1]) and jacobian.shape == (*features.shape, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_encoder_uses_fused_kernel_on_cuda_only_where_it_can():
    from backend.engine.hashgrid import HashGridEncoding

    enc = HashGridEncoding(n_levels=4, log2_table_size=12, base_resolution=4, max_resolution=64).cuda()
    x = torch.rand(8, 3, device="cuda")
    assert enc._use_fused(x)
    assert not enc._use_fused(x.requires_grad_(True))      # needs d/dx: PyTorch
    enc.fused = False
    assert not enc._use_fused(x.detach())
