"""The fine stage (Magic3D's coarse -> fine): an SDF started on a surface, rendered sharper, SDS again.

``FineTrainer`` is the ``Trainer`` run on settings derived from the run's (``fine_settings``): the
``implicit-sdf`` geometry (``backend.engine.sdf_field``, where the choice of an SDF over DMTet is
explained), ``fine_steps`` steps at ``fine_resolution`` pixels with twice the coarse stage's samples
per ray and an occupancy grid twice as fine, ``fine_lr``, diffusion times up to 0.5 (threestudio's
``magic3d-refine``), no albedo warm-up (the texture carries over), and no orientation or sparsity
term (an SDF's normals and opacity need neither); the SDF adds its eikonal and normal terms itself.
Its surface is drawn ``fine_render_offset`` betas inside the zero level it exports, so that the render looks
as large as the surface does and SDS has no reason to shrink it.

It starts from one of:
- ``init_from_coarse``: the coarse NeRF's iso-surface (marching cubes at ``BASE_GRID_RESOLUTION``, the
  export's level rule) -> its signed distance -> the SDF's base grid; the coarse hash grid and MLP (the
  albedo) and the background carry over, the SDF residual starts at zero;
- ``init_from_mesh``: Refine Selected's mesh: its signed distance is the base, so the artist's shape is
  kept exactly at the start; the albedo is fitted to the mesh's colours;
- ``init_from_checkpoint``: Refine of a result this backend made: a fine checkpoint's field as it is,
  or a coarse checkpoint's field converted as ``init_from_coarse`` does.

Its checkpoints are marked ``"stage": "fine"`` so a run killed in the fine stage resumes there
(``backend.engine.stages``). It exports the SDF's zero level set, coloured (after a coarse start) by the
albedo on the surface it started on (``albedo_on_start_surface``).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from backend.engine.mesh_init import load_mesh_engine_coords, mesh_colors
from backend.engine.sdf_field import BASE_GRID_RESOLUTION, SDFField
from backend.engine.sdf_init import inside_of_iso_surface, sdf_grid_from_mesh, smooth_sdf
from backend.engine.trainer import BOUND, Trainer
from shared.settings import GenerationSettings

STAGE = "fine"
FINE_T_MAX = 0.5                   # magic3d-refine: small noise only, the shape is already there
ALBEDO_FIT_ITERATIONS = 150        # refine from a mesh: colour fit (seconds on a CPU)
# After the coarse stage (and refining a result of this backend) the fine stage keeps the colours it
# starts with (SDS moves the shape only): with the built-in prior SDS darkened them in the fine stage,
# albedo error +0.013..0.025 on every prompt measured, and no worse than the coarse stage's once frozen
# (results/quality/runs/2026-11-29-fine-tuning-cpu.md). Refine Selected on an artist's mesh trains
# them: it is asked to texture the mesh, which may have no colours at all.
TRAIN_ALBEDO = False
# The coarse surface's signed distance is blurred by this many base-grid cells before the fine stage
# starts on it (``sdf_init.smooth_sdf``): its lumps are gone at the start instead of being ironed out
# by the normal term within the stage's few steps (same runs: the barrel's start 0.893 -> 0.900 normal
# consistency; the pyramid's fine mesh 0.880 with it, 0.859 without, at 64 px and trained colours).
COARSE_SMOOTHING_CELLS = 1.5
# The SDF's surface is drawn ``fine_render_offset`` betas inside its zero level (``SDFField.render_offset``
# says why): drawn at the zero level, the render looks ~2 beta (a render step or two) larger than the
# surface, and SDS shrank every shape by about that much, right-sized ones too (barrel volume 1.09 ->
# 0.92 of the truth, IoU 0.886 -> 0.846); 1.5 (the setting's default) held it at the automatic density
# level (1.10, 0.886), 2 makes shapes grow (1.19). Started on a surface whose level matches the field's
# renders (``mesh_level`` "silhouette"), 1.5 grows every round solid by 3-10% and 1.0 holds them (CPU,
# results/quality/README.md, sessions 55 and 58): such a start, on a bulky object, is drawn at most 1.0 inside
# (``silhouette_level.fine_render_offset``; the thin props keep the automatic level and 1.5). Neither an anchor to the start surface
# nor a volume term did better than an offset: both hold every surface, and fight SDS where it rightly
# thins a prop (results/quality/runs/2026-11-29-fine-hold-cpu.md).
# A coarse start's colours are read on the start surface (``albedo_on_start_surface``): Newton steps on
# the base grid's signed distance from the exported surface to it; two bring a point 2 cm away to within
# a fraction of a base cell (the base is a smoothed distance field, its gradient near unit length).
START_SURFACE_NEWTON_STEPS = 2


def fine_settings(s: GenerationSettings) -> GenerationSettings:
    """The settings the fine stage's Trainer runs with, derived from the run's settings ``s``."""
    batch = s.resolution_stages[-1].batch_size
    t_max = max(s.t_min, min(s.t_max_end if s.t_anneal else s.t_max, FINE_T_MAX))
    return s.replace(geometry_type="implicit-sdf", steps=s.fine_steps,
                     resolution_schedule=f"{s.fine_resolution}x{batch}", lr=s.fine_lr,
                     samples_per_ray=min(4096, 2 * s.samples_per_ray),
                     # A thin shell around the surface is marched: cells half the coarse stage's size.
                     occupancy_resolution=min(256, 2 * s.occupancy_resolution),
                     progressive_levels=False, albedo_warmup_steps=0, orientation_weight_start=0.0,
                     orientation_weight_end=0.0, sparsity_weight=0.0, opacity_weight=0.0, distortion_weight=0.0,
                     t_anneal=False,
                     t_max=t_max)


def checkpoint_stage(path: str) -> Optional[str]:
    """"coarse" or "fine": the stage a checkpoint file was saved in (None: no file)."""
    from pathlib import Path

    if not path or not Path(path).is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state.get("stage", "coarse")


def _started_from_nerf(state: dict) -> bool:
    """Whether a saved fine stage started on a coarse NeRF (not an artist's mesh). Checkpoints from before
    the flag was stored say it by their albedo: only Refine Selected's fine stage trains it."""
    return bool(state.get("from_nerf", not state.get("train_albedo", TRAIN_ALBEDO)))


class FineTrainer(Trainer):
    """The fine stage of the run ``settings`` (the run's own settings, not ``fine_settings``)."""

    field: SDFField

    def __init__(self, settings: GenerationSettings, guidance, device, image_terms=None):
        self.run_settings = settings
        super().__init__(fine_settings(settings), guidance, device, image_terms=image_terms)
        # The coarse stage opened it (hollow.py; an image job by the prompt read from its picture): the fine
        # stage starts open, and its export thins the walls from the inside (``fine_cavity_inset``).
        self.thins_cavity, self.opens_cavity = self.opens_cavity, False
        self.field.train_albedo = TRAIN_ALBEDO
        self.field.render_offset = settings.fine_render_offset
        # Started on a coarse NeRF's surface, whose thin parts are too thick (``fine_thin_inset`` corrects
        # them at export); an artist's mesh (Refine Selected) is exported as it is.
        self.from_nerf = True

    def state_dict(self) -> dict:
        return {**super().state_dict(), "stage": STAGE, "train_albedo": self.field.train_albedo,
                "from_nerf": self.from_nerf, "render_offset": self.field.render_offset}

    def load_checkpoint(self, path: str) -> None:
        super().load_checkpoint(path)
        # a resumed fine stage goes on as it started (a Refine Selected run trains its colours)
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.field.train_albedo = bool(state.get("train_albedo", TRAIN_ALBEDO))
        self.from_nerf = _started_from_nerf(state)
        self.field.render_offset = float(state.get("render_offset", self.field.render_offset))   # set at the hand-over

    # -- starting points -------------------------------------------------------------------------
    def init_from_coarse(self, coarse: Trainer) -> None:
        from backend.engine.silhouette_level import coarse_iso, fine_render_offset
        from backend.export.mesh import EmptyMeshError, density_grid, seal_pores, surface_from_grid

        coarse.field.eval()
        s = self.run_settings
        grid = density_grid(coarse.occupied_density, resolution=BASE_GRID_RESOLUTION, bound=BOUND,
                            device=self.device)
        grid, level, weight = coarse_iso(coarse, grid, bound=BOUND)     # the coarse export's own grid and level
        self.field.render_offset = fine_render_offset(s.fine_render_offset, weight)
        if s.seal_radius > 0:
            # The solid the coarse export draws (export_field seals it too): a shell over a hidden hollow would
            # start the SDF as a thin wall, which the start's smoothing and the fine steps erode (a crate at the
            # silhouette level, CPU: 0.750 -> 0.877 with the seal here; every start at the density level measured
            # the same either way; results/quality/README.md, session 55).
            grid = seal_pores(grid, level, s.seal_radius, bound=BOUND)
        vertices, faces = surface_from_grid(grid, level, bound=BOUND, keep_components=s.keep_components)
        if len(faces) == 0:
            raise EmptyMeshError(level, float(grid.min()), float(grid.max()))
        # The coarse hash grid and MLP: the albedo as it was; the SDF residual row is zeroed below.
        self.field.load_state_dict({k: v for k, v in coarse.field.state_dict().items()
                                    if k.startswith(("encoding.", "mlp."))}, strict=False)
        self._start_on(vertices, faces, smoothing=COARSE_SMOOTHING_CELLS,
                       inside=inside_of_iso_surface(grid, level, vertices, bound=BOUND))
        self.background.load_state_dict(coarse.background.state_dict())

    def init_from_mesh(self, glb: bytes, progress: Optional[Callable[[float], None]] = None) -> dict:
        """Refine Selected: start on the mesh itself; returns how it was placed in the scene."""
        mesh, transform = load_mesh_engine_coords(glb)
        self._start_on(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64))
        self._fit_albedo(mesh, progress)
        self.field.train_albedo = True          # textured by SDS, from the mesh's own colours
        self.from_nerf = False
        return transform

    def init_from_checkpoint(self, path: str) -> None:
        """Refine a result of this backend from its checkpoint (fine: as it is; coarse: converted)."""
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state.get("stage") == STAGE:
            self.field.load_state_dict(state["field"])
            self.background.load_state_dict(state["background"])
            self.from_nerf = _started_from_nerf(state)
            self.field.render_offset = float(state.get("render_offset", self.field.render_offset))
            return
        coarse = Trainer(self.run_settings, self.guidance, self.device)
        coarse.init_from_checkpoint(path)
        self.init_from_coarse(coarse)

    def _start_on(self, vertices: np.ndarray, faces: np.ndarray, smoothing: float = 0.0,
                  inside: Optional[np.ndarray] = None) -> None:
        sdf, samples = sdf_grid_from_mesh(vertices, faces, resolution=BASE_GRID_RESOLUTION, bound=BOUND,
                                          inside=inside, device=self.device)
        sdf = smooth_sdf(sdf, smoothing)
        self.field.set_base(sdf, samples)
        self.field.zero_residual()
        self._set_levels()

    def _fit_albedo(self, mesh, progress, iterations: int = ALBEDO_FIT_ITERATIONS, batch: int = 4096) -> None:
        """Albedo to the mesh's colours in a thin shell around it (the renderer samples around the
        surface). Only the albedo rows are in the loss, so the SDF residual row stays zero."""
        import trimesh

        points, face_index = trimesh.sample.sample_surface(mesh, 20000, seed=0)
        colors = torch.as_tensor(mesh_colors(mesh, points, face_index), device=self.device)
        points = torch.as_tensor(points, dtype=torch.float32, device=self.device)
        optimizer = torch.optim.Adam(self.field.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-15)
        generator = torch.Generator(device="cpu").manual_seed(0)
        self.field.train()
        for it in range(iterations):
            if progress is not None and it % 25 == 0:
                progress(it / iterations)
            idx = torch.randint(0, len(points), (batch,), generator=generator).to(self.device)
            shell = points[idx] + 0.01 * torch.randn(batch, 3, generator=generator).to(self.device)
            loss = F.mse_loss(self.field.albedo(shell), colors[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self.field.zero_residual()

    # -- export: the zero level set --------------------------------------------------------------
    @torch.no_grad()
    def inside(self, x: torch.Tensor) -> torch.Tensor:
        """-sdf (positive inside), for marching cubes at level 0. Away from the occupied shell the base
        grid alone decides (cheap; the residual only moves the surface within the shell)."""
        grid = self.estimator.binaries.reshape(1, 1, *self.estimator.binaries.shape[-3:]).float()
        grid = F.max_pool3d(grid, kernel_size=3, stride=1, padding=1)[0, 0].bool()
        res = grid.shape[0]
        cell = ((x + BOUND) / (2 * BOUND) * res).long().clamp(0, res - 1)
        shell = grid[cell[:, 0], cell[:, 1], cell[:, 2]]
        out = -self.field.base(x)[:, 0]
        if shell.any():
            out[shell] = -self.field.sdf(x[shell])
        return out

    @torch.no_grad()
    def albedo_on_start_surface(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` Float[Tensor, "N 3"] -> albedo Float[Tensor, "N 3"] read on the surface the stage started
        on: ``x`` moved along the base SDF's gradient to its zero level (two Newton steps on the grid).
        Why: the albedo is the coarse stage's, painted by SDS where the coarse surface was; the fine surface
        lies inside it where the stage thinned a part (``fine_thin_inset``, smoothing, SDS), and the albedo
        there, never seen by a render, is darker or another part's colour (GPU preset, props: coarse albedo
        error 0.101, fine 0.107; the table 0.085 -> 0.115, the signpost 0.108 -> 0.143)."""
        for _ in range(START_SURFACE_NEWTON_STEPS):
            base = self.field.base(x)
            x = x - base[:, :1] * F.normalize(base[:, 1:], dim=-1)
        return self.field.albedo(x)

    @property
    def export_albedo(self):
        """The albedo the export and proxy meshes are coloured by: a coarse start's on its start surface, an
        artist's mesh's (Refine Selected, trained in this stage) where the surface is."""
        return self.albedo_on_start_surface if self.from_nerf else self.field.albedo

    def export(self, progress=None):
        from functools import partial

        from backend.export.mesh import cavity_inset, export_field, flat_base, thin_inset

        self.field.eval()
        s = self.s
        # A prop of upright boards alone (a fence, a shield: Category.boards) thinned by its own inset; an artist's
        # mesh (Refine Selected) keeps its thin parts.
        thin = s.fine_board_inset if self.board_prop and s.fine_board_inset > 0 else s.fine_thin_inset
        inset = partial(thin_inset, inset=thin if self.from_nerf else 0.0, bound=BOUND)
        # The cup the coarse stage opened (hollow.py) thinned from its inside (export.mesh.cavity_inset says why).
        inner = s.fine_cavity_inset if self.from_nerf and self.thins_cavity else 0.0
        # An artist's mesh (Refine Selected) keeps its own underside, as it keeps its thin parts.
        cut = s.fine_flat_base and self.from_nerf

        def adjust(grid: np.ndarray) -> np.ndarray:
            grid = cavity_inset(inset(grid), inner, bound=BOUND)
            return flat_base(grid, bound=BOUND, read=s.fine_base_read) if cut else grid

        return export_field(self.inside, self.export_albedo, resolution=s.mesh_resolution, threshold=0.0,
                            keep_components=s.keep_components, face_budget=s.face_budget,
                            texture_size=s.texture_size, vertex_colors=s.vertex_colors, bound=BOUND,
                            device=self.device, progress=progress, adjust_grid=adjust,
                            seal_radius=s.seal_radius if self.from_nerf else 0.0)

    def proxy_mesh(self) -> Optional[bytes]:
        from backend.export.mesh import albedo_at, density_grid, simplify_mesh, surface_from_grid, to_glb

        self.field.eval()
        grid = density_grid(self.inside, resolution=64, bound=BOUND, device=self.device)
        vertices, faces = surface_from_grid(grid, 0.0, bound=BOUND)
        if len(faces) == 0:
            return None
        vertices, faces = simplify_mesh(vertices, faces, 5000)
        return to_glb(vertices, faces, vertex_colors=albedo_at(self.export_albedo, vertices, self.device))
