"""``torch.compile`` for the renderer's per-sample elementwise passes, with an eager fallback.

Why: with the fixed sample budget (``occupancy.sample_with_budget``) a training render's per-sample
work has fixed shapes: the dense candidate grid (rays x ~513 steps), the culling, the compositing and
shading. Eagerly each line of them is one or more CUDA kernels reading and writing the whole sample
array (~0.5M candidates, ~0.13M samples at 64^2; ~2M cells for the grid); compiled, Inductor fuses
each pass into a few kernels. The same pattern as the VAE encoder's compile
(``StableDiffusionGuidance._set_vae_encoder``): asked for per call (the ``compile_render`` setting,
on CUDA), compiled once per process on first use, and eager for good after a failure (no compiler,
an unsupported operation), with a warning.

Random draws stay outside the compiled functions: Inductor's generator is not PyTorch's, so a
compiled draw would change a run's samples.
"""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)


class CompiledOrEager:
    """Wraps ``fn``; ``wrapper(*args, compiled=True)`` runs it through ``torch.compile`` (dynamic
    shapes: the sample budget's buffers grow and shrink, which must not recompile each time),
    ``compiled=False`` (the default) eagerly. ``wrapper.eager`` is ``fn`` itself. ``backend``:
    torch.compile's backend (Inductor by default)."""

    def __init__(self, fn, backend="inductor"):
        functools.update_wrapper(self, fn)
        self.eager = fn
        self.backend = backend
        self._compiled = None
        self.failed = False

    def __call__(self, *args, compiled: bool = False, **kwargs):
        if not compiled or self.failed:
            return self.eager(*args, **kwargs)
        if self._compiled is None:
            self._compiled = torch.compile(self.eager, dynamic=True, backend=self.backend)
        try:
            return self._compiled(*args, **kwargs)
        except Exception as exc:      # noqa: BLE001 - compiling fails at the first call: run eagerly from now on
            log.warning("torch.compile of %s failed (%s); running it eagerly", self.eager.__name__, exc)
            self.failed = True
            return self.eager(*args, **kwargs)


def compile_or_eager(fn) -> CompiledOrEager:
    """Decorator form of ``CompiledOrEager``."""
    return CompiledOrEager(fn)
