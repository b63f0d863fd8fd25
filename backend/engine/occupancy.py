"""Empty-space skipping: an occupancy grid estimator with nerfacc's interface.

On CUDA we use ``nerfacc.OccGridEstimator`` (fused ray marching). nerfacc's sampling kernels are
CUDA-only, so on the CPU ``TorchOccGridEstimator`` does the same job in plain PyTorch with the
same method names, arguments and outputs; the renderer cannot tell them apart.

Samples are "packed": flat tensors ``ray_indices, t_starts, t_ends`` sorted by ray, as in nerfacc.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Callable, Optional

import torch
from torch import nn

from backend.engine.compiled import compile_or_eager
from backend.engine.sampling_rule import budget_fits_steps, candidate_steps


def ray_aabb(rays_o: torch.Tensor, rays_d: torch.Tensor, aabb: torch.Tensor):
    """Slab test: entry and exit distance of each ray through the box (t_far < t_near: miss)."""
    inv_d = 1.0 / torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t0 = (aabb[:3] - rays_o) * inv_d
    t1 = (aabb[3:] - rays_o) * inv_d
    t_near = torch.minimum(t0, t1).amax(-1)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far


def packed_segment_start(ray_indices: torch.Tensor) -> torch.Tensor:
    """For each packed sample (sorted by ray), the index of the first sample of its ray (no host
    sync). A binary search of each ray index in the sorted list: on CUDA far cheaper than the
    scan-with-indices of a cummax over start flags (0.6 ms a call in the 64² profile)."""
    return torch.searchsorted(ray_indices, ray_indices)


def render_transmittance(sigmas: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor,
                         ray_indices: torch.Tensor, valid: Optional[torch.Tensor] = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Transmittance before each sample and its alpha, for packed samples sorted by ray.
    ``valid``: which samples are real (fixed-budget padding is not); each padding sample is made
    its own segment, so the backward of the segment-start gather does not pile thousands of
    duplicates onto one index (run 5: 44 ms a step in the sort-based index backward)."""
    sigma_dt = sigmas * (t_ends - t_starts)
    # float64 scan: a float32 prefix sum over millions of samples loses the small per-ray sums.
    cs = torch.cumsum(sigma_dt.double(), dim=0)
    exclusive = cs - sigma_dt.double()
    start = packed_segment_start(ray_indices)
    if valid is not None:
        start = torch.where(valid, start, torch.arange(start.shape[0], device=start.device))
    trans = torch.exp(-(exclusive - exclusive[start])).to(sigmas.dtype)
    alphas = 1.0 - torch.exp(-sigma_dt)
    return trans, alphas


def render_weights(sigmas, t_starts, t_ends, ray_indices, valid=None) -> torch.Tensor:
    trans, alphas = render_transmittance(sigmas, t_starts, t_ends, ray_indices, valid)
    return trans * alphas


