"""The cost model: time and peak memory of a generation from its settings, with coefficients fitted
to measured runs of one device (``backend/cost/profiles/<device-slug>.json``).

The form is small and physical, so a dozen short measured runs pin it down and it extrapolates
along the axes a user turns:

- **one SDS step** (a stage of the resolution schedule, albedo warm-up or after it)::

      step_s = a[arch] + b * samples + b_l * samples * levels/16 + b_n * samples * normals + e * normals
               + c[arch] * guidance_images + i[arch] * images + (d + d_n * normals) * field_params

  ``a[arch]`` the fixed cost of a step with that model (kernel launches, the guidance's batch-independent
  part: a GPU is far from full at batch 1), ``samples`` = rays x samples_per_ray (the ray marcher's
  budget: the field's MLPs), ``levels`` the
  hash grid's (each sample looks up 8 corners per level),
  ``normals`` the share of steps that shade with normals (their Jacobian roughly doubles the field
  work), ``guidance_images`` = batch x (guidance resolution / 512)^2 (UNet + VAE encoder work, one
  coefficient per model architecture), ``images`` = batch (the part of each image's guidance that does
  not shrink with its pixels: at 256 px SD's UNet and VAE are bound by their kernel launches, so a
  quarter of the pixels cost nearly a whole image, and a second image of a batch adds a whole one),
  ``e * normals`` the fixed cost of a step that shades with normals (the Jacobian, the light and the
  shading issue more kernels whatever the sample count: the built-in prior's steps, bound by their
  launches, are ~2-4 ms slower lit than albedo-only at any render size), ``field_params`` the hash
  tables (Adam's update, the gradient zeroing; the normals' double backward scatters into them a
  second time);
- **peak memory** of a stage::

      peak = w[arch] + x[shape arch] + m_s * kept_samples + m_r * rays + g[arch] * guidance_images
             + m_p * field_params

  ``w[arch]`` a run's fixed memory with that model (its weights, buffers, workspaces), ``x`` a second
  model's (a shape prior beside the colour prior: its weights; the run's fixed part is there once),
  ``kept_samples`` the samples whose activations are
  kept for the backward pass (on CUDA at most ``checkpoint_rays`` rays at a time: the renderer
  checkpoints larger renders chunk by chunk);
- **previews**, **checkpoints** and the **export** (marching cubes cells, texture texels, faces),
  each a line of its own.

Host memory on the CPU (and for a checkpoint's copies off the GPU) has one step in it: glibc serves
an allocation above 32 MiB (its largest mmap threshold) with fresh pages from the kernel every time,
and a hash table above that size pays for it by the byte. So a CPU step has a term of its own for
such a table (``big_field_params``: its gradient and Adam's temporaries are new mappings each
step), and so has a CUDA checkpoint (the table and its two Adam moments are each copied into a new
host buffer before they are written).

Coefficients come from least squares on the measured runs, each row divided by its measured value
(relative error is what a user feels: 2 s off a 10 s run is as bad as 20 off 100) and with
non-negative coefficients (scipy's NNLS: no term can make a run cheaper). ``python -m backend bench
cost`` measures, fits and writes the profile.

Pure Python at estimate time (the server and the CLI estimate without importing torch); numpy and
scipy only for the fit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from backend.engine.sampling_rule import auto_sampling, samples_on_budget
from shared.settings import GenerationSettings

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
PROFILE_VERSION = 1
GB = 2**30

# Model architectures the profiles know. Any model other than the built-in prior is costed as the
# Stable Diffusion 1.5 architecture (SD 1.x/2.x checkpoints share its UNet and VAE sizes); the
# estimate says so.
BUILTIN_ARCH = "builtin"
SD_ARCH = "sd15"


# A UNet this narrow is the project's own prior layout (64-192 channels; SD 1.x's is 320-1280), whatever
# its folder: a v8 weights folder passed as ``shape_model`` costs what the built-in prior costs.
BUILTIN_MAX_CHANNELS = 256


def architecture(model: str) -> str:
    """``builtin`` for "builtin", "builtin-shape" or a local diffusers folder in the built-in prior's layout (read from
    its ``unet/config.json``), else ``sd15``."""
    if model in ("builtin", "builtin-shape"):
        return BUILTIN_ARCH
    config = Path(model).expanduser() / "unet" / "config.json"
    try:
        channels = json.loads(config.read_text()).get("block_out_channels") or []
    except (OSError, ValueError):
        return SD_ARCH
    return BUILTIN_ARCH if channels and max(channels) <= BUILTIN_MAX_CHANNELS else SD_ARCH


def shape_architecture(s: GenerationSettings) -> str | None:
    """The architecture of the second prior that guides the shape (``shape_model``), None without one."""
    return architecture(s.shape_model.strip()) if s.has_shape_model else None


# ---- features --------------------------------------------------------------------------------------
def hash_level_resolutions(levels: int, base: int, top: int) -> list[int]:
    """The engine's per-level grid sizes (``backend.engine.hashgrid.level_resolutions``, no torch here)."""
    if levels == 1:
        return [base]
    scale = math.exp((math.log(top) - math.log(base)) / (levels - 1))
    return [int(math.floor(base * scale**level)) for level in range(levels)]


