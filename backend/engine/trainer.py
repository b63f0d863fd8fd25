"""The SDS optimisation loop, its checkpoints, and ``run_generation`` behind ``api.generate``."""

from __future__ import annotations

import io
import logging
import random
import time
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from backend.atomic_write import atomic_path
from backend.engine import builtin_types  # noqa: F401  registers the built-in guidance and geometry types
from backend.engine import hollow
from backend.engine.cameras import (CameraBatch, camera_rays, host_to_device, preview_camera, sample_cameras,
                                    view_direction, view_suffixes)
from backend.engine.field import BackgroundMLP
from backend.engine.sampling_rule import auto_sampling, samples_on_budget
from backend.engine.geometry import Geometry
from backend.engine.guidance.base import Guidance, GuidanceRequest, PromptEmbeddings, avoid_text
from backend.engine.guidance.models import load_guidance_for
from backend.engine.occupancy import make_estimator
from backend.engine.registry import find
from backend.engine.renderer import VolumeRenderer
from backend.engine.rng import JobRandom
from backend.engine.shading_prompt import SHADING_WORDS, embedding_key, with_shading_word
from backend.engine.types import Cancelled, GenerationResult, ProgressEvent
from shared.settings import GenerationSettings

log = logging.getLogger(__name__)

BOUND = 1.0                  # the object lives in [-1, 1]^3
CHECKPOINT_VERSION = 2       # 2: the job's own random streams (rng.JobRandom) instead of the global RNG
# Settings that do not change the optimisation trajectory: a checkpoint may be resumed with other values.
NON_TRAJECTORY = {"preview_interval", "preview_size", "proxy_mesh_interval", "checkpoint_interval",
                  "mesh_resolution", "mesh_threshold", "face_budget", "texture_size", "vertex_colors",
                  "keep_components", "model", "fine_thin_inset", "fine_cavity_inset", "fine_board_inset",
                  "fine_flat_base", "fine_base_read", "seal_radius", "mesh_level",
                  # speed only: the same computation, run another way
                  "cuda_graphs", "checkpoint_rays", "hashgrid_backend", "vae_attention", "compile_vae",
                  "sampling", "field_precision", "compile_render", "vae_channels_last", "graph_render"}


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA was requested but this machine has no usable CUDA GPU "
                         "(use --device cpu or auto)")
    return dev


def fast_path(settings: GenerationSettings, device: torch.device | str) -> dict:
    """Which implementations a run uses: the ray sampler (nerfacc's CUDA estimator or the pure-PyTorch
    one, as ``occupancy.make_estimator`` picks) and the hash-grid encoder (the fused Triton kernel or
    the PyTorch reference, as ``HashGridEncoding`` picks). Printed by the CLI, stored in each job's
    metadata: a GPU user without the ``gpu`` extra sees that the fast path is off."""
    from backend.engine import hashgrid_triton

    cuda = torch.device(device).type == "cuda"
    sampler = "pure-PyTorch"
    if cuda:
        try:
            import nerfacc  # noqa: F401
            sampler = "nerfacc"
        except ImportError:
            pass
    fused = cuda and settings.hashgrid_backend == "auto" and hashgrid_triton.available()
    first = settings.resolution_stages[0]
    return {"sampler": sampler, "sampling": resolve_sampling(settings.sampling, device),
            "hashgrid": "fused Triton" if fused else "PyTorch",
            # the renderer replays only budget-sampled training renders, on CUDA (the first stage's size)
            "render_graphs": cuda and settings.graph_render and samples_on_budget(
                settings, first.batch_size * first.resolution ** 2, cuda, BOUND),
            "complete": not cuda or (sampler == "nerfacc" and fused)}


def resolve_sampling(sampling: str, device: torch.device | str) -> str:
    """The ``sampling`` setting's "auto": the fixed sample budget on CUDA, where it removes the step's
    wait for the GPU's sample count (measured faster on an H200, results/speed/NOTES.md run 6); the
    dynamic sampler on the CPU, where there is no such wait and padding would only cost."""
    if sampling != "auto":
        return sampling
    return auto_sampling(torch.device(device).type == "cuda")


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


