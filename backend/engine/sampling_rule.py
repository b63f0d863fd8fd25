"""Which sampler a training render takes, without torch: the renderer and the trainer decide with these, and the
cost model (``backend.cost.model``, which estimates on machines and in processes without torch) predicts with the
very same functions, so an estimate and a run cannot disagree on it."""

from __future__ import annotations

import math

from shared.settings import GenerationSettings

# Dense candidate grids above this many (rays x steps per ray) are not worth building: those renders
# (256^2 and up) are GPU-bound anyway and keep the dynamic sampler.
MAX_BUDGET_CANDIDATES = 2**24


def auto_sampling(cuda: bool) -> str:
    """The ``sampling`` setting's "auto": the fixed sample budget on CUDA, where it removes the step's wait for
    the GPU's sample count (measured faster on an H200, results/speed/NOTES.md run 6); the dynamic sampler on the
    CPU, where there is no such wait and padding would only cost."""
    return "budget" if cuda else "dynamic"


def render_step_size(bound: float, samples_per_ray: int) -> float:
    """The ray marcher's step: the box's diagonal (2 sqrt(3) bound) in ``samples_per_ray`` steps."""
    return math.sqrt(3.0) * 2.0 * bound / samples_per_ray


def candidate_steps(diagonal: float, step: float) -> int:
    """Candidate steps a ray gets along a box diagonal of ``diagonal``."""
    return int(math.ceil(diagonal / step)) + 1


def budget_fits_steps(n_rays: int, steps_per_ray: int) -> bool:
    """Whether the fixed budget's candidate grid for ``n_rays`` rays is small enough to build."""
    return n_rays * steps_per_ray <= MAX_BUDGET_CANDIDATES


def samples_on_budget(s: GenerationSettings, rays: int, cuda: bool, bound: float = 1.0) -> bool:
    """Whether a training render of ``rays`` rays takes the fixed sample budget (else the dynamic sampler), on the
    object's box: the cost model's memory term and ``trainer.fast_path``'s report of the graphed render ask this."""
    sampling = s.sampling if s.sampling != "auto" else auto_sampling(cuda)
    diagonal = math.dist((-bound,) * 3, (bound,) * 3)
    steps = candidate_steps(diagonal, render_step_size(bound, s.samples_per_ray))
    return sampling == "budget" and budget_fits_steps(rays, steps)