def field_params(s: GenerationSettings) -> float:
    """Hash-table entries x features: the parameters Adam updates every step."""
    table = 2**s.hash_log2_size
    entries = sum(min((r + 1) ** 3, table)
                  for r in hash_level_resolutions(s.hash_levels, s.hash_base_resolution, s.hash_max_resolution))
    return float(entries * s.hash_features)


# glibc's largest mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit): a larger allocation is always
# mapped afresh (zeroed pages, one fault per 4 KiB), and unmapped when freed; a smaller one, once the
# dynamic threshold has grown past it, comes back from the heap already faulted in. Measured on the
# CPU (session 25, 2-core EPYC, one torch thread, the schema's 16-level 2^19 grid, a 48 MiB table):
# 654 ms a step as it is, 374 ms with MALLOC_MMAP_THRESHOLD_ raised past the table (a 13 MiB table:
# 222-281 ms either way, this machine's noise).
MMAP_THRESHOLD_BYTES = 32 * 2**20


def big_table(s: GenerationSettings) -> bool:
    """Whether the hash table (one float32 tensor of ``field_params`` entries, ``encoding.table``) is
    above ``MMAP_THRESHOLD_BYTES``: its host copies and CPU gradients are fresh mappings each time."""
    return field_params(s) * 4 > MMAP_THRESHOLD_BYTES


def normals_share(s: GenerationSettings, after_warmup: bool) -> float:
    """Share of steps whose shading needs normals (the trainer's ``choose_shading``)."""
    if not after_warmup:
        return 0.0
    return {"dreamfusion": 0.75, "albedo": 0.0}.get(s.shading, 1.0)


def guidance_resolution(s: GenerationSettings, native: dict[str, int], arch: str | None = None) -> int:
    """The side of the images the guidance encodes: the setting, else ``arch``'s (default: the model's)
    native resolution."""
    return s.guidance_resolution or native.get(arch or architecture(s.model), 512)


def step_features(s: GenerationSettings, resolution: int, batch: int, after_warmup: bool,
                  native: dict[str, int], cuda: bool = False) -> dict[str, float]:
    """``cuda``: the profile's device is a GPU (the hash table's gradient and Adam's state live in its
    memory, not the host's)."""
    rays = batch * resolution * resolution
    samples = rays * s.samples_per_ray / 1e6
    params = field_params(s) / 1e6
    g = guidance_resolution(s, native)
    arch = architecture(s.model)
    lit = normals_share(s, after_warmup)
    out = {f"step:{arch}": 1.0, "samples": samples, "sample_levels": samples * s.hash_levels / 16,
           "normal_samples": samples * lit, f"guidance:{arch}": batch * (g / 512) ** 2,
           f"images:{arch}": float(batch), "field_params": params, "normal_field_params": params * lit}
    if lit:
        out["lit_steps"] = lit
    if not cuda and big_table(s):
        # On the CPU a table above glibc's mmap threshold costs more per parameter than a smaller one:
        # each step's gradient and Adam's temporaries of its size are mapped afresh and faulted in
        # (MMAP_THRESHOLD_BYTES). Not on a GPU: the caching allocator reuses its blocks.
        out["big_field_params"] = params
    shape = shape_architecture(s)
    if shape is not None:
        # The lit and textureless renders (the steps that shade with normals) go through the shape prior's
        # UNet and VAE encoder instead: their share of the guidance work moves to its architecture.
        out[f"guidance:{arch}"] *= 1 - lit
        out[f"images:{arch}"] *= 1 - lit
        shape_images = batch * (guidance_resolution(s, native, shape) / 512) ** 2 * lit
        out[f"guidance:{shape}"] = out.get(f"guidance:{shape}", 0.0) + shape_images
        out[f"images:{shape}"] = out.get(f"images:{shape}", 0.0) + batch * lit
    return out


