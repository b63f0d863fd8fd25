"""Volume renderer: occupancy-grid ray marching, shading, compositing over a background.

Shapes as in nerfstudio (``Float[Tensor, "R 3"]``: R rays, S packed samples), in docstrings only.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from backend.engine.compiled import compile_or_eager
from backend.engine.geometry import Geometry
from backend.engine.graphed_render import GraphedRender
from backend.engine.sampling_rule import render_step_size
from backend.engine.occupancy import (SampleBudget, TorchOccGridEstimator, accumulate_along_rays, budget_fits,
                                     distortion_sum, render_weights, sample_with_budget)

AMBIENT, DIFFUSE = 0.1, 0.9     # threestudio's diffuse-with-point-light defaults
SHADINGS = ("albedo", "lambertian", "textureless")


def shade(albedo: torch.Tensor, normals: Optional[torch.Tensor], positions: torch.Tensor,
          light_positions: Optional[torch.Tensor], shading: str) -> torch.Tensor:
    """Per-sample colour Float[Tensor, "S 3"] from ``albedo``, ``normals``, ``positions`` and
    ``light_positions`` (each Float[Tensor, "S 3"]; normals and lights unused for "albedo").
    ``textureless`` drops the albedo so SDS must explain the image by geometry."""
    if shading == "albedo":
        return albedo
    light_dir = F.normalize(light_positions - positions, dim=-1)
    lit = AMBIENT + DIFFUSE * (normals * light_dir).sum(-1, keepdim=True).clamp(min=0.0)
    if shading == "lambertian":
        return albedo * lit
    if shading == "textureless":
        return lit.expand_as(albedo)
    raise ValueError(f"unknown shading {shading!r}")


@compile_or_eager
def composite(density: torch.Tensor, albedo: torch.Tensor, normals: Optional[torch.Tensor], positions: torch.Tensor,
              t_starts: torch.Tensor, t_ends: torch.Tensor, ray_indices: torch.Tensor, valid: Optional[torch.Tensor],
              light_positions: Optional[torch.Tensor], rays_d: torch.Tensor, bg_color: torch.Tensor, n_rays: int,
              shading: str, with_distortion: bool) -> dict:
    """Everything a render does per sample after the field: volume-rendering weights, shading, the
    per-ray sums over a background, the distortion and orientation terms. Packed samples (``valid``:
    which are real, None: all), per-ray ``light_positions``, ``rays_d`` and ``bg_color``
    Float[Tensor, "R 3"]. Returns ``rgb``, ``opacity``, ``depth`` (``normal_map``, ``orient_sum``
    with normals; ``distortion_sum`` when asked). Elementwise passes and per-ray sums: fused by
    torch.compile with ``compiled=True`` (fixed shapes with the sample budget)."""
    if valid is not None:
        density = torch.where(valid, density, 0.0)       # padding: no weight, no gradient
    weights = render_weights(density, t_starts, t_ends, ray_indices, valid)
    lights = light_positions[ray_indices] if light_positions is not None else None
    colors = shade(albedo, normals, positions, lights, shading)
    t_mid = (t_starts + t_ends) * 0.5
    opacity = accumulate_along_rays(weights, ray_indices, None, n_rays, valid)
    rgb_fg = accumulate_along_rays(weights, ray_indices, colors, n_rays, valid)
    depth = accumulate_along_rays(weights, ray_indices, t_mid[:, None], n_rays, valid)
    out = {"rgb": rgb_fg + bg_color * (1.0 - opacity), "opacity": opacity, "depth": depth}
    if with_distortion:
        out["distortion_sum"] = distortion_sum(weights, t_starts, t_ends, ray_indices, valid)
    if normals is not None:
        out["normal_map"] = accumulate_along_rays(weights, ray_indices, normals, n_rays, valid)
        # Normals facing away from the camera on visible samples (DreamFusion's orientation loss).
        facing = (normals * rays_d[ray_indices]).sum(-1).clamp(min=0.0) ** 2
        out["orient_sum"] = (weights.detach() * facing).sum()
    return out


class VolumeRenderer(nn.Module):
    """Renders a ``Geometry`` (``field``) over a background model, marching only the cells the
    occupancy ``estimator`` marks occupied. ``checkpoint_rays``: see ``forward`` (0: never).
    ``sampling``: "budget" renders with gradients (training steps) on fixed, self-adjusting sample
    buffers (``occupancy.sample_with_budget``: no GPU-to-CPU wait in the step) where the candidate
    grid is small enough, "dynamic" always with the estimator's own sampler; renders without
    gradients (previews, exports) always sample dynamically. ``compile``: the budget path's per-sample
    elementwise passes through torch.compile (``backend.engine.compiled``; the trainer asks for it on
    CUDA with the ``compile_render`` setting). ``graphs``: budget-path training renders on CUDA replayed
    from CUDA graphs (``backend.engine.graphed_render``; the ``graph_render`` setting)."""

    def __init__(self, field: Geometry, background: nn.Module, estimator: nn.Module, *, bound: float = 1.0,
                 samples_per_ray: int = 512, alpha_threshold: float = 0.01, checkpoint_rays: int = 0,
                 sampling: str = "dynamic", compile: bool = False, graphs: bool = False):
        super().__init__()
        self.field, self.background, self.estimator = field, background, estimator
        self.bound = bound
        self.render_step_size = render_step_size(bound, samples_per_ray)
        self.alpha_threshold = alpha_threshold
        self.checkpoint_rays = checkpoint_rays
        if sampling not in ("budget", "dynamic"):
            raise ValueError(f"sampling must be 'budget' or 'dynamic', not {sampling!r}")
        self.sampling = sampling
        self.compile = compile
        self.budget = SampleBudget()
        # Training renders also return ``distortion_sum`` (occupancy.distortion_sum) when the trainer
        # weighs the distortion loss; off by default: it costs two prefix sums over the samples.
        self.with_distortion = False
        self.graphed = GraphedRender(self) if graphs else None

    def update_occupancy(self, step: int, warmup_steps: int = 256) -> None:
        # Geometry.occupancy_density (an SDF marks a shell); a plain density module: its density.
        occupancy_density = getattr(self.field, "occupancy_density", self.field.density)

        def occ_eval_fn(x):
            return occupancy_density(x) * self.render_step_size
        before = {name: getattr(self.estimator, name, None) for name in ("binaries", "occs")}
        self.estimator.update_every_n_steps(step=step, occ_eval_fn=occ_eval_fn, occ_thre=0.01,
                                            warmup_steps=warmup_steps)
        # Both estimators assign a new ``binaries`` tensor on update; a captured render graph reads the
        # old one's memory (graphed_render). So the new values go into the old storage.
        for name, old in before.items():
            new = getattr(self.estimator, name, None)
            if isinstance(old, torch.Tensor) and new is not old and new.shape == old.shape and new.dtype == old.dtype:
                old.copy_(new)
                setattr(self.estimator, name, old)

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, *, shading: str = "albedo",
                light_positions: Optional[torch.Tensor] = None, bg_color: Optional[torch.Tensor] = None,
                stratified: bool = False, need_normals: bool = False, albedo_gradient: bool = True) -> dict:
        """Render flat rays: ``rays_o``, ``rays_d`` (unit) Float[Tensor, "R 3"]; ``light_positions`` and
        ``bg_color``: Float[Tensor, "R 3"] per ray (bg None: the background model).

        Returns per-ray ``rgb`` Float[Tensor, "R 3"], ``opacity`` and ``depth`` Float[Tensor, "R 1"]
        (and ``normal_map`` Float[Tensor, "R 3"]), plus ``orient_sum`` (a scalar),
        the numerator of DreamFusion's orientation loss, when normals were computed. With gradients
        on and more than ``checkpoint_rays`` rays, chunks are rendered under activation
        checkpointing: memory then grows with the chunk, not the image (512^2 renders fit in 24 GB)
        at the price of a second forward pass. ``albedo_gradient=False``: the albedo enters the image
        detached, so the render's gradient shapes the geometry only (the ``lit_albedo_gradient`` setting).
        """
        n_rays = rays_o.shape[0]
        if self.sampling == "budget" and torch.is_grad_enabled():
            self.budget.refresh()          # here, not in _render: a checkpoint recomputation sees the same sizes
        chunked = torch.is_grad_enabled() and self.checkpoint_rays and n_rays > self.checkpoint_rays
        if (self.graphed is not None and rays_o.is_cuda and not chunked and self.sampling == "budget"
                and torch.is_grad_enabled() and budget_fits(n_rays, self.render_step_size, self.estimator)):
            return self.graphed(rays_o, rays_d, shading, light_positions, bg_color, stratified, need_normals,
                                albedo_gradient)
        if not chunked:
            return self._render(rays_o, rays_d, shading, light_positions, bg_color, stratified, need_normals,
                                albedo_gradient)
        parts = []
        for i in range(0, n_rays, self.checkpoint_rays):
            sl = slice(i, i + self.checkpoint_rays)
            parts.append(checkpoint(self._render, rays_o[sl], rays_d[sl], shading,
                                    None if light_positions is None else light_positions[sl],
                                    None if bg_color is None else bg_color[sl], stratified, need_normals,
                                    albedo_gradient, use_reentrant=False))
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0] if parts[0][k].dim() > 0}
        for key in ("orient_sum", "distortion_sum", "n_samples"):
            if key in parts[0]:
                out[key] = sum(p[key] for p in parts)
        return out

    def _render(self, rays_o, rays_d, shading, light_positions, bg_color, stratified, need_normals,
                albedo_gradient=True) -> dict:
        n_rays = rays_o.shape[0]

        def sigma_fn(t_starts, t_ends, ray_indices):
            x = rays_o[ray_indices] + rays_d[ray_indices] * ((t_starts + t_ends) * 0.5)[:, None]
            return self.field.density(x)

        valid = None           # with a fixed budget: which samples are real (the rest is padding)
        if (self.sampling == "budget" and torch.is_grad_enabled()
                and budget_fits(n_rays, self.render_step_size, self.estimator)):
            ray_indices, t_starts, t_ends, valid = sample_with_budget(
                self.estimator, rays_o, rays_d, sigma_fn, self.budget, render_step_size=self.render_step_size,
                stratified=stratified, alpha_thre=self.alpha_threshold, early_stop_eps=1e-4,
                # as the sampler it stands in for: nerfacc's lowers the threshold, the PyTorch one does not
                cap_alpha_by_occupancy=not isinstance(self.estimator, TorchOccGridEstimator),
                compiled=self.compile)
        else:
            ray_indices, t_starts, t_ends = self.estimator.sampling(
                rays_o, rays_d, sigma_fn=sigma_fn, render_step_size=self.render_step_size,
                stratified=stratified, alpha_thre=self.alpha_threshold, early_stop_eps=1e-4)
        t_mid = (t_starts + t_ends) * 0.5
        positions = rays_o[ray_indices] + rays_d[ray_indices] * t_mid[:, None]
        with_normals = need_normals or shading != "albedo"
        density, albedo, normals = self.field(positions, with_normals=with_normals)
        if not albedo_gradient:
            albedo = albedo.detach()      # this render shapes the geometry only (``lit_albedo_gradient``)
        if bg_color is None:
            bg_color = self.background(rays_d)
        # Compiled only on fixed shapes (the budget path): the dynamic sampler's count changes every step.
        out = composite(density, albedo, normals, positions, t_starts, t_ends, ray_indices, valid,
                        light_positions, rays_d, bg_color, n_rays, shading,
                        self.with_distortion and torch.is_grad_enabled(),
                        compiled=self.compile and valid is not None)
        out["n_samples"] = torch.tensor(ray_indices.shape[0]) if valid is None else valid.sum()
        return out

    @torch.no_grad()
    def render_image(self, rays_o: torch.Tensor, rays_d: torch.Tensor, *, shading: str = "albedo",
                     light_positions=None, bg_color=None, chunk: int = 16384) -> dict:
        """Render rays Float[Tensor, "*batch 3"] (e.g. "B H W 3") without gradients, in chunks (previews,
        turntables of the field); returns ``rgb``, ``opacity``, ``depth`` Float[Tensor, "*batch C"]."""
        shape = rays_o.shape[:-1]
        flat_o, flat_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        flat_l = None if light_positions is None else light_positions.reshape(-1, 3)
        flat_bg = None if bg_color is None else bg_color.reshape(-1, 3)
        parts: dict[str, list] = {"rgb": [], "opacity": [], "depth": []}
        for i in range(0, flat_o.shape[0], chunk):
            sl = slice(i, i + chunk)
            out = self(flat_o[sl], flat_d[sl], shading=shading,
                       light_positions=None if flat_l is None else flat_l[sl],
                       bg_color=None if flat_bg is None else flat_bg[sl])
            for k in parts:
                parts[k].append(out[k])
        return {k: torch.cat(v).reshape(*shape, -1) for k, v in parts.items()}