@dataclass
class StepRender:
    """What the render phase of one step made, for the guidance and loss phases."""

    step: int
    out: dict                  # the renderer's per-ray outputs (rgb, opacity, ..., orient_sum)
    rgb: torch.Tensor          # Float[Tensor, "B H W 3"], with gradient
    cameras: CameraBatch
    views: list[str]
    shading: str


class Trainer:
    """Owns the field, renderer, optimiser and guidance for one run; ``train_step`` is one SDS step.

    The field is the geometry type ``settings.geometry_type`` names (``backend.engine.registry``).

    A step has three phases, so that ``backend.engine.batching`` can step several trainers with one
    guidance call over all their renders: ``render_step`` (cameras, shading, render),
    ``guidance_request`` -> ``Guidance.guide_many``, then ``step_losses``, ``zero_grad``, backward and
    ``optimizer_step``. Every random draw of a run comes from its own streams (``self.rng``, seeded
    from ``settings.seed``), never the global RNG, so a run is the same alone or in a group."""

    def __init__(self, settings: GenerationSettings, guidance: Guidance, device: torch.device | str,
                 image_terms=None):
        """``image_terms``: an image job's extra losses (``backend.engine.reference.ImageTerms``)."""
        self.s, self.device, self.guidance = settings, torch.device(device), guidance
        self.image_terms = image_terms
        views = getattr(guidance, "views_per_object", 1)
        odd = [f"{st.resolution}x{st.batch_size}" for st in settings.resolution_stages if st.batch_size % views]
        if odd:
            raise ValueError(f"resolution_schedule: guidance {guidance.name} judges {views} views of an object "
                             f"together, so every stage's batch must be a multiple of {views}; got {', '.join(odd)} "
                             f"(e.g. {settings.resolution_stages[0].resolution}x{views})")
        seed_everything(settings.seed)       # the field's initial weights (drawn here, once)
        self.rng = JobRandom(settings.seed, self.device)
        self.field: Geometry = find("geometry", settings.geometry_type).from_settings(settings, bound=BOUND)
        self.field.to(self.device)
        self.background = BackgroundMLP().to(self.device)
        self.estimator = make_estimator(BOUND, settings.occupancy_resolution, self.device)
        # Activation checkpointing trades a second forward pass for memory: worth it on a GPU only.
        self.renderer = VolumeRenderer(self.field, self.background, self.estimator, bound=BOUND,
                                       samples_per_ray=settings.samples_per_ray,
                                       checkpoint_rays=settings.checkpoint_rays if self.device.type == "cuda" else 0,
                                       sampling=resolve_sampling(settings.sampling, self.device),
                                       compile=settings.compile_render and self.device.type == "cuda",
                                       graphs=settings.graph_render and self.device.type == "cuda")
        self.renderer.with_distortion = settings.distortion_weight > 0
        self.optimizer = torch.optim.Adam(
            [{**group, "lr": settings.lr} for group in self.field.parameter_groups()]
            + [{"params": self.background.parameters(), "lr": settings.lr_background, "name": "background"}],
            betas=(0.9, 0.99), eps=1e-15, fused=self.device.type == "cuda")   # fused: one launch on CUDA
        for group in self.optimizer.param_groups:
            group["initial_lr"] = group["lr"]
        self.embeddings = self._encode_prompts(guidance, settings)
        self.step = 0
        self.field_trained = False      # True once init_from_checkpoint took a finished run's field
        self._set_levels()
        # A hollow object SDS drew filled is opened when the coarse stage ends (backend/engine/hollow.py). An
        # image job without a typed prompt goes by the one read from its picture.
        recognised = getattr(image_terms, "recognised", None)
        read = recognised.prompt if recognised and recognised.confident else None
        self.opens_cavity = hollow.wanted(settings, read)
        # A prop of upright boards alone (a fence, a shield) gets its own thin-part inset at export (fine.py).
        from backend.prior.catalogue import prompt_category

        drawn = prompt_category(settings, read)
        self.board_prop = drawn is not None and drawn.boards

    @staticmethod
    def _encode_prompts(guidance, s) -> PromptEmbeddings:
        """The prompt with each view's suffix; with ``shading_prompt`` also with each shading word
        (keys ``shading_prompt.embedding_key``)."""
        suffixes = view_suffixes(s.view_naming) if s.view_dependent_prompt else {}

        def encode(prompt: str):
            # the avoid prompt only when there is one: a guidance type of a plug-in may not take it
            avoid = {"avoid_prompt": avoid_text(s.avoid_prompt, prompt)} if s.avoid_scale > 0 else {}
            return guidance.encode_prompts(prompt, s.negative_prompt, suffixes, **avoid)

        embeddings = encode(s.prompt)
        if s.shading_prompt:
            for shading in SHADING_WORDS:
                worded = encode(with_shading_word(s.prompt, shading))
                embeddings.by_view.update({embedding_key(shading, view): e for view, e in worded.by_view.items()})
                if embeddings.avoid is not None and worded.avoid is not None:
                    embeddings.avoid.update({embedding_key(shading, view): e for view, e in worded.avoid.items()})
        return embeddings

    # -- schedules -------------------------------------------------------------------------------
    def _set_levels(self) -> None:
        # e.g. progressive hash-grid levels. A field taken from a finished run (``init_from_checkpoint``) has
        # trained all of them: read at this run's step 0 it would be its own blur (half the levels), and a coarse
        # checkpoint refined into a fine stage started from that blur (a stone house, CPU: IoU 0.85 -> 0.54).
        self.field.update_step(self.s.steps if self.field_trained else self.step)

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
        if self.rng.python.random() < 0.25:
            return "albedo"
        return "textureless" if self.rng.python.random() < 0.5 else "lambertian"

    def background_colors(self, batch: int) -> Optional[torch.Tensor]:
        """Per-image background colour (B,3), or None for the learned background MLP."""
        mode = self.s.background
        if mode == "white":
            return torch.ones(batch, 3, device=self.device)
        if mode == "black":
            return torch.zeros(batch, 3, device=self.device)
        if mode == "random" or (self.s.random_background_prob > 0
                                and self.rng.python.random() < self.s.random_background_prob):
            return host_to_device(torch.rand(batch, 3, generator=self.rng.host), self.device)
        return None

    def draw_cameras(self, s: GenerationSettings, batch: int):
        """``batch`` training cameras from ``s``'s ranges and each one's view name for the prompt."""
        cams = sample_cameras(s, batch, device=self.device, generator=self.rng.host,
                              views_per_object=getattr(self.guidance, "views_per_object", 1))
        views = [view_direction(e, a, s.front_threshold, s.overhead_threshold, s.view_naming)
                 for e, a in zip(cams.elevation.tolist(), cams.azimuth.tolist())] if s.view_dependent_prompt \
            else [""] * batch
        return cams, views

    # -- one step, in phases ----------------------------------------------------------------------
    def render_step(self) -> StepRender:
        """Phase 1: occupancy update, cameras, shading, lights, background, and the render."""
        s, step = self.s, self.step
        self.field.train(), self.estimator.train()
        stage = s.stage_at(step)
        batch, res = stage.batch_size, stage.resolution
        self._set_levels()
        with self.rng.global_scope():
            self.renderer.update_occupancy(step)

        cams, views = self.draw_cameras(s, batch)
        shading = self.choose_shading(step)
        if shading == "albedo" and s.albedo_elevation_min > s.elevation_min:
            # The colour's renders only from where the colour prior has seen objects (drawn again: the default
            # draws nothing more, so runs without the setting keep their trajectories).
            cams, views = self.draw_cameras(s.replace(elevation_min=s.albedo_elevation_min), batch)
        rays_o, rays_d = camera_rays(cams, res)
        per_ray = res * res
        light = None
        if shading != "albedo":
            # DreamFusion's light: near the camera direction, 0.8-1.5 units from the centre.
            offset = torch.randn(batch, 3, generator=self.rng.host)
            distance = 0.8 + 0.7 * torch.rand(batch, 1, generator=self.rng.host)
            direction = F.normalize(cams.positions + host_to_device(offset, self.device), dim=-1)
            light = direction * host_to_device(distance, self.device)
            light = light.repeat_interleave(per_ray, 0)
        bg = self.background_colors(batch)
        if bg is not None:
            bg = bg.repeat_interleave(per_ray, 0)
        need_normals = shading != "albedo"
        # Off: a lit render moves the geometry only; the colour follows the albedo-shaded renders
        # (backend/prior/README.md, "Session 16": v4 darkened a barrel to near-black through them).
        # Always off with a shape prior: the lit renders are its, the colour is the colour prior's.
        albedo_gradient = (self.s.lit_albedo_gradient and not self.s.has_shape_model) or shading != "lambertian"
        with self.rng.global_scope():
            out = self.renderer(rays_o.reshape(-1, 3), rays_d.reshape(-1, 3), shading=shading,
                                light_positions=light, bg_color=bg, stratified=True, need_normals=need_normals,
                                albedo_gradient=albedo_gradient)
        rgb = out["rgb"].reshape(batch, res, res, 3)
        return StepRender(step, out, rgb, cams, views, shading)

    def guidance_request(self, render: StepRender) -> GuidanceRequest:
        """Phase 2's input: this run's renders, prompts, guidance scale (the setting the guidance type
        names: ``guidance_scale`` for text, ``image_guidance_scale`` for zero123), t range and random stream."""
        views = [embedding_key(render.shading, v) for v in render.views] if self.s.shading_prompt else render.views
        return GuidanceRequest(render.rgb, self.embeddings, views, render.cameras,
                               getattr(self.s, self.guidance.scale_setting), self.t_range(render.step),
                               self.rng.device, shading=render.shading, avoid_scale=self.s.avoid_scale,
                               noise_weight=self.s.sds_noise_weight,
                               shape_guidance_scale=self.s.shape_guidance_scale)

    def step_losses(self, render: StepRender, guide: dict) -> dict:
        """Phase 3a: the weighted losses of this step (their sum is what is back-propagated)."""
        s, step, out = self.s, render.step, render.out
        losses = {"sds": guide["loss_sds"]}
        if self.image_terms is not None:   # image job: reference view (+ text prior in joint mode)
            with self.rng.global_scope():
                self.image_terms.add_losses(losses, renderer=self.renderer, rgb=render.rgb, views=render.views,
                                            cameras=render.cameras, t_range=self.t_range(step),
                                            shading=render.shading)
        opacity = out["opacity"]
        if "orient_sum" in out:
            orient = out["orient_sum"] / (opacity > 0).sum().clamp(min=1)
            losses["orient"] = self.orientation_weight(step) * orient
        if s.sparsity_weight > 0:
            losses["sparsity"] = s.sparsity_weight * (opacity**2 + 0.01).sqrt().mean()
        if s.opacity_weight > 0:
            o = opacity.clamp(1e-3, 1 - 1e-3)
            losses["opacity"] = s.opacity_weight * F.binary_cross_entropy(o, (o > 0.5).float().detach())
        if "distortion_sum" in out:
            losses["distortion"] = s.distortion_weight * out["distortion_sum"] / opacity.shape[0]
        with self.rng.global_scope():        # the eikonal term's random points: this run's stream too
            losses.update(self.field.regularisers(step))     # e.g. the SDF's eikonal term
        return losses

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def optimizer_step(self, losses: dict, total: torch.Tensor) -> dict:
        """Phase 3c, after the backward: the learning-rate schedule and the optimiser step."""
        if self.s.lr_final_ratio != 1.0:
            scale = self.lr_scale(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * scale
        self.optimizer.step()
        self.step += 1
        losses["total"] = total
        return {k: v.detach() for k, v in losses.items()}

    def train_step(self) -> dict:
        """One SDS step of this run alone (``batching.step_group`` is the same for several runs)."""
        render = self.render_step()
        guide = self.guidance.guide_many([self.guidance_request(render)])[0]
        losses = self.step_losses(render, guide)
        total = sum(losses.values())
        self.zero_grad()
        total.backward()
        return self.optimizer_step(losses, total)

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
        return {"version": CHECKPOINT_VERSION, "settings": self.s.to_dict(), "step": self.step,
                "field": self.field.state_dict(), "background": self.background.state_dict(),
                "estimator": self.estimator.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": self.rng.state_dict()}

    def save_checkpoint(self, path: str) -> None:
        with atomic_path(path) as tmp:    # a kill mid-write leaves the previous checkpoint intact
            torch.save(self.state_dict(), tmp)

    def load_checkpoint(self, path: str) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        version = state.get("version")
        if version not in (1, CHECKPOINT_VERSION):
            raise ValueError(f"checkpoint {path} has version {version}, expected {CHECKPOINT_VERSION}")
        mine = self.s.to_dict()
        changed = sorted(k for k, v in state["settings"].items() if k not in NON_TRAJECTORY and mine.get(k) != v)
        if changed:
            raise ValueError(f"checkpoint {path} was made with different settings: {', '.join(changed)}")
        self.field.load_state_dict(state["field"])
        self.background.load_state_dict(state["background"])
        self.estimator.load_state_dict(state["estimator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        if version == CHECKPOINT_VERSION:
            self.rng.load_state_dict(state["rng"])
        else:
            # Version 1 kept the process's global RNG: the run goes on with fresh streams of its own
            # (seeded from seed and step), so it continues, though not as it would have uninterrupted.
            log.warning("checkpoint %s predates per-run random streams: resuming with new ones", path)
            self.rng = JobRandom(self.s.seed * 100003 + self.step, self.device)
        self._set_levels()

    def init_from_checkpoint(self, path: str) -> None:
        """Refine: take the field (not the optimiser or step) of another run."""
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.field.load_state_dict(state["field"])
        self.background.load_state_dict(state["background"])
        self.estimator.load_state_dict(state["estimator"])
        self.field_trained = True
        self._set_levels()

    # -- the loop --------------------------------------------------------------------------------
    def fit(self, callback: Optional[Callable] = None, should_cancel: Optional[Callable[[], bool]] = None,
            checkpoint_path: Optional[str] = None) -> dict:
        loop = FitLoop(self, callback, should_cancel, checkpoint_path)
        while not loop.done:
            loop.before_step()
            loop.after_step(self.train_step())
        return loop.finish()

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
        from backend.engine.silhouette_level import coarse_iso
        from backend.export.mesh import export_field

        self.field.eval()
        s = self.s
        return export_field(self.occupied_density, self.field.albedo, resolution=s.mesh_resolution,
                            threshold=s.mesh_threshold, keep_components=s.keep_components,
                            face_budget=s.face_budget, texture_size=s.texture_size,
                            vertex_colors=s.vertex_colors, bound=BOUND, device=self.device, progress=progress,
                            seal_radius=s.seal_radius, iso_fn=lambda grid: coarse_iso(self, grid, bound=BOUND)[:2])


class FitLoop:
    """What happens around each step of a run: cancel checks, checkpoints, progress events with
    previews and proxy meshes. ``Trainer.fit`` drives one; ``batching.GroupRunner`` one per job."""

    def __init__(self, trainer: Trainer, callback: Optional[Callable] = None,
                 should_cancel: Optional[Callable[[], bool]] = None, checkpoint_path: Optional[str] = None):
        self.trainer, self.callback, self.should_cancel = trainer, callback, should_cancel
        self.checkpoint_path = checkpoint_path
        self.start_step, self.t0 = trainer.step, time.perf_counter()
        self.losses: dict = {}

    @property
    def done(self) -> bool:
        return self.trainer.step >= self.trainer.s.steps

    def before_step(self) -> None:
        """Raises ``Cancelled`` (after saving a checkpoint) when the run is asked to stop."""
        if self.should_cancel is not None and self.should_cancel():
            if self.checkpoint_path:
                self.trainer.save_checkpoint(self.checkpoint_path)
            raise Cancelled(self.trainer.step)

    def after_step(self, losses: dict) -> None:
        trainer, s = self.trainer, self.trainer.s
        self.losses = losses
        step = trainer.step
        if trainer.opens_cavity and step == s.steps:
            self.open_cavity()
        if self.checkpoint_path and s.checkpoint_interval and step % s.checkpoint_interval == 0:
            trainer.save_checkpoint(self.checkpoint_path)
        due_preview = s.preview_interval and (step % s.preview_interval == 0 or step == s.steps)
        due_proxy = s.proxy_mesh_interval and step % s.proxy_mesh_interval == 0
        if self.callback is not None and (due_preview or due_proxy):
            elapsed = time.perf_counter() - self.t0
            rate = elapsed / max(1, step - self.start_step)
            self.callback(ProgressEvent(
                step=step, total=s.steps, losses={k: float(v) for k, v in losses.items()},
                elapsed_s=elapsed, eta_s=rate * (s.steps - step),
                preview_png=png_bytes(trainer.preview()) if due_preview else None,
                proxy_glb=trainer.proxy_mesh() if due_proxy else None))

    def open_cavity(self) -> None:
        """The hollow object opened from the top at the coarse stage's last step (``hollow`` setting), before
        that step's checkpoint and preview, so a resumed run never opens it twice."""
        trainer = self.trainer
        if self.callback is not None:
            self.callback(ProgressEvent(step=trainer.step, total=trainer.s.steps, losses={}, elapsed_s=0.0,
                                        eta_s=0.0, stage="init", message="opening the hollow object from the top"))
        with trainer.rng.global_scope():
            share = hollow.open_cavity(trainer)
        log.info("hollow: %.0f%% of the solid opened from the top", 100 * share)

    def finish(self) -> dict:
        if self.checkpoint_path:
            self.trainer.save_checkpoint(self.checkpoint_path)
        return {k: float(v) for k, v in self.losses.items()}


@dataclass
class Generation:
    """A run between ``prepare_generation`` and ``finish_generation``: its trainer and what its
    metadata reports. ``run_generation`` fits it alone; ``batching`` fits several in one group."""

    settings: GenerationSettings
    trainer: Trainer
    guidance: Guidance
    device: torch.device
    resumed_from: int = 0
    init_transform: Optional[dict] = None
    t_start: float = 0.0
    t_loaded: float = 0.0
    extra_metadata: dict = dataclass_field(default_factory=dict)


def guidance_for_run(settings: GenerationSettings, device: torch.device, guidance: Optional[Guidance]) -> Guidance:
    """The run's guidance: loaded for ``settings`` (None), or the one passed in (a worker's cached
    model), checked to be of the settings' type and configured for this run."""
    if guidance is None:
        return load_guidance_for(settings, device)
    from backend.engine.guidance.shape_colour import ShapeColourGuidance

    if isinstance(guidance, ShapeColourGuidance) != settings.has_shape_model:
        raise ValueError(f"shape_model: the settings ask for {settings.shape_model if settings.has_shape_model else 'none'}, the guidance "
                         f"passed in is {guidance.name}")
    wanted = find("guidance", settings.guidance_type)
    if not isinstance(getattr(guidance, "colour", guidance), wanted):
        raise ValueError(f"guidance_type: the settings ask for {settings.guidance_type!r} "
                         f"({wanted.__name__}), the guidance passed in is a {type(guidance).__name__}")
    guidance.configure(settings)
    return guidance


def prepare_generation(settings: GenerationSettings, *, device: str = "auto", callback=None, checkpoint_path=None,
                       init_mesh_glb=None, init_checkpoint=None, guidance: Optional[Guidance] = None,
                       reference_image: Optional[bytes] = None, allow_download: bool = False) -> Generation:
    """Validate, load the guidance (unless given), build the trainer and resume / initialise it."""
    settings.validate()
    dev = pick_device(device)
    t_start = time.perf_counter()
    guidance = guidance_for_run(settings, dev, guidance)
    from backend.engine.reference import prepare_image_terms

    image_terms = prepare_image_terms(settings, guidance, reference_image, dev, allow_download=allow_download)
    t_loaded = time.perf_counter()
    trainer = Trainer(settings, guidance, dev, image_terms=image_terms)
    run = Generation(settings, trainer, guidance, dev, t_start=t_start, t_loaded=t_loaded)
    if checkpoint_path and Path(checkpoint_path).is_file():
        trainer.load_checkpoint(checkpoint_path)
        run.resumed_from = trainer.step
    elif init_checkpoint:
        trainer.init_from_checkpoint(init_checkpoint)
    elif init_mesh_glb:
        from backend.engine.mesh_init import fit_field_to_mesh

        def init_progress(fraction: float) -> None:
            if callback is not None:
                callback(ProgressEvent(step=0, total=settings.steps, losses={}, elapsed_s=0.0, eta_s=0.0,
                                       stage="init", message=f"fitting the field to the mesh {fraction:.0%}"))

        run.init_transform = fit_field_to_mesh(trainer, init_mesh_glb, progress=init_progress)
    else:
        start_coarse_field(trainer, callback)
    return run


def start_coarse_field(trainer: Trainer, callback=None) -> None:
    """A new coarse field's start before step 0 (``shape_init``): "blob" is the field's own ball of density;
    "prior-hull" fits it to the visual hull of the prior's samples (``backend/engine/prior_hull.py``), with
    "init" progress events. Both a one-stage run and the coarse stage of a staged one start here."""
    settings = trainer.s
    if settings.shape_init != "prior-hull":
        return
    from backend.engine.prior_hull import start_from_prior_hull

    def hull_progress(message: str) -> None:
        if callback is not None:
            callback(ProgressEvent(step=0, total=settings.steps, losses={}, elapsed_s=0.0, eta_s=0.0,
                                   stage="init", message=message))

    log.info("shape_init prior-hull: the hull of the prior's samples, %.3f units^3",
             start_from_prior_hull(trainer, progress=hull_progress))


def reference_metadata(image_terms) -> Optional[dict]:
    """An image job's result metadata about its picture (None for a text job): where the object's mask
    came from ("alpha" | "segmented"), the picture's size, its framing and the prompt read from it."""
    if image_terms is None:
        return None
    recognised = image_terms.recognised
    return {
        "mask_source": image_terms.image.source,
        "original_size": list(image_terms.image.original_size),
        # the picture's framing: reference_fill, or the text prior's size of the object (joint mode)
        "fill": image_terms.image.fill,
        # auto_prompt: the prompt read from the picture (joint mode without a typed prompt)
        "prompt_from_picture": None if recognised is None else {
            "prompt": recognised.prompt, "margin": recognised.margin, "used": recognised.confident,
            "runners_up": [c for c, _ in recognised.scores[1:3]]}}


def finish_generation(run: Generation, final_losses: dict, *, callback=None,
                      t_fit: Optional[float] = None) -> GenerationResult:
    """Export the fitted field, render the turntable, and gather the metadata."""
    from backend.export.turntable import turntable_png

    settings, trainer = run.settings, run.trainer
    t_fit = time.perf_counter() if t_fit is None else t_fit

    def export_progress(stage: str, fraction: float) -> None:
        if callback is not None:
            callback(ProgressEvent(step=trainer.step, total=settings.steps, losses={}, elapsed_s=0.0, eta_s=0.0,
                                   stage="export", message=f"{stage} {fraction:.0%}"))

    exported = trainer.export(export_progress)
    strip = turntable_png(exported.vertices, exported.faces, uvs=exported.uvs, texture=exported.texture,
                          vertex_colors=exported.vertex_colors)
    t_end = time.perf_counter()
    fit_steps = max(1, settings.steps - run.resumed_from)
    metadata = {
        "settings": settings.to_dict(), "device": str(run.device), "guidance": run.guidance.name,
        "fast_path": fast_path(settings, run.device),
        "resumed_from_step": run.resumed_from, "final_losses": final_losses,
        # Refine from a mesh: how it was centred (engine coords) and scaled into the scene.
        "init_transform": run.init_transform,
        "faces": int(exported.n_faces), "vertices": int(exported.n_vertices),
        "mesh_threshold": float(exported.threshold),
        "reference": reference_metadata(trainer.image_terms),
        "timings": {"load_s": run.t_loaded - run.t_start, "optimise_s": t_fit - run.t_loaded,
                    "s_per_step": (t_fit - run.t_loaded) / fit_steps, "export_s": t_end - t_fit,
                    "export_stages": exported.timings},
        **run.extra_metadata,
    }
    return GenerationResult(glb=exported.glb, turntable_png=strip, metadata=metadata)


def run_generation(settings: GenerationSettings, *, device: str = "auto", callback=None, checkpoint_path=None,
                   should_cancel=None, init_mesh_glb=None, init_checkpoint=None,
                   guidance: Optional[Guidance] = None, reference_image: Optional[bytes] = None,
                   allow_download: bool = False) -> GenerationResult:
    """``api.generate``'s body (see there)."""
    run = prepare_generation(settings, device=device, callback=callback, checkpoint_path=checkpoint_path,
                             init_mesh_glb=init_mesh_glb, init_checkpoint=init_checkpoint, guidance=guidance,
                             reference_image=reference_image, allow_download=allow_download)
    final_losses = run.trainer.fit(callback, should_cancel, checkpoint_path)
    return finish_generation(run, final_losses, callback=callback)