def memory_features(s: GenerationSettings, resolution: int, batch: int, native: dict[str, int],
                    cuda: bool) -> dict[str, float]:
    rays = batch * resolution * resolution
    kept = min(rays, s.checkpoint_rays) if cuda and s.checkpoint_rays > 0 else rays
    arch = architecture(s.model)
    g = guidance_resolution(s, native)
    # The two samplers keep different shares of a ray's steps for the backward pass: the budget keeps its
    # buffers' visible samples (sized from the counts it sees), the dynamic sampler those the occupancy grid and the
    # early stop leave, chunk by chunk. One term for both made the fit split the difference: SD's budget-sampled
    # 128x1 rows under-predicted by 1.1-1.3 GB (19-25%), its dynamic 256x1 over-predicted (session 36).
    kept_name = "budget_samples" if samples_on_budget(s, rays, cuda) else "kept_samples"
    out = {f"weights:{arch}": 1.0, kept_name: kept * s.samples_per_ray / 1e6, "rays": rays / 1e6,
           f"guidance:{arch}": batch * (g / 512) ** 2, "field_params": field_params(s) / 1e6}
    shape = shape_architecture(s)
    if shape is not None:
        # Both priors stay loaded. One guidance call runs at a time, so the activations at the peak are the
        # larger call's; a linear model cannot take a max, so two architectures count both (an upper bound:
        # the built-in prior's activations are small beside SD's). The second model adds its weights, not a
        # second run's fixed memory: counted as a second ``weights:builtin``, the fit had to halve the
        # built-in run's fixed part and put the rest on its guidance images, and so overestimated every
        # built-in batch of 2 (48x2: 0.27 GB predicted, 0.22 measured; results/speed/NOTES.md session 31).
        out[f"extra_model:{shape}"] = 1.0
        if shape != arch:
            out[f"guidance:{shape}"] = batch * (guidance_resolution(s, native, shape) / 512) ** 2
    return out


def preview_features(s: GenerationSettings) -> dict[str, float]:
    """A preview renders ``preview_size``^2 rays through the field without gradients: per sample the MLPs
    and, per hash level, the 8-corner lookups (``preview_sample_levels``, as the step's ``sample_levels``:
    the CPU runs of record took 104-115 ms for a 16-level grid's preview, 55-58 ms for the 8-level one's
    at the same samples)."""
    samples = s.preview_size**2 * s.samples_per_ray / 1e6
    return {"preview": 1.0, "preview_samples": samples, "preview_sample_levels": samples * s.hash_levels / 16}


def checkpoint_features(s: GenerationSettings, cuda: bool = False) -> dict[str, float]:
    """A save writes the table and Adam's two moments of it (12 bytes a parameter; the MLPs and the
    occupancy grid are small beside them) and fsyncs the file: a fixed cost and one per byte."""
    params = field_params(s) / 1e6
    out = {"checkpoint": 1.0, "field_params": params}
    if cuda and big_table(s):
        # torch.save copies each CUDA tensor into a new pageable host buffer (``storage.cpu()``); above
        # glibc's mmap threshold that buffer is fresh pages, faulted in as the copy lands. Both H200
        # runs of record (sessions 14 and 17) show it in their fitted rows: the line through the 3 and
        # 13 MiB tables' saves (~16 and ~53 ms) gives ~150 ms for the 48 MiB one, measured 290-340 ms.
        # A CPU checkpoint writes the tensors where they are: no copy, no such term.
        out["big_field_params"] = params
    return out


def fine_step_settings(s: GenerationSettings) -> GenerationSettings:
    """The settings a fine-stage step runs with, as ``backend.engine.fine.fine_settings`` derives them, for
    the fields a step's cost reads (render size and batch, samples per ray). Restated here because the
    estimate imports no torch; ``tests/test_cost.py`` checks the two agree."""
    batch = s.resolution_stages[-1].batch_size
    return s.replace(steps=max(1, s.fine_steps), resolution_schedule=f"{s.fine_resolution}x{batch}",
                     samples_per_ray=min(4096, 2 * s.samples_per_ray), albedo_warmup_steps=0)


