"""The signed distance field of the fine stage: the ``implicit-sdf`` geometry type.

Why an SDF rendered through the existing volume renderer, not DMTet + a rasteriser (Magic3D,
threestudio's ``magic3d-refine``): the only kept differentiable rasteriser that fits is nvdiffrast,
under NVIDIA's non-commercial source licence and with no CPU path, so it could never be this MIT
project's default and the CPU demo and tests could not use it; a rasteriser written here would be a
large, slow piece of code on the CPU. An SDF needs nothing new: it turns into a density the renderer
already composites (VolSDF's Laplace-CDF density, Yariv et al. 2021), with the same occupancy grid,
hash grid, guidance and checkpoints, on the CPU and on CUDA. What DMTet gives (a hard surface at the
render resolution) comes here from a sharp density (``beta`` annealed to about one render step) and a
fine ray step; its "clean surface" regularisers come as the eikonal term (keep |grad sdf| = 1) and a
total-variation term on the normals (flat faces, creases kept: see ``regularisers``). VolSDF rather
than NeuS: NeuS computes each sample's opacity from the SDF at both ends of the sample, which the
renderer (density per sample, as nerfacc) does not do; VolSDF's density is a function of the SDF at
one point, so the renderer is unchanged.

The SDF is ``base_sdf(x) + RESIDUAL_SCALE * raw(x)[0]``: ``base_sdf`` is a fixed grid (trilinear) holding the signed
distance of the surface the stage starts from (``backend.engine.sdf_init``: the coarse NeRF's
iso-surface, or the mesh Refine Selected sends), so the stage starts on that surface exactly; the hash
grid + MLP of ``NeRFField`` (the same layout, so the coarse field's weights and its albedo carry over
unchanged) adds a residual that starts at zero (the output row is zeroed) and the albedo. Used alone
(``geometry_type = implicit-sdf``) the base is a sphere of ``blob_radius`` (threestudio's implicit-sdf
sphere initialisation).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from backend.engine.field import NeRFField
from backend.engine.registry import register

BASE_GRID_RESOLUTION = 128        # base SDF grid points per side: 1.6 cm cells in a 2 m scene
# beta, in render steps: starts at 2 (a little soft, so SDS gradients reach the surface from a step or
# two away) and ends at 1 (as sharp as the ray step resolves). Not softer at the start: a VolSDF
# surface looks larger than it is (a ray meets 39% opacity before reaching it, a grazing one turns
# opaque ~2 beta outside), and the stage starts on a finished shape, which a swollen first render
# would only teach SDS to shrink (``render_offset`` draws the surface inside to make up for it).
BETA_START_STEPS = 2.0
BETA_END_STEPS = 1.0
# The residual is this times the MLP's output: Adam moves every weight by about the learning rate per
# step whatever the gradient's size, so an unscaled output row (64 weights moving together) could move
# the surface by a tenth of the scene in a step and wreck the shape the stage started on; scaled, a
# step moves it by well under a render step, and the eikonal and normal terms keep up.
RESIDUAL_SCALE = 0.05
REGULARISER_POINTS = 2048         # surface points per step for the eikonal and normal terms
SURFACE_JITTER = 0.01             # eikonal points: this far (std) around the surface
# normal TV: compare normals this far apart. 0.04 (2.5 base cells), not 0.01: the coarse surface's
# lumps are 0.1-0.2 across, and a probe much shorter than a lump sees it as nearly flat (0.01 -> 0.04:
# mean IoU 0.625 -> 0.631, Chamfer 0.0434 -> 0.0420 on four prompts, results/quality/runs/2026-11-29-fine-hold-cpu.md).
NORMAL_PROBE = 0.04


def laplace_density(sdf: torch.Tensor, beta: float) -> torch.Tensor:
    """VolSDF: density = Laplace CDF(-sdf) / beta (alpha = 1 / beta): 1 / beta deep inside, 1 / (2 beta)
    on the surface, exp(-sdf / beta) / (2 beta) outside. Written without exp of a positive number."""
    e = 0.5 * torch.exp(-sdf.abs() / beta)
    return torch.where(sdf > 0, e, 1.0 - e) / beta


def sphere_sdf_grid(radius: float, resolution: int, bound: float) -> np.ndarray:
    axis = np.linspace(-bound, bound, resolution, dtype=np.float32)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.sqrt(x * x + y * y + z * z) - np.float32(radius)


@register("geometry", "implicit-sdf")
class SDFField(NeRFField):
    """A signed distance field (negative inside) with albedo, rendered as a VolSDF density."""

    def __init__(self, *, beta_start: float = 0.05, beta_end: float = 0.01, eikonal_weight: float = 0.1,
                 smoothness_weight: float = 1.0, occupancy_margin: float = 0.1,
                 base_resolution_grid: int = BASE_GRID_RESOLUTION, **nerf_kwargs):
        nerf_kwargs.setdefault("normal_type", "analytic")
        super().__init__(**nerf_kwargs)
        self.beta_start, self.beta_end, self.beta = beta_start, beta_end, beta_start
        self.eikonal_weight, self.smoothness_weight = eikonal_weight, smoothness_weight
        self.occupancy_margin = occupancy_margin
        self.zero_residual()
        grid = sphere_sdf_grid(self.blob_radius, base_resolution_grid, self.bound)
        self.register_buffer("base_sdf", torch.from_numpy(grid))                     # [x, y, z]
        self.register_buffer("surface_points", torch.from_numpy(_sphere_points(self.blob_radius)))
        self._base_volume: Optional[torch.Tensor] = None
        self.train_albedo = True
        # A VolSDF surface looks larger than its zero level: a ray passing outside it, at a grazing
        # angle, crosses a long stretch of the density's tail (exp(-sdf / beta) / 2 beta) and turns
        # opaque up to a few beta out. SDS, whose prior knows how large a thing looks, then shrinks the
        # SDF until the render looks right: a right-sized start ends too small. Drawing the surface
        # this many betas inside the zero level puts the render's silhouette back on it. 0: none.
        self.render_offset = 0.0

    @classmethod
    def from_settings(cls, s, bound: float = 1.0) -> "SDFField":
        step = math.sqrt(3.0) * 2.0 * bound / s.samples_per_ray     # the renderer's ray step
        return cls(n_levels=s.hash_levels, n_features=s.hash_features, log2_table_size=s.hash_log2_size,
                   base_resolution=s.hash_base_resolution, max_resolution=s.hash_max_resolution,
                   mlp_width=s.mlp_width, blob_radius=s.blob_radius, bound=bound,
                   fused_hashgrid=s.hashgrid_backend == "auto", progressive_levels=s.progressive_levels,
                   total_steps=s.steps, mlp_precision=s.field_precision,
                   beta_start=BETA_START_STEPS * step, beta_end=BETA_END_STEPS * step,
                   eikonal_weight=s.fine_eikonal_weight, smoothness_weight=s.fine_smoothness_weight,
                   # Cells within ~1.5 cells of the surface are marched (see occupancy_density).
                   occupancy_margin=1.5 * math.sqrt(3.0) * 2.0 * bound / s.occupancy_resolution)

    # -- initialisation --------------------------------------------------------------------------
    def zero_residual(self) -> None:
        """The MLP's SDF output row to zero: the SDF is exactly ``base_sdf`` until training moves it."""
        last = self.mlp[-1]
        with torch.no_grad():
            last.weight[0].zero_()
            last.bias[0].zero_()

    def set_base(self, sdf_grid: np.ndarray, surface_points: np.ndarray) -> None:
        """Start from this surface: its SDF on a grid [x, y, z] spanning the scene (``sdf_init``) and
        points on it (the regularisers' samples)."""
        dev = self.base_sdf.device
        self.base_sdf = torch.as_tensor(np.ascontiguousarray(sdf_grid), dtype=torch.float32, device=dev)
        self.surface_points = torch.as_tensor(surface_points, dtype=torch.float32, device=dev)
        self._base_volume = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The base grid and the surface points are buffers whose size depends on the surface: take the
        # checkpoint's (not only its values), and rebuild the sampling volume from them.
        for name in ("base_sdf", "surface_points"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        self._base_volume = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- the SDF ---------------------------------------------------------------------------------
    def _volume(self) -> torch.Tensor:
        """The base grid and its central-difference gradient as one 4-channel volume for grid_sample
        (its layout is [C, z, y, x]: grid_sample reads the last axis with the first coordinate)."""
        if self._base_volume is None or self._base_volume.device != self.base_sdf.device:
            base = self.base_sdf
            cell = 2.0 * self.bound / (base.shape[0] - 1)
            grads = torch.gradient(base, spacing=cell)
            vol = torch.stack([base, *grads])                                   # [4, x, y, z]
            self._base_volume = vol.permute(0, 3, 2, 1).contiguous()[None]       # [1, 4, z, y, x]
        return self._base_volume

    def base(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` Float[Tensor, "N 3"] -> base SDF and its gradient Float[Tensor, "N 4"]."""
        grid = (x / self.bound).reshape(1, -1, 1, 1, 3)
        out = F.grid_sample(self._volume(), grid.to(self._volume().dtype), mode="bilinear",
                            padding_mode="border", align_corners=True)
        return out.reshape(4, -1).t()

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: Float[Tensor, "N 3"] -> Float[Tensor, "N"] signed distance (negative inside)."""
        return self.base(x)[:, 0] + RESIDUAL_SCALE * self._raw(x)[:, 0]

    def sdf_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SDF Float[Tensor, "N"], albedo Float[Tensor, "N 3"] and d(sdf)/dx Float[Tensor, "N 3"], the
        gradient in closed form (differentiable, no double backward: ``NeRFField.raw_and_gradient``)."""
        h, grad_raw = self.raw_and_gradient(x)
        base = self.base(x.detach())
        return (base[:, 0] + RESIDUAL_SCALE * h[:, 0], self._albedo_of(h),
                base[:, 1:] + RESIDUAL_SCALE * grad_raw)

    def _albedo_of(self, h: torch.Tensor) -> torch.Tensor:
        albedo = torch.sigmoid(h[:, 1:4])
        return albedo if self.train_albedo else albedo.detach()

    def _render_density(self, sdf: torch.Tensor) -> torch.Tensor:
        """The density the renderer sees: the surface drawn ``render_offset`` betas inside the zero
        level (see ``__init__``), so that its silhouette lands on the zero level, not outside it."""
        return laplace_density(sdf + self.render_offset * self.beta, self.beta)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self._render_density(self.sdf(x))

    def forward(self, x: torch.Tensor, with_normals: bool = False):
        if not with_normals:
            h = self._raw(x)
            sdf = self.base(x)[:, 0] + RESIDUAL_SCALE * h[:, 0]
            return self._render_density(sdf), self._albedo_of(h), None
        sdf, albedo, grad = self.sdf_and_gradient(x)
        return self._render_density(sdf), albedo, F.normalize(grad, dim=-1, eps=1e-8)

    def occupancy_density(self, x: torch.Tensor) -> torch.Tensor:
        """For the occupancy grid: high within ``occupancy_margin`` of the surface, zero elsewhere, the
        interior included. A ray is opaque a few ``beta`` past the surface, far inside the margin, so
        nothing deeper needs marching; and a cell the surface crosses is never missed, whichever of
        its points the grid tests (the margin exceeds a cell's diagonal)."""
        sdf = self.sdf(x)
        # the shell holds both the zero level (exported) and the drawn surface, render_offset betas inside
        inner = self.occupancy_margin + self.render_offset * self.beta
        shell = (sdf < self.occupancy_margin) & (sdf > -inner)
        return shell.to(x.dtype) * 1e4

    # -- schedules -------------------------------------------------------------------------------
    def update_step(self, step: int) -> None:
        super().update_step(step)
        # beta anneals geometrically: soft early (SDS gradients reach the surface from a distance),
        # as sharp as the ray step resolves at the end.
        f = min(1.0, step / max(1, self.total_steps))
        self.beta = self.beta_start * (self.beta_end / self.beta_start) ** f

    # -- regularisers ----------------------------------------------------------------------------
    def surface_batch(self, n: Optional[int] = None) -> torch.Tensor:
        """``n`` points on the current surface: random initial surface points moved by one Newton step
        onto the zero level set. Stateless (only the global RNG, which checkpoints restore), so a
        resumed run draws the same points."""
        n = REGULARISER_POINTS if n is None else n
        idx = torch.randint(0, self.surface_points.shape[0], (n,), device=self.surface_points.device)
        p = self.surface_points[idx]
        with torch.no_grad():
            sdf, _, grad = self.sdf_and_gradient(p)
            p = p - sdf[:, None] * grad / grad.pow(2).sum(-1, keepdim=True).clamp(min=1e-6)
        return p.clamp(-self.bound, self.bound)

    def eikonal_loss(self, x: torch.Tensor) -> torch.Tensor:
        """mean (|grad sdf| - 1)^2 at ``x``: zero for a true signed distance."""
        _, _, grad = self.sdf_and_gradient(x)
        return (grad.norm(dim=-1) - 1.0).pow(2).mean()

    def normal_tv_loss(self, x: torch.Tensor, probe: Optional[float] = None) -> torch.Tensor:
        """mean |n(x) - n(x + d)| (a norm, not squared) for random offsets d of size ~``probe``: a total
        variation of the normals. Bumps pay over their whole area; a crease pays once along its length
        whatever its angle, so flat faces and sharp edges both come out cheaper than a rounded edge
        (a squared difference, as Neuralangelo's curvature loss, would round the edges)."""
        y = x + (NORMAL_PROBE if probe is None else probe) * torch.randn_like(x)
        _, _, g = self.sdf_and_gradient(torch.cat([x, y]))
        n = F.normalize(g, dim=-1, eps=1e-8)
        return (n[: len(x)] - n[len(x):]).norm(dim=-1).mean()

    def regularisers(self, step: int) -> dict:
        if self.eikonal_weight <= 0 and self.smoothness_weight <= 0:
            return {}
        p = self.surface_batch()
        out = {}
        if self.eikonal_weight > 0:
            near = p + SURFACE_JITTER * torch.randn_like(p)
            out["eikonal"] = self.eikonal_weight * self.eikonal_loss(near)
        if self.smoothness_weight > 0:
            out["normal_tv"] = self.smoothness_weight * self.normal_tv_loss(p)
        return out


def _sphere_points(radius: float, n: int = 4096) -> np.ndarray:
    """Points spread over a sphere (a Fibonacci lattice), the standalone field's surface samples."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + 5**0.5) * i
    r = np.sqrt(1.0 - z * z)
    return (radius * np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)).astype(np.float32)