def distortion_sum(weights: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor, ray_indices: torch.Tensor,
                   valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mip-NeRF 360's distortion loss summed over the rays (a scalar): per ray
    sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (t_end_i - t_start_i), m the sample midpoints in
    scene units, for packed samples sorted by ray (and by t within a ray). It is small when a ray's
    weight sits in one short interval (a surface) and large when it is spread along the ray (haze).
    The double sum in O(S): 2 sum_i w_i (m_i W_<i - (wm)_<i) with per-ray exclusive prefix sums."""
    if valid is not None:
        weights = torch.where(valid, weights, 0.0)
    mid = 0.5 * (t_starts + t_ends)
    start = packed_segment_start(ray_indices)
    w, wm = weights.double(), (weights * mid).double()
    w_before = torch.cumsum(w, 0) - w
    wm_before = torch.cumsum(wm, 0) - wm
    w_before = (w_before - w_before[start]).to(weights.dtype)
    wm_before = (wm_before - wm_before[start]).to(weights.dtype)
    pairs = 2.0 * (weights * (mid * w_before - wm_before)).sum()
    return pairs + (weights**2 * (t_ends - t_starts)).sum() / 3.0


def accumulate_along_rays(weights: torch.Tensor, ray_indices: torch.Tensor, values: Optional[torch.Tensor],
                          n_rays: int, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-ray sums of ``weights`` (times ``values``). With ``valid``, padding samples (zero weight)
    go to rows of their own past the rays', dropped afterwards: added to a real ray's row, their
    zeros would all be atomic adds on one address (run 5: 3 ms a step)."""
    src = weights[:, None] if values is None else weights[:, None] * values
    rows = n_rays
    if valid is not None:
        ray_indices = torch.where(valid, ray_indices,
                                  n_rays + torch.arange(ray_indices.shape[0], device=ray_indices.device))
        rows = n_rays + ray_indices.shape[0]
    out = torch.zeros(rows, src.shape[-1], device=weights.device, dtype=src.dtype)
    return out.index_add(0, ray_indices, src)[:n_rays]


class TorchOccGridEstimator(nn.Module):
    """Pure-PyTorch twin of ``nerfacc.OccGridEstimator`` (one level)."""

    def __init__(self, roi_aabb, resolution: int = 32, levels: int = 1):
        super().__init__()
        assert levels == 1, "only one level is implemented"
        self.resolution = resolution
        self.register_buffer("aabbs", torch.as_tensor(roi_aabb, dtype=torch.float32).reshape(1, 6))
        n_cells = resolution**3
        self.register_buffer("occs", torch.zeros(n_cells))
        self.register_buffer("binaries", torch.ones(1, resolution, resolution, resolution, dtype=torch.bool))
        r = torch.arange(resolution)
        grid = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
        self.register_buffer("grid_coords", grid, persistent=False)

    # -- update ----------------------------------------------------------------------------------
    @torch.no_grad()
    def update_every_n_steps(self, step: int, occ_eval_fn: Callable, occ_thre: float = 1e-2,
                             ema_decay: float = 0.95, warmup_steps: int = 256, n: int = 16) -> None:
        if not self.training or step % n != 0:
            return
        n_cells = self.occs.shape[0]
        if step < warmup_steps:
            indices = torch.arange(n_cells, device=self.occs.device)
        else:
            # As nerfacc: a random quarter of all cells plus as many of the occupied ones.
            uniform = torch.randint(n_cells, (n_cells // 4,), device=self.occs.device)
            occupied = torch.nonzero(self.binaries.flatten())[:, 0]
            if occupied.numel() > n_cells // 4:
                occupied = occupied[torch.randint(occupied.numel(), (n_cells // 4,), device=occupied.device)]
            indices = torch.cat([uniform, occupied])
        x = (self.grid_coords[indices] + torch.rand(indices.shape[0], 3, device=self.occs.device)) / self.resolution
        aabb = self.aabbs[0]
        x = aabb[:3] + x * (aabb[3:] - aabb[:3])
        occ = occ_eval_fn(x).reshape(-1)
        self.occs[indices] = torch.maximum(self.occs[indices] * ema_decay, occ)
        thre = torch.clamp(self.occs.mean(), max=occ_thre)
        self.binaries = (self.occs > thre).reshape(self.binaries.shape)

    # -- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sampling(self, rays_o: torch.Tensor, rays_d: torch.Tensor, sigma_fn: Optional[Callable] = None,
                 near_plane: float = 0.0, far_plane: float = 1e10, render_step_size: float = 1e-3,
                 stratified: bool = False, cone_angle: float = 0.0, alpha_thre: float = 0.0,
                 early_stop_eps: float = 1e-4):
        assert cone_angle == 0.0, "only constant step size is implemented"
        aabb = self.aabbs[0]
        t_near, t_far = ray_aabb(rays_o, rays_d, aabb)
        t_near = t_near.clamp(min=near_plane)
        t_far = t_far.clamp(max=far_plane)
        diag = float((aabb[3:] - aabb[:3]).norm())
        n_max = int(math.ceil(diag / render_step_size)) + 1
        k = torch.arange(n_max, device=rays_o.device, dtype=rays_o.dtype)
        jitter = (torch.rand(rays_o.shape[0], 1, device=rays_o.device) if stratified
                  else torch.zeros(rays_o.shape[0], 1, device=rays_o.device))
        t_starts = t_near[:, None] + (k[None] + jitter) * render_step_size        # (R, n_max)
        t_ends = t_starts + render_step_size
        valid = t_ends <= t_far[:, None]
        mid = (t_starts + t_ends) * 0.5
        pts = rays_o[:, None, :] + rays_d[:, None, :] * mid[..., None]
        cell = ((pts - aabb[:3]) / (aabb[3:] - aabb[:3]) * self.resolution).long()
        inside = ((cell >= 0) & (cell < self.resolution)).all(-1)
        cell = cell.clamp(0, self.resolution - 1)
        occupied = self.binaries[0, cell[..., 0], cell[..., 1], cell[..., 2]]
        keep = valid & inside & occupied
        ray_indices, sample_idx = torch.nonzero(keep, as_tuple=True)        # sorted by ray
        t_starts, t_ends = t_starts[ray_indices, sample_idx], t_ends[ray_indices, sample_idx]
        if sigma_fn is not None and ray_indices.numel() > 0:
            sigmas = sigma_fn(t_starts, t_ends, ray_indices)
            trans, alphas = render_transmittance(sigmas, t_starts, t_ends, ray_indices)
            vis = (trans >= early_stop_eps) & (alphas >= alpha_thre)
            ray_indices, t_starts, t_ends = ray_indices[vis], t_starts[vis], t_ends[vis]
        return ray_indices, t_starts, t_ends


# -- sampling on a fixed budget -------------------------------------------------------------------
# (which renders take it: backend.engine.sampling_rule, shared with the cost model)


def _round_up(n: float, multiple: int = 4096) -> int:
    return max(multiple, int(math.ceil(n / multiple)) * multiple)


class SampleBudget:
    """Sizes of the two fixed sample buffers of ``sample_with_budget``, per ray count, adjusted from
    the counts of earlier steps without waiting for the GPU.

    A dynamic sampler returns exactly as many samples as there are, so the CPU must read that count
    before it can launch the field: every step drains the GPU queue once (results/speed/NOTES.md:
    ~7.7 ms of a ~51 ms step idle). With fixed buffer sizes nothing in the step depends on a GPU
    value. Each step's counts go to pinned host memory with a non-blocking copy; a later step reads
    them once the copy's event has completed and grows a buffer whose recent peak came within 25% of
    full, or shrinks one that stayed under 30% for a whole window (either to 1.5x that peak). A
    step whose samples overflow a buffer keeps
    its first ones in ray order (the last rays lose their farthest samples): only until the
    budget catches up, a step or two after a sudden growth of the occupied volume."""

    WINDOW = 32                          # observed steps the sizes are judged on

    def __init__(self, candidates_per_ray: int = 128, visible_per_ray: int = 32):
        self.per_ray = (candidates_per_ray, visible_per_ray)
        self.sizes: dict[int, list[int]] = {}
        self._step_counts: dict[int, list[torch.Tensor]] = {}
        self._in_flight: list[tuple[int, torch.Tensor, Optional[torch.cuda.Event]]] = []
        self.overflowed = 0                 # observed steps that did not fit (read back lazily)
        self._windows: dict[int, deque] = {}

    def sizes_for(self, n_rays: int) -> tuple[int, int]:
        if n_rays not in self.sizes:
            self.sizes[n_rays] = [_round_up(n_rays * k) for k in self.per_ray]
        return tuple(self.sizes[n_rays])

    def record(self, n_rays: int, counts: torch.Tensor) -> None:
        """``counts``: Long[Tensor, "2"] (candidates, visible samples) of one sampled chunk."""
        self._step_counts.setdefault(n_rays, []).append(counts)

    def take_last(self, n_rays: int) -> torch.Tensor:
        """Remove and return the counts ``record`` got last for ``n_rays``: a render replayed from a
        CUDA graph returns them as an output (graphed_render), recorded again after each replay."""
        return self._step_counts[n_rays].pop()

    def refresh(self) -> None:
        """Once per render (never inside a checkpointed chunk: a recomputation must see the sizes of
        its forward): send the last render's counts on their way, adopt those that have landed."""
        for n_rays, counts in self._step_counts.items():
            most = torch.stack(counts).amax(0)
            if most.device.type == "cuda":
                host = torch.empty(most.shape, dtype=most.dtype, pin_memory=True)
                host.copy_(most, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                self._in_flight.append((n_rays, host, event))
            else:
                self._in_flight.append((n_rays, most.clone(), None))
        self._step_counts = {}
        pending = []
        for n_rays, host, event in self._in_flight:
            if event is not None and not event.query():
                pending.append((n_rays, host, event))
                continue
            self.sizes_for(n_rays)
            sizes, window = self.sizes[n_rays], self._windows.setdefault(n_rays, deque(maxlen=self.WINDOW))
            counts = host.tolist()
            window.append(counts)
            self.overflowed += any(c > size for c, size in zip(counts, sizes))
            for i in range(len(sizes)):
                peak = max(seen[i] for seen in window)
                # Grow at once when the recent peak nears the buffer; shrink only after a whole
                # window of small counts (they swing with the camera's distance and field of view).
                if peak > 0.75 * sizes[i] or (peak < 0.3 * sizes[i] and len(window) == self.WINDOW):
                    sizes[i] = _round_up(1.5 * peak)
        self._in_flight = pending


def _compact(mask: torch.Tensor, size: int, fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat indices of the first ``size`` true entries of ``mask`` in order (``fill`` after the
    last one) and which slots hold one: ``torch.nonzero_static``, a ``nonzero`` with a static size
    that does not wait for the GPU (CUDA since PyTorch 2.6)."""
    flat = mask.reshape(-1)
    valid = torch.arange(size, device=mask.device) < flat.sum()
    try:
        return torch.nonzero_static(flat, size=size, fill_value=fill)[:, 0], valid
    except (NotImplementedError, RuntimeError):       # an older PyTorch on CUDA: scatter by rank
        rank = torch.cumsum(flat, 0)
        dest = torch.where(flat & (rank <= size), rank - 1, torch.full_like(rank, size))
        out = torch.full((size + 1,), fill, dtype=torch.long, device=mask.device)
        out.scatter_(0, dest, torch.arange(flat.shape[0], device=mask.device))   # slot `size`: the rest
        return out[:size], valid


def _steps_per_ray(estimator: nn.Module, render_step_size: float) -> int:
    """Candidate steps along the box diagonal. The box is read from the device once per estimator
    (it never changes): reading it every step would make each step wait for the GPU."""
    diag = getattr(estimator, "_host_diagonal", None)
    if diag is None:
        aabb = estimator.aabbs[0].tolist()
        diag = estimator._host_diagonal = math.dist(aabb[:3], aabb[3:])
    return candidate_steps(diag, render_step_size)


def budget_fits(n_rays: int, render_step_size: float, estimator: nn.Module) -> bool:
    """Whether ``sample_with_budget`` builds a small enough candidate grid for ``n_rays`` rays."""
    return budget_fits_steps(n_rays, _steps_per_ray(estimator, render_step_size))


@compile_or_eager
def candidate_grid(rays_o: torch.Tensor, rays_d: torch.Tensor, jitter: torch.Tensor, aabb: torch.Tensor,
                   binaries: torch.Tensor, res: int, n_max: int, render_step_size: float):
    """The dense candidates of ``sample_with_budget``: ``t_starts``, ``t_ends`` Float[Tensor, "R n_max"]
    (``jitter`` Float[Tensor, "R 1"] shifts each ray's steps) and ``keep`` Bool[Tensor, "R n_max"]: in
    the box and in a cell ``binaries`` (Bool[Tensor, "res^3"]) marks occupied. Elementwise over the
    grid: one fused kernel when compiled (``compiled=True``)."""
    t_near, t_far = ray_aabb(rays_o, rays_d, aabb)
    t_near = t_near.clamp(min=0.0)
    k = torch.arange(n_max, device=rays_o.device, dtype=rays_o.dtype)
    t_starts = t_near[:, None] + (k[None] + jitter) * render_step_size        # (R, n_max)
    t_ends = t_starts + render_step_size
    valid = t_ends <= t_far[:, None]
    mid = (t_starts + t_ends) * 0.5
    pts = rays_o[:, None, :] + rays_d[:, None, :] * mid[..., None]
    cell = ((pts - aabb[:3]) / (aabb[3:] - aabb[:3]) * res).int()     # truncation, as the estimator
    inside = ((cell >= 0) & (cell < res)).all(-1)
    cell = cell.clamp(0, res - 1)
    occupied = binaries[(cell[..., 0] * res + cell[..., 1]) * res + cell[..., 2]]
    return t_starts, t_ends, valid & inside & occupied


@compile_or_eager
def visible_samples(sigmas: torch.Tensor, ok: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor,
                    ray_indices: torch.Tensor, alpha_thre, early_stop_eps: float) -> torch.Tensor:
    """nerfacc's culling on compacted candidates (``ok``: which slots hold one): Bool[Tensor, "S"], the
    samples in front of an opaque stretch (transmittance >= ``early_stop_eps``) and not nearly
    transparent (alpha >= ``alpha_thre``, a number or a 0-d tensor)."""
    sigmas = torch.where(ok, sigmas, 0.0)
    trans, alphas = render_transmittance(sigmas, t_starts, t_ends, ray_indices, ok)
    return ok & (trans >= early_stop_eps) & (alphas >= alpha_thre)


@torch.no_grad()
def sample_with_budget(estimator: nn.Module, rays_o: torch.Tensor, rays_d: torch.Tensor, sigma_fn: Callable,
                       budget: SampleBudget, render_step_size: float = 1e-3, stratified: bool = False,
                       alpha_thre: float = 0.0, early_stop_eps: float = 1e-4, cap_alpha_by_occupancy: bool = False,
                       compiled: bool = False):
    """``TorchOccGridEstimator.sampling`` (same candidates, same random jitter, same culling) into
    fixed-size buffers: returns ``ray_indices``, ``t_starts``, ``t_ends`` (each of the visible
    budget's size, sorted by ray, padding at the end on the last ray) and ``valid``
    Bool[Tensor, "S"]. Works with nerfacc's estimator too (it reads only ``aabbs``, ``binaries``
    and ``occs``); nothing in it waits for the GPU. ``cap_alpha_by_occupancy``: lower ``alpha_thre``
    to the grid's mean occupancy, as nerfacc's sampler does (there with a host read). ``compiled``:
    the elementwise passes (``candidate_grid``, ``visible_samples``) through torch.compile."""
    n_rays = rays_o.shape[0]
    n_candidates, n_visible = budget.sizes_for(n_rays)
    n_max = _steps_per_ray(estimator, render_step_size)
    jitter = (torch.rand(n_rays, 1, device=rays_o.device) if stratified
              else torch.zeros(n_rays, 1, device=rays_o.device))
    t_starts, t_ends, keep = candidate_grid(rays_o, rays_d, jitter, estimator.aabbs[0],
                                            estimator.binaries[0].reshape(-1), estimator.binaries.shape[-1],
                                            n_max, render_step_size, compiled=compiled)
    last = n_rays * n_max - 1
    flat, ok = _compact(keep, n_candidates, last)
    ray_indices = torch.div(flat, n_max, rounding_mode="floor")
    t_starts, t_ends = t_starts.reshape(-1)[flat], t_ends.reshape(-1)[flat]
    if cap_alpha_by_occupancy:
        alpha_thre = estimator.occs.mean().clamp(max=alpha_thre)       # a device tensor: no host read
    # Culling as nerfacc: drop samples behind an opaque stretch or nearly transparent.
    vis = visible_samples(sigma_fn(t_starts, t_ends, ray_indices), ok, t_starts, t_ends, ray_indices,
                          alpha_thre, early_stop_eps, compiled=compiled)
    second, valid_out = _compact(vis, n_visible, n_candidates - 1)
    budget.record(n_rays, torch.stack([keep.sum(), vis.sum()]))
    return ray_indices[second], t_starts[second], t_ends[second], valid_out


def make_estimator(bound: float, resolution: int, device: torch.device) -> nn.Module:
    """nerfacc's estimator on CUDA when it is installed, else the PyTorch one."""
    aabb = [-bound, -bound, -bound, bound, bound, bound]
    if device.type == "cuda":
        try:
            import nerfacc

            return nerfacc.OccGridEstimator(roi_aabb=aabb, resolution=resolution, levels=1).to(device)
        except ImportError:
            pass
    return TorchOccGridEstimator(aabb, resolution=resolution).to(device)
