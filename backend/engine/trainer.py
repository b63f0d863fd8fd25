"""The SDS optimisation loop, its checkpoints, and ``run_generation`` behind ``api.generate``."""

from __future__ import annotations

import io
import logging
import random
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from backend.atomic_write import atomic_path
from backend.engine import builtin_types  # noqa: F401  registers the built-in guidance and geometry types
from backend.engine.cameras import (camera_rays, host_to_device, preview_camera, sample_cameras, view_direction,
                                    view_suffixes)
from backend.engine.field import BackgroundMLP
from backend.engine.geometry import Geometry
from backend.engine.guidance.base import Guidance
from backend.engine.guidance.models import load_guidance_for
from backend.engine.occupancy import make_estimator
from backend.engine.registry import find
from backend.engine.renderer import VolumeRenderer
from backend.engine.types import Cancelled, GenerationResult, ProgressEvent
from shared.settings import GenerationSettings

log = logging.getLogger(__name__)

BOUND = 1.0                  # the object lives in [-1, 1]^3
CHECKPOINT_VERSION = 1
# Settings that do not change the optimisation trajectory: a checkpoint may be resumed with other values.
NON_TRAJECTORY = {"preview_interval", "preview_size", "proxy_mesh_interval", "checkpoint_interval",
                  "mesh_resolution", "mesh_threshold", "face_budget", "texture_size", "vertex_colors",
                  "keep_components", "model",
                  # speed only: the same computation, run another way
                  "cuda_graphs", "checkpoint_rays", "hashgrid_backend"}


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA was requested but this machine has no usable CUDA GPU "
                         "(use --device cpu or auto)")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