def fine_features(s: GenerationSettings, step_coef: dict[str, float], native: dict[str, int],
                  cuda: bool = False) -> dict[str, float]:
    """The fine stage (``stages`` "coarse,fine"): its hand-over (the coarse density sampled on the SDF's base
    grid, marching cubes, the signed distance: a fixed cost per device, ``fine_handover``) and its steps,
    each costed as a coarse step of ``fine_step_settings`` times a fitted factor (``fine_steps_s``: the
    signed-distance field, its eikonal term and its surface-hugging samples cost what they cost relative
    to a NeRF step of the same renders). Two coefficients, so a handful of measured fine stages fit them."""
    f = fine_step_settings(s)
    st = f.resolution_stages[0]
    per_step = predict(step_coef, step_features(f, st.resolution, st.batch_size, True, native, cuda=cuda))
    return {"fine_handover": 1.0, "fine_steps_s": s.fine_steps * per_step}


# Faces marching cubes gives per res^2: measured on trained coarse fields of the built-in prior (CPU,
# session 16, 64^3-256^3 grids): barrel 1.8, chair 1.9, cube 3.1 (a sphere of radius res/4 cells:
# ~1.6). The middle of that range; the shape alone moves it by about +-25%.
MC_FACES_PER_RES2 = 2.5


def export_features(s: GenerationSettings, faces: float | None = None) -> dict[str, float]:
    """Marching cubes works on every cell; simplification, baking and the GLB on the faces that are
    left (the budget, or fewer when the grid gives fewer); xatlas's UV unwrap grows faster than the
    faces (``faces_sq``: on this project's meshes 10k / 20k / 40k / 80k / 160k faces took 0.3 / 0.7 /
    2.0 / 6.0 / 24.8 s, CPU, session 16). ``faces``: the mesh's face count when it is known (a measured
    export; the fit), else the budget capped by what the grid gives."""
    if faces is None:
        faces = min(s.face_budget, MC_FACES_PER_RES2 * s.mesh_resolution**2)
    faces /= 1e5
    return {"export": 1.0, "mesh_cells": (s.mesh_resolution / 256) ** 3, "texels": (s.texture_size / 1024) ** 2,
            "faces": faces, "faces_sq": faces**2}


# ---- fit ---------------------------------------------------------------------------------------------
def fit(rows: list[dict[str, float]], targets: list[float]) -> dict[str, float]:
    """Non-negative least squares on relative error: coefficients by feature name."""
    import numpy as np
    from scipy.optimize import nnls

    if len(rows) != len(targets) or not rows:
        raise ValueError("fit: need as many targets as feature rows, and at least one")
    names = sorted({k for r in rows for k in r})
    y = np.asarray(targets, dtype=float)
    if (y <= 0).any():
        raise ValueError("fit: measured values must be positive")
    a = np.array([[r.get(n, 0.0) for n in names] for r in rows], dtype=float) / y[:, None]
    # Columns scaled to unit norm: NNLS converges on ill-scaled columns too, but slower and less exactly.
    norms = np.linalg.norm(a, axis=0)
    norms[norms == 0] = 1.0
    coef, _ = nnls(a / norms, np.ones_like(y), maxiter=50 * len(names))
    return {n: float(c / s) for n, c, s in zip(names, coef, norms)}


def predict(coef: dict[str, float], features: dict[str, float]) -> float:
    return sum(coef.get(k, 0.0) * v for k, v in features.items())


def relative_errors(coef: dict[str, float], rows: Iterable[dict[str, float]], targets: Iterable[float]) -> list[float]:
    return [abs(predict(coef, r) - t) / t for r, t in zip(rows, targets)]


# ---- profiles --------------------------------------------------------------------------------------
@dataclass
class Profile:
    """A device's fitted coefficients (the JSON ``bench cost`` writes)."""

    data: dict
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> "Profile":
        path = Path(path)
        data = json.loads(path.read_text())
        if data.get("version") != PROFILE_VERSION:
            raise ValueError(f"cost profile {path}: version {data.get('version')}, this backend reads {PROFILE_VERSION}")
        return cls(data, path)

    @property
    def slug(self) -> str:
        return self.data["device"]["slug"]

    @property
    def device_name(self) -> str:
        return self.data["device"]["name"]

    @property
    def cuda(self) -> bool:
        return self.data["device"]["kind"] == "cuda"

    @property
    def native(self) -> dict[str, int]:
        return {k: v["native_resolution"] for k, v in self.data["architectures"].items()}

    def coef(self, part: str) -> dict[str, float]:
        return self.data["coefficients"][part]

    def knows(self, arch: str) -> bool:
        return arch in self.data["architectures"]


def profile_path(slug: str) -> Path:
    return PROFILES_DIR / f"{slug}.json"


def available_profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PROFILES_DIR.glob("*.json"))}