class Trainer:
    """Owns the field, renderer, optimiser and guidance for one run; ``train_step`` is one SDS step.

    The field is the geometry type ``settings.geometry_type`` names (``backend.engine.registry``)."""

    def __init__(self, settings: GenerationSettings, guidance: Guidance, device: torch.device | str):
        self.s, self.device, self.guidance = settings, torch.device(device), guidance
        seed_everything(settings.seed)
        self.field: Geometry = find("geometry", settings.geometry_type).from_settings(settings, bound=BOUND)
        self.field.to(self.device)
        self.background = BackgroundMLP().to(self.device)
        self.estimator = make_estimator(BOUND, settings.occupancy_resolution, self.device)
        # Activation checkpointing trades a second forward pass for memory: worth it on a GPU only.
        self.renderer = VolumeRenderer(self.field, self.background, self.estimator, bound=BOUND,
                                       samples_per_ray=settings.samples_per_ray,
                                       checkpoint_rays=settings.checkpoint_rays if self.device.type == "cuda" else 0)
        self.optimizer = torch.optim.Adam(
            [{**group, "lr": settings.lr} for group in self.field.parameter_groups()]
            + [{"params": self.background.parameters(), "lr": settings.lr_background, "name": "background"}],
            betas=(0.9, 0.99), eps=1e-15, fused=self.device.type == "cuda")   # fused: one launch on CUDA
        for group in self.optimizer.param_groups:
            group["initial_lr"] = group["lr"]
        self.embeddings = guidance.encode_prompts(
            settings.prompt, settings.negative_prompt,
            view_suffixes(settings.view_naming) if settings.view_dependent_prompt else {})
        self.step = 0
        self._set_levels()

    # -- schedules -------------------------------------------------------------------------------
    def _set_levels(self) -> None:
        self.field.update_step(self.step)       # e.g. progressive hash-grid levels

    def t_range(self, step: int) -> tuple[float, float]:
        t_max = self.s.t_max
        if self.s.t_anneal:
            t_max = self.s.t_max + (self.s.t_max_end - self.s.t_max) * step / max(1, self.s.steps)
        return self.s.t_min, max(self.s.t_min, t_max)

    def lr_scale(self, step: int) -> float:
        """Exponential decay from 1 to ``lr_final_ratio`` over the run. Computed from the step (not a
        torch LR scheduler with its own counter) so a resumed run gets exactly the same rates."""
        return self.s.lr_final_ratio ** (step / max(1, self.s.steps))

    def orientation_weight(self, step: int) -> float:
        s = self.s
        if s.orientation_ramp_steps <= 0:
            return s.orientation_weight_end
        f = min(1.0, step / s.orientation_ramp_steps)
        return s.orientation_weight_start + f * (s.orientation_weight_end - s.orientation_weight_start)

    def choose_shading(self, step: int) -> str:
        """DreamFusion: albedo only while warming up; then albedo 25%, else textureless or lit, 50/50."""
        if step < self.s.albedo_warmup_steps:
            return "albedo"
        if self.s.shading != "dreamfusion":
            return self.s.shading
        if random.random() < 0.25:
            return "albedo"
        return "textureless" if random.random() < 0.5 else "lambertian"

    def background_colors(self, batch: int) -> Optional[torch.Tensor]:
        """Per-image background colour (B,3), or None for the learned background MLP."""
        mode = self.s.background
        if mode == "white":
            return torch.ones(batch, 3, device=self.device)
        if mode == "black":
            return torch.zeros(batch, 3, device=self.device)
        if mode == "random" or (self.s.random_background_prob > 0 and random.random() < self.s.random_background_prob):
            return host_to_device(torch.rand(batch, 3), self.device)
        return None

    # -- one step --------------------------------------------------------------------------------
    def train_step(self) -> dict:
        s, step = self.s, self.step
        self.field.train(), self.estimator.train()
        stage = s.stage_at(step)
        batch, res = stage.batch_size, stage.resolution
        self._set_levels()
        self.renderer.update_occupancy(step)

        cams = sample_cameras(s, batch, device=self.device)
        views = [view_direction(e, a, s.front_threshold, s.overhead_threshold, s.view_naming)
                 for e, a in zip(cams.elevation.tolist(), cams.azimuth.tolist())] if s.view_dependent_prompt \
            else [""] * batch
        shading = self.choose_shading(step)
        rays_o, rays_d = camera_rays(cams, res)
        per_ray = res * res
        light = None
        if shading != "albedo":
            # DreamFusion's light: near the camera direction, 0.8-1.5 units from the centre.
            direction = F.normalize(cams.positions + host_to_device(torch.randn(batch, 3), self.device), dim=-1)
            light = direction * (0.8 + 0.7 * host_to_device(torch.rand(batch, 1), self.device))
            light = light.repeat_interleave(per_ray, 0)
        bg = self.background_colors(batch)
        if bg is not None:
            bg = bg.repeat_interleave(per_ray, 0)
        need_normals = shading != "albedo"
        out = self.renderer(rays_o.reshape(-1, 3), rays_d.reshape(-1, 3), shading=shading,
                            light_positions=light, bg_color=bg, stratified=True, need_normals=need_normals)
        rgb = out["rgb"].reshape(batch, res, res, 3)
        guide = self.guidance(rgb, self.embeddings, views, cameras=cams, guidance_scale=s.guidance_scale,
                              t_range=self.t_range(step))
        losses = {"sds": guide["loss_sds"]}
        opacity = out["opacity"]
        if "orient_sum" in out:
            orient = out["orient_sum"] / (opacity > 0).sum().clamp(min=1)
            losses["orient"] = self.orientation_weight(step) * orient
        if s.sparsity_weight > 0:
            losses["sparsity"] = s.sparsity_weight * (opacity**2 + 0.01).sqrt().mean()
        if s.opacity_weight > 0:
            o = opacity.clamp(1e-3, 1 - 1e-3)
            losses["opacity"] = s.opacity_weight * F.binary_cross_entropy(o, (o > 0.5).float().detach())
        losses.update(self.field.regularisers(step))     # e.g. the SDF's eikonal term
        total = sum(losses.values())
        if s.lr_final_ratio != 1.0:
            scale = self.lr_scale(step)
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * scale
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.step += 1
        losses["total"] = total
        return {k: v.detach() for k, v in losses.items()}

    # -- previews --------------------------------------------------------------------------------
    @torch.no_grad()
    def preview(self, size: Optional[int] = None) -> np.ndarray:
        self.field.eval(), self.estimator.eval()
        cams = preview_camera(self.s, device=self.device)
        rays_o, rays_d = camera_rays(cams, size or self.s.preview_size)
        bg = None   # the learned background, as SDS sees it
        if self.s.background != "mlp":
            # A fixed colour: black for "black", white for "white" and for per-step random colours.
            bg = torch.full_like(rays_o, 0.0 if self.s.background == "black" else 1.0)
        image = self.renderer.render_image(rays_o, rays_d, shading="albedo", bg_color=bg)
        return to_uint8(image["rgb"][0])

    def proxy_mesh(self) -> Optional[bytes]:
        from backend.export.mesh import proxy_glb

        self.field.eval()
        return proxy_glb(self.field.density, self.field.albedo, resolution=64, bound=BOUND, device=self.device)

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"version": CHECKPOINT_VERSION, "settings": self.s.to_dict(), "step": self.step,
                "field": self.field.state_dict(), "background": self.background.state_dict(),
                "estimator": self.estimator.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng}

    def save_checkpoint(self, path: str) -> None:
        with atomic_path(path) as tmp:    # a kill mid-write leaves the previous checkpoint intact
            torch.save(self.state_dict(), tmp)

    def load_checkpoint(self, path: str) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint {path} has version {state.get('version')}, expected {CHECKPOINT_VERSION}")
        mine = self.s.to_dict()
        changed = sorted(k for k, v in state["settings"].items() if k not in NON_TRAJECTORY and mine.get(k) != v)
        if changed:
            raise ValueError(f"checkpoint {path} was made with different settings: {', '.join(changed)}")
        self.field.load_state_dict(state["field"])
        self.background.load_state_dict(state["background"])
        self.estimator.load_state_dict(state["estimator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([r.cpu() for r in rng["cuda"]])
        self._set_levels()

    def init_from_checkpoint(self, path: str) -> None:
        """Refine: take the field (not the optimiser or step) of another run."""
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.field.load_state_dict(state["field"])
        self.background.load_state_dict(state["background"])
        self.estimator.load_state_dict(state["estimator"])
        self._set_levels()

    # -- the loop --------------------------------------------------------------------------------
    def fit(self, callback: Optional[Callable] = None, should_cancel: Optional[Callable[[], bool]] = None,
            checkpoint_path: Optional[str] = None) -> dict:
        s = self.s
        start_step, t0 = self.step, time.perf_counter()
        losses: dict = {}
        while self.step < s.steps:
            if should_cancel is not None and should_cancel():
                if checkpoint_path:
                    self.save_checkpoint(checkpoint_path)
                raise Cancelled(self.step)
            losses = self.train_step()
            step = self.step
            if checkpoint_path and s.checkpoint_interval and step % s.checkpoint_interval == 0:
                self.save_checkpoint(checkpoint_path)
            due_preview = s.preview_interval and (step % s.preview_interval == 0 or step == s.steps)
            due_proxy = s.proxy_mesh_interval and step % s.proxy_mesh_interval == 0
            if callback is not None and (due_preview or due_proxy):
                elapsed = time.perf_counter() - t0
                rate = elapsed / max(1, step - start_step)
                callback(ProgressEvent(
                    step=step, total=s.steps, losses={k: float(v) for k, v in losses.items()},
                    elapsed_s=elapsed, eta_s=rate * (s.steps - step),
                    preview_png=png_bytes(self.preview()) if due_preview else None,
                    proxy_glb=self.proxy_mesh() if due_proxy else None))
        if checkpoint_path:
            self.save_checkpoint(checkpoint_path)
        return {k: float(v) for k, v in losses.items()}

    # -- export ----------------------------------------------------------------------------------
    @torch.no_grad()
    def occupied_density(self, x: torch.Tensor) -> torch.Tensor:
        """Density, skipping points in cells the occupancy grid marks empty (dilated by one cell so
        thin parts are never cut). Most of a 256^3 export grid is empty: this is ~10x faster."""
        grid = self.estimator.binaries.reshape(1, 1, *self.estimator.binaries.shape[-3:]).float()
        grid = F.max_pool3d(grid, kernel_size=3, stride=1, padding=1)[0, 0].bool()
        res = grid.shape[0]
        cell = ((x + BOUND) / (2 * BOUND) * res).long().clamp(0, res - 1)
        occupied = grid[cell[:, 0], cell[:, 1], cell[:, 2]]
        out = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        if occupied.any():
            out[occupied] = self.field.density(x[occupied])
        return out

    def export(self, progress: Optional[Callable[[str, float], None]] = None):
        from backend.export.mesh import export_field

        self.field.eval()
        s = self.s
        return export_field(self.occupied_density, self.field.albedo, resolution=s.mesh_resolution,
                            threshold=s.mesh_threshold, keep_components=s.keep_components,
                            face_budget=s.face_budget, texture_size=s.texture_size,
                            vertex_colors=s.vertex_colors, bound=BOUND, device=self.device, progress=progress)


def run_generation(settings: GenerationSettings, *, device: str = "auto", callback=None, checkpoint_path=None,
                   should_cancel=None, init_mesh_glb=None, init_checkpoint=None,
                   guidance: Optional[Guidance] = None) -> GenerationResult:
    """``api.generate``'s body (see there)."""
    from backend.export.turntable import turntable_png

    settings.validate()
    dev = pick_device(device)
    t_start = time.perf_counter()
    if guidance is None:
        guidance = load_guidance_for(settings, dev)
    else:
        wanted = find("guidance", settings.guidance_type)
        if not isinstance(guidance, wanted):
            raise ValueError(f"guidance_type: the settings ask for {settings.guidance_type!r} "
                             f"({wanted.__name__}), the guidance passed in is a {type(guidance).__name__}")
        guidance.configure(settings)
    t_loaded = time.perf_counter()
    trainer = Trainer(settings, guidance, dev)
    resumed_from, init_transform = 0, None
    if checkpoint_path and Path(checkpoint_path).is_file():
        trainer.load_checkpoint(checkpoint_path)
        resumed_from = trainer.step
    elif init_checkpoint:
        trainer.init_from_checkpoint(init_checkpoint)
    elif init_mesh_glb:
        from backend.engine.mesh_init import fit_field_to_mesh

        def init_progress(fraction: float) -> None:
            if callback is not None:
                callback(ProgressEvent(step=0, total=settings.steps, losses={}, elapsed_s=0.0, eta_s=0.0,
                                       stage="init", message=f"fitting the field to the mesh {fraction:.0%}"))

        init_transform = fit_field_to_mesh(trainer, init_mesh_glb, progress=init_progress)
    final_losses = trainer.fit(callback, should_cancel, checkpoint_path)
    t_fit = time.perf_counter()

    def export_progress(stage: str, fraction: float) -> None:
        if callback is not None:
            callback(ProgressEvent(step=trainer.step, total=settings.steps, losses={}, elapsed_s=0.0, eta_s=0.0,
                                   stage="export", message=f"{stage} {fraction:.0%}"))

    exported = trainer.export(export_progress)
    strip = turntable_png(exported.vertices, exported.faces, uvs=exported.uvs, texture=exported.texture,
                          vertex_colors=exported.vertex_colors)
    t_end = time.perf_counter()
    fit_steps = max(1, settings.steps - resumed_from)
    metadata = {
        "settings": settings.to_dict(), "device": str(dev), "guidance": guidance.name,
        "resumed_from_step": resumed_from, "final_losses": final_losses,
        # Refine from a mesh: how it was centred (engine coords) and scaled into the scene.
        "init_transform": init_transform,
        "faces": int(exported.n_faces), "vertices": int(exported.n_vertices),
        "mesh_threshold": float(exported.threshold),
        "timings": {"load_s": t_loaded - t_start, "optimise_s": t_fit - t_loaded,
                    "s_per_step": (t_fit - t_loaded) / fit_steps, "export_s": t_end - t_fit,
                    "export_stages": exported.timings},
    }
    return GenerationResult(glb=exported.glb, turntable_png=strip, metadata=metadata)
