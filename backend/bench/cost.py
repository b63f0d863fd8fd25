"""``python -m backend bench cost``: measure a grid of settings on this device, fit the cost model,
report its error on held-out settings, write the device's profile.

Every configuration of the grid is a short real run (the engine's Trainer with the real guidance):
steps per second after a warm-up in the albedo warm-up and after it, peak memory
(``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the peak resident set size, reset per
configuration through ``/proc/self/clear_refs``), a preview, a checkpoint save, and a few exports.
Configurations marked ``held_out`` are never fitted: the model is fitted on the others and its
error is measured on them (``table_md`` in ``results/speed/cost.json``).

Architectures: the built-in prior at its preset and around it, and on CUDA the SD-1.5 architecture
(random weights built from its configuration, as ``bench speed`` does) at the default settings and
around them. The CPU grid has the prior only: a CPU SD step takes the better part of a minute.

Each configuration is measured as a fresh run would meet it: the guidance's captured UNet graphs are
dropped before it (a run captures its own at its first step; one kept from an earlier configuration
would be replayed, and a replay's memory is not in ``max_memory_allocated``), a checkpoint is saved
three times (the median kept), and on a GPU the built-in prior's grid, whose small steps measure the
host's launch speed more than the settings, is measured twice (the second pass in reverse order, the
median of the two kept); on a GPU a render too large for the sample budget (the dynamic sampler, whose
step follows the field it marches) is measured on ``DYNAMIC_FIELDS`` fresh fields, the median kept.
Exports start after one untimed export (the first one of a process imports the mesh libraries, ~0.5 s)
and record their stages' times and the face count.

Writes ``backend/cost/profiles/<device-slug>.json`` (the estimator reads it) and
``results/speed/cost.json`` (raw numbers, the fit, the held-out table); the raw numbers are written
after every configuration too, so a run cut short leaves what it measured for ``--refit``. Sized
for ~6-7 minutes on an H200; the CPU grid takes ~10 minutes on two cores. ``--quick``: a few tiny
configurations and exports, written to a temporary folder (a smoke test of the whole path).
Refit from stored numbers: ``python -m backend bench cost --refit results/speed/cost.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from backend.cost.device import cpu_facts, gpu_facts
from backend.cost.model import (BUILTIN_ARCH, GB, PROFILE_VERSION, SD_ARCH, checkpoint_features, export_features,
                                fine_features, fit, memory_features, predict, preview_features, profile_path,
                                relative_errors, step_features)
from backend.engine.guidance.models import BUILTIN_SHAPE
from shared.presets import PRESETS
from shared.settings import GenerationSettings

PROMPT = "a red cube"

# (architecture, settings over the architecture's base, held out?). The base: the prior's preset for
# the prior, as the grid was first measured (32x1 renders, no shape prior: since session 23 the preset
# renders 48x1, which is a held-out row here, and guides with a second prior: SHAPE_GRID's rows, measured in the
# same passes); the schema defaults (threestudio's dreamfusion-sd) for SD-1.5.
PRIOR_BASE = {"resolution_schedule": "32x1", "shape_model": ""}
PRIOR_GRID = [
    ({}, False),                                                       # 32x1, 64 samples, 8 levels of 2^16
    ({"resolution_schedule": "64x1"}, False),
    ({"samples_per_ray": 128}, False),
    ({"resolution_schedule": "32x2"}, False),
    ({"hash_levels": 16, "hash_log2_size": 19, "hash_max_resolution": 4096}, False),   # the schema's grid
    ({"hash_levels": 16, "hash_log2_size": 17, "hash_max_resolution": 2048}, False),
    ({"resolution_schedule": "96x1", "samples_per_ray": 32}, False),
    ({"resolution_schedule": "48x1"}, True),
    ({"resolution_schedule": "48x2", "samples_per_ray": 96}, True),
    ({"hash_levels": 12, "hash_log2_size": 18, "hash_max_resolution": 1024, "samples_per_ray": 48}, True),
    # Session 25: the hash grid's cost split between lookups (samples x levels) and parameters (Adam,
    # the gradient) could not be told apart: both fitted grid variants had 16 levels and 64 samples. 16
    # levels of a small table (1.8 M parameters, 7 MiB); 8 levels of a table just under glibc's 32 MiB
    # mmap threshold (5.9 M, 22 MiB); a second table above it (24 M, 92 MiB) at other renders (the CPU
    # step's and the CUDA checkpoint's per-parameter surcharge above the threshold, backend/cost/model.py).
    ({"hash_levels": 16, "hash_log2_size": 16, "hash_max_resolution": 2048}, False),
    ({"hash_levels": 8, "hash_log2_size": 19, "hash_max_resolution": 2048}, False),
    ({"hash_levels": 16, "hash_log2_size": 20, "hash_max_resolution": 4096, "resolution_schedule": "64x1"}, False),
    # Session 36: four views a step, fitted. Both GPU presets render four (the image preset 48x4 since session 37,
    # the text preset 48x4 with the shape prior, held out below), and with no four-view row in the fit the batch's cost per view
    # came from the one two-view row: 2.3 ms a view, where on an H200 the prior's step is its host's launches and
    # four views cost what one does (results/speed/NOTES.md, session 36: 48x4 + shape predicted 25.5 ms, 13.9
    # measured; the probe: 431 kernel launches a step for one view and for four).
    ({"resolution_schedule": "32x4"}, False),
]
# The built-in preset as it ships (48x1 renders, prior v9 guiding the lit renders): both priors loaded,
# measured with their guidance pair in the grid above's passes (``BuiltinGuidances``).
# Held out: the GPU's preset since session 33 (four views a step): the batch's cost with both priors, predicted
# from the colour prior's batch rows.
SHAPE_GRID = [({"resolution_schedule": "48x1", "shape_model": BUILTIN_SHAPE}, False),
              ({"resolution_schedule": "48x4", "shape_model": BUILTIN_SHAPE}, True)]
SD_GRID = [
    ({}, False),                                                       # the defaults: 64x1, 512 samples
    ({"resolution_schedule": "128x1"}, False),
    ({"resolution_schedule": "256x1"}, False),
    ({"resolution_schedule": "512x1"}, False),
    ({"resolution_schedule": "64x2"}, False),
    ({"samples_per_ray": 256}, False),
    ({"guidance_resolution": 256}, False),
    ({"resolution_schedule": "192x1"}, True),
    ({"resolution_schedule": "96x2", "samples_per_ray": 384}, True),
    ({"resolution_schedule": "128x1", "guidance_resolution": 384}, True),
]
# Exports of a briefly trained prior field: (mesh_resolution, texture_size, face_budget, held out?)
# The grid resolution and the face count are varied apart (a fine grid with few faces, a coarse one with
# many), so the fit can tell marching cubes' cost from the unwrap's; session 14's seven exports could not.
EXPORT_GRID = [(64, 256, 5000, False), (64, 1024, 5000, False), (128, 512, 20000, False), (256, 1024, 50000, False),
               (128, 2048, 20000, False), (256, 512, 5000, False), (96, 512, 50000, False), (192, 1024, 80000, False),
               (128, 256, 40000, False), (256, 2048, 20000, False),
               (128, 1024, 50000, True), (192, 512, 20000, True), (160, 1024, 30000, True), (224, 512, 10000, True)]
CPU_EXPORT_GRID = [(64, 256, 5000, False), (64, 1024, 5000, False), (64, 1024, 5000, False), (96, 512, 20000, False), (128, 1024, 50000, False),
                   (160, 256, 10000, False), (128, 512, 20000, True), (96, 1024, 50000, True)]
# The fine stage (session 27): (fine_steps, fine_resolution, held out?) after a short coarse run of the preset as it
# ships (48x1, both priors, coarse + fine). Steps and render size are varied apart, so the fit can tell the
# hand-over's fixed cost from the steps'; the preset's own (5 steps at 32 px) is held out.
FINE_BASE = {"resolution_schedule": "48x1", "shape_model": BUILTIN_SHAPE, "stages": "coarse,fine"}
FINE_GRID = [(2, 32, False), (20, 32, False), (5, 64, False), (20, 64, False), (40, 48, False),
             (5, 32, True), (10, 96, True)]
CPU_FINE_GRID = [(2, 32, False), (12, 32, False), (4, 64, False), (8, 48, False), (5, 32, True), (6, 64, True)]
QUICK_FINE_GRID = [(1, 32, False), (3, 32, False), (2, 32, True)]
FINE_COARSE_STEPS = 60          # a shape to hand over, not the initial blob

# ``--quick``: a smoke test of the whole path (a few tiny configurations and exports; its fit means nothing).
QUICK_PRIOR_GRID = [({}, False), ({"resolution_schedule": "64x1"}, False), ({"resolution_schedule": "48x1"}, True)]
QUICK_SD_GRID = [({}, False), ({"resolution_schedule": "128x1"}, False), ({"resolution_schedule": "192x1"}, True)]
QUICK_EXPORT_GRID = [(32, 64, 500, False), (48, 128, 1000, False), (40, 64, 800, True)]
QUICK_COUNTS = {"warmup": 2, "steps": 2, "block": 1}
CHECKPOINT_REPEATS = 3
PREVIEW_REPEATS = 11       # a GPU preview is ~5 ms of host-bound work: 5 of them moved by 20-25%


# ---- measuring ------------------------------------------------------------------------------------
# What a duration is measured with: wall time; or (``--clock process``) this process's CPU time,
# which on a CPU shared with other work is close to what an idle machine's single thread would take
# (wall time there measures the neighbours as much as the run).
_CLOCK = {"clock": time.perf_counter}


def clock() -> float:
    return _CLOCK["clock"]()


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:     # resets VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) * 1024


# cuBLAS workspaces, one per (handle, stream) PyTorch has run a matmul on, kept for the process and counted
# in ``memory_allocated``: 32 MiB cuBLAS + 1 MiB cuBLASLt each on the H200 (torch 2.11). Each UNet graph
# capture warms up on a side stream from PyTorch's pool of 32 (``StableDiffusionGuidance._capture``), so
# each configuration left one more behind: in the session 25 H200 run the two passes of the prior's
# grid differ, configuration by configuration, by 33.0 MiB times the configurations measured between
# them (13 of 13), and the first-pass peaks grow along the grid. ``reset_peak`` frees them (as
# PyTorch's own leak check does), so each configuration's peak is what a fresh process would meet.
WORKSPACE_BYTES = 33 * 2**20
STREAM_POOL = 32


def clear_cublas_workspaces() -> None:
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()


def reset_peak(device) -> None:
    gc.collect()
    if device.type == "cuda":
        clear_cublas_workspaces()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        peak_rss_reset()


def peak_bytes(device) -> int:
    return torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_rss_bytes()


def seconds_per_step(trainer, n: int, device, block: int) -> float:
    """Median seconds per step over blocks of ``block`` steps, one synchronisation per block (a real
    run never waits for the GPU between steps)."""
    times = []
    synchronize(device)
    for _ in range(max(1, n // block)):
        t0 = clock()
        for _ in range(block):
            trainer.train_step()
        synchronize(device)
        times.append((clock() - t0) / block)
    return statistics.median(times)


def measure_setup(guidance, settings: GenerationSettings, device, steps: int = 4) -> float:
    """Seconds the first step of a fresh process takes beyond a regular step: the one-off work a CLI job pays
    before its steps run at speed (torch.compile of the VAE encoder, the UNet's and the render's CUDA graph
    captures, Triton's kernel builds when its disk cache is cold). Measured before any other step of this
    architecture in the process, as a user's first step is; the estimate counts it with the model's load."""
    from backend.engine.trainer import Trainer

    drop_cuda_graphs(guidance)
    trainer = Trainer(settings, guidance, device)
    synchronize(device)
    t0 = clock()
    trainer.train_step()
    synchronize(device)
    first = clock() - t0
    steady = seconds_per_step(trainer, steps, device, 1)
    del trainer
    return max(0.0, first - steady)


def settings_for(arch: str, model: str, overrides: dict) -> GenerationSettings:
    base = {**PRESETS["builtin"], **PRIOR_BASE} if arch == BUILTIN_ARCH else {}
    return GenerationSettings.from_dict({**base, "prompt": PROMPT, "model": model, **overrides})


def drop_cuda_graphs(guidance) -> None:
    """Forget the UNet graphs ``guidance`` captured (per input shape, kept for the process): the next
    configuration captures its own, as a fresh run does at its first step. A graph kept from an earlier
    configuration of the same shape would be replayed instead, and a replay's activations live in the
    graph's private pool, outside ``max_memory_allocated``: in the runs of sessions 14 and 17 the
    configurations after the first of their shape measured no UNet activations at all."""
    for g in (guidance, getattr(guidance, "colour", None), getattr(guidance, "shape", None)):
        graphs = getattr(g, "_graphs", None)
        if isinstance(graphs, dict):
            graphs.clear()


# On a GPU a render too large for the fixed sample budget takes the dynamic sampler, whose step follows the field
# it marches (how many samples the occupancy grid keeps): SD-1.5's 192x1 step, the same settings, measured 31-41 ms
# over runs and processes (results/speed/NOTES.md, sessions 31-32), so one field's timing is one draw from that
# spread, and the estimator's error on such a row was mostly the draw's. Such a configuration is measured on this
# many fresh fields (seeds) and the median of each number kept, as a user's run of those settings is any one field.
DYNAMIC_FIELDS = 3
FIELD_MEDIANS = ("step_s_albedo", "step_s_after_warmup", "preview_s", "checkpoint_s", "peak_bytes")


def marches_dynamically(trainer) -> bool:
    """Whether ``trainer``'s training renders take the dynamic sampler (no sample budget, or a render too
    large for one: ``occupancy.budget_fits``)."""
    from backend.engine.occupancy import budget_fits

    renderer, st = trainer.renderer, trainer.s.resolution_stages[0]
    return renderer.sampling != "budget" or not budget_fits(st.resolution * st.resolution * st.batch_size,
                                                            renderer.render_step_size, renderer.estimator)


def median_of_fields(fields: list[dict]) -> dict:
    """One configuration measured on several fresh fields: the median of each number, each field's own under
    ``fields`` (with its seed and sampler)."""
    row = dict(fields[0])
    for key in FIELD_MEDIANS:
        row[key] = statistics.median(f[key] for f in fields)
    if len(fields) > 1:
        row["fields"] = [{k: f[k] for k in (*FIELD_MEDIANS, "seed", "sampler")} for f in fields]
    return row


def measure_config(guidance, settings: GenerationSettings, device, counts: dict,
                   checkpoint_repeats: int = CHECKPOINT_REPEATS, fields: int | None = None) -> dict:
    """One configuration: step time in both phases, peak memory, one preview, ``checkpoint_repeats``
    checkpoint saves (the median kept: one save's time varied by +-20% between configurations of the
    same size, results/speed/NOTES.md session 25). ``fields``: how many fresh fields (seeds ``settings.seed``,
    +1, ...) it is measured on, the median kept; None: ``DYNAMIC_FIELDS`` where a GPU's render takes the
    dynamic sampler (``marches_dynamically``), else one."""
    first = _measure_field(guidance, settings, device, counts, checkpoint_repeats)
    if fields is None:
        fields = DYNAMIC_FIELDS if torch.device(device).type == "cuda" and first["sampler"] == "dynamic" else 1
    rest = [_measure_field(guidance, settings.replace(seed=settings.seed + k), device, counts, checkpoint_repeats)
            for k in range(1, fields)]
    return median_of_fields([first, *rest])


def _measure_field(guidance, settings: GenerationSettings, device, counts: dict, checkpoint_repeats: int) -> dict:
    """``measure_config`` on one fresh field (``settings.seed``'s)."""
    from backend.engine.trainer import Trainer, png_bytes

    st = settings.resolution_stages[0]
    drop_cuda_graphs(guidance)
    reset_peak(device)
    trainer = Trainer(settings, guidance, device)
    sampler = "dynamic" if marches_dynamically(trainer) else "budget"
    # Each phase is timed in its middle: the progressive hash-grid levels and the occupancy grid's
    # updates follow the step number, so step 0 would time a field with half its levels switched off.
    trainer.step = settings.albedo_warmup_steps // 2
    for _ in range(counts["warmup"]):
        trainer.train_step()
    albedo = seconds_per_step(trainer, counts["steps"], device, counts["block"])
    trainer.step = settings.albedo_warmup_steps + max(0, settings.steps - settings.albedo_warmup_steps) // 2
    # The mixed shading's first normals passes (and, with a shape prior, its UNet's graph capture) before
    # the timing: a quarter of these steps are albedo-only, so a few would not surely include one.
    for _ in range(counts["warmup"]):
        trainer.train_step()
    after = seconds_per_step(trainer, counts["steps"], device, counts["block"])
    peak = peak_bytes(device)
    # One untimed preview, then the median of PREVIEW_REPEATS: a configuration's first preview can pay
    # one-off costs (the session 25 H200 run: the process's first preview 13.1 ms, later ones of the same
    # settings 5.0; the 48x1 configuration 10.8 ms in one pass, 6.2 in the other, against 4.6-5.0 for the
    # like settings), and the mean of two timings kept them.
    png_bytes(trainer.preview())
    previews = []
    for _ in range(PREVIEW_REPEATS):
        synchronize(device)
        t0 = clock()
        png_bytes(trainer.preview())
        previews.append(clock() - t0)
    preview_s = statistics.median(previews)
    saves = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(checkpoint_repeats):      # the same path each time, as a run's periodic saves
            t0 = clock()
            trainer.save_checkpoint(str(Path(tmp) / "ckpt.pt"))
            saves.append(clock() - t0)
    del trainer
    return {"resolution": st.resolution, "batch": st.batch_size, "step_s_albedo": albedo,
            "step_s_after_warmup": after, "peak_bytes": peak, "preview_s": preview_s, "preview_times_s": previews,
            "checkpoint_s": statistics.median(saves), "checkpoint_times_s": saves, "workspaces_cleared": True,
            "seed": settings.seed, "sampler": sampler}


MERGED = ("step_s_albedo", "step_s_after_warmup", "preview_s", "checkpoint_s")


def merge_passes(passes: list[dict]) -> dict:
    """One configuration measured in several passes: the smallest of each time and peak, and each
    pass's own numbers under ``passes``. The smallest, not the median (of two passes, their mean): a
    one-off cost only adds, and the session 25 H200 run had them in fitted rows (the schema grid's albedo
    step 176 ms in the first pass, 12.9 in the second; the process's first preview 13.1 ms, 5.0); what
    an earlier configuration left allocated only adds to a peak (WORKSPACE_BYTES)."""
    row = dict(passes[0])
    for key in MERGED:
        row[key] = min(p[key] for p in passes)
    row["peak_bytes"] = min(p["peak_bytes"] for p in passes)
    if len(passes) > 1:
        row["passes"] = [{k: p[k] for k in (*MERGED, "peak_bytes")} for p in passes]
    return row


def measure_exports(guidance, device, grid, repeats: int = 1) -> list[dict]:
    """Each export of ``grid`` timed ``repeats`` times, the median kept: on the H200 single timings of
    neighbouring grids differed by more than their work does (results/speed/NOTES.md, session 17).
    One untimed export first: the first of a process imports the mesh libraries (trimesh, xatlas,
    PyMCubes, fast_simplification: ~0.5 s, NOTES.md session 25), which no later export pays. Each row
    keeps the median run's stage times (``stages_s``) and the mesh's face count (``faces``)."""
    from backend.engine.trainer import Trainer

    settings = settings_for(BUILTIN_ARCH, "builtin", {})
    trainer = Trainer(settings, guidance, device)
    for _ in range(60):                                 # a shape to mesh, not the initial blob only
        trainer.train_step()
    trainer.s = settings.replace(mesh_resolution=32, texture_size=64, face_budget=500)
    trainer.export()                                    # untimed: imports and first calls
    rows = []
    for mesh_res, tex, faces, held in grid:
        trainer.s = settings.replace(mesh_resolution=mesh_res, texture_size=tex, face_budget=faces)
        runs = []
        for _ in range(repeats):
            synchronize(device)
            t0 = clock()
            result = trainer.export()
            runs.append((clock() - t0, result.timings, result.n_faces))
        times = [r[0] for r in runs]
        median_run = sorted(runs, key=lambda r: r[0])[(len(runs) - 1) // 2]
        rows.append({"overrides": {"mesh_resolution": mesh_res, "texture_size": tex, "face_budget": faces},
                     "held_out": held, "export_s": statistics.median(times), "export_times_s": times,
                     "stages_s": median_run[1], "faces": median_run[2], "after_warmup_export": True})
        print("export", {k: v for k, v in rows[-1].items() if k != "stages_s"}, flush=True)
    return rows


def measure_fine(guidance, device, grid, repeats: int = 1) -> list[dict]:
    """Each fine stage of ``grid`` after the same short coarse run: its hand-over (``init_from_coarse``) and
    its steps (``fit`` without a callback: no previews, which the estimate counts apart), timed apart and
    together (``fine_s``, what the fit predicts), the median of ``repeats``. One untimed fine stage first
    (the first hand-over of a process imports the mesh libraries)."""
    from backend.engine.fine import FineTrainer
    from backend.engine.trainer import Trainer

    base = settings_for(BUILTIN_ARCH, "builtin", FINE_BASE)
    guidance.configure(base)
    coarse = Trainer(base, guidance, device)
    for _ in range(FINE_COARSE_STEPS):
        coarse.train_step()

    def one(settings) -> tuple[float, float]:
        synchronize(device)
        t0 = clock()
        fine = FineTrainer(settings, guidance, device)
        fine.init_from_coarse(coarse)
        synchronize(device)
        t1 = clock()
        fine.fit()
        synchronize(device)
        return t1 - t0, clock() - t1

    one(base.replace(fine_steps=1, fine_resolution=32))       # untimed: imports and first calls
    rows = []
    for steps, res, held in grid:
        settings = base.replace(fine_steps=steps, fine_resolution=res)
        runs = sorted((one(settings) for _ in range(repeats)), key=sum)
        handover, fit_s = runs[(len(runs) - 1) // 2]
        rows.append({"overrides": {"fine_steps": steps, "fine_resolution": res}, "held_out": held,
                     "settings": {**settings.to_dict(), "model": "builtin"}, "handover_s": handover,
                     "fine_fit_s": fit_s, "fine_s": handover + fit_s})
        print("fine", {k: v for k, v in rows[-1].items() if k != "settings"}, flush=True)
    return rows


def fine_rows(run: dict, step_coef: dict) -> list[tuple[dict, float, bool]]:
    """(features, seconds, held out) of each measured fine stage of ``run`` (``fine_features`` needs the
    fitted step coefficients: a fine step is costed as a coarse step of its renders times a factor)."""
    native = {a: v["native_resolution"] for a, v in run["architectures"].items()}
    return [(fine_features(GenerationSettings.from_dict(r["settings"]), step_coef, native, run["cuda"]), r["fine_s"],
             r["held_out"]) for r in run.get("fine", [])]


# ---- fitting and reporting -------------------------------------------------------------------------
def fit_and_test(parts: dict[str, list[tuple[dict, float, bool]]]) -> tuple[dict, dict]:
    """Per part: coefficients fitted on the rows not held out, relative errors on the held-out rows."""
    coefficients, errors = {}, {}
    for part, rows in parts.items():
        train = [(f, y) for f, y, held in rows if not held]
        test = [(f, y) for f, y, held in rows if held]
        coef = fit([f for f, _ in train], [y for _, y in train])
        coefficients[part] = coef
        errs = relative_errors(coef, [f for f, _ in test], [y for _, y in test])
        errors[part] = {"median_pct": 100 * statistics.median(errs), "max_pct": 100 * max(errs), "n": len(errs),
                        "train_max_pct": 100 * max(relative_errors(coef, [f for f, _ in train], [y for _, y in train]))
                        } if errs else {}
    return coefficients, errors


def export_rows(run: dict) -> list[tuple[dict, float, bool]]:
    """(features, seconds, held out) of each export of ``run``. Features from the mesh's measured face
    count where the run recorded it. A run without the untimed first export (before session 25) timed
    the library imports in its first export: that row gets a feature of its own (``import``, fitted but
    never predicted), so the one-off import does not pass for a cost of every export."""
    rows = []
    for i, e in enumerate(run["exports"]):
        f = export_features(settings_for(BUILTIN_ARCH, "builtin", e["overrides"]), faces=e.get("faces"))
        if i == 0 and not e.get("after_warmup_export"):
            f["import"] = 1.0
        rows.append((f, e["export_s"], e["held_out"]))
    return rows


def stale_workspaces(run: dict) -> list[int]:
    """Per configuration of ``run`` (a CUDA run measured before ``reset_peak`` freed the cuBLAS
    workspaces, WORKSPACE_BYTES): how many workspaces earlier configurations had left allocated when its
    least-affected pass was measured. One per UNet capture, each on the next stream of PyTorch's pool
    (at most STREAM_POOL: then they are reused). A multi-pass grid's first pass (``peak_passes``) is
    measured in grid order; the shape-prior configuration's pair captures two UNets. 0 for a CPU run
    or one whose configurations cleared them (``workspaces_cleared``)."""
    out, used = [], 0
    # Runs before session 25's bench kept the UNet graphs across configurations (a capture per input
    # shape, not per configuration): no correction is known for them. Its bench saved each checkpoint
    # three times (``checkpoint_times_s``).
    per_config = any("checkpoint_times_s" in c for c in run["configs"])
    for c in run["configs"]:
        if not run["cuda"] or not per_config or c.get("workspaces_cleared"):
            out.append(0)
            continue
        passes = len(c.get("passes", [])) or 1
        same_grid = [d for d in run["configs"] if d["arch"] == c["arch"] and len(d.get("passes", [])) == len(c.get("passes", []))
                     and bool(d["settings"].get("shape_model")) == bool(c["settings"].get("shape_model"))]
        if c is same_grid[0]:
            grid_start = used
            used += passes * len(same_grid) + (1 if c["settings"].get("shape_model") else 0)
        out.append(min(grid_start + same_grid.index(c), STREAM_POOL - 1))
    return out


def peak_gib(run: dict, c: dict, stale: int) -> float:
    """The configuration's peak memory (GiB) as a fresh process meets it: the least-affected pass, less
    the cuBLAS workspaces earlier configurations left (``stale_workspaces``)."""
    peak = min(p["peak_bytes"] for p in c["passes"]) if c.get("passes") else c["peak_bytes"]
    return (peak - stale * WORKSPACE_BYTES) / GB


def remerged(run: dict) -> dict:
    """``run`` with each multi-pass configuration merged again by ``merge_passes`` (a run stored before
    it kept the smallest time kept the median)."""
    configs = [{**c, **{k: v for k, v in merge_passes(c["passes"]).items() if k in (*MERGED, "peak_bytes")}}
               if c.get("passes") else c for c in run["configs"]]
    return {**run, "configs": configs}


def config_parts(run: dict) -> dict[str, list[tuple[dict, float, bool]]]:
    """(features, measured value, held out) rows of the step, memory, preview and checkpoint parts."""
    cuda, native = run["cuda"], {a: v["native_resolution"] for a, v in run["architectures"].items()}
    parts: dict[str, list] = {"step": [], "memory": [], "preview": [], "checkpoint": []}
    for c, stale in zip(run["configs"], stale_workspaces(run)):
        s = GenerationSettings.from_dict(c["settings"])
        for phase, key in ((False, "step_s_albedo"), (True, "step_s_after_warmup")):
            parts["step"].append((step_features(s, c["resolution"], c["batch"], phase, native, cuda=cuda), c[key],
                                  c["held_out"]))
        parts["memory"].append((memory_features(s, c["resolution"], c["batch"], native, cuda), peak_gib(run, c, stale),
                                c["held_out"]))
        parts["preview"].append((preview_features(s), c["preview_s"], c["held_out"]))
        parts["checkpoint"].append((checkpoint_features(s, cuda=cuda), c["checkpoint_s"], c["held_out"]))
    return parts


def stale_note(run: dict) -> str:
    """A sentence for the report when this run's peaks were corrected for stale cuBLAS workspaces (a run
    measured before ``reset_peak`` freed them), else ""."""
    stale = stale_workspaces(run)
    if not any(stale):
        return ""
    return (f" Peak memory corrected for the cuBLAS workspaces earlier configurations had left allocated "
            f"({WORKSPACE_BYTES / 2**20:.0f} MiB each, up to {max(stale)} per configuration; `stale_workspaces`): "
            f"measured before the bench freed them, see results/speed/NOTES.md, session 25.")


def spread_note(spread: dict[str, dict]) -> str:
    """``pass_spread`` as a sentence of the report ("" without multi-pass configurations)."""
    if not spread:
        return ""
    return (" The measurement's own repeatability (one configuration's step time between the passes of this run): "
            + "; ".join(f"{arch} median {e['median_pct']:.0f}% / max {e['max_pct']:.0f}% (n={e['n']})"
                        for arch, e in spread.items()) + ".")


def pass_spread(run: dict) -> dict[str, dict]:
    """The measurement's own repeatability, by architecture: for each configuration measured in several passes,
    how far its step times (both phases) lie apart, ``(largest - smallest) / smallest``; the median and max in
    percent and how many (configuration, phase) pairs. An error on held-out rows below this spread cannot be
    asked of any fit: on an H200 the built-in prior's step is its host's kernel launches, and one configuration
    moved by 25-30% between two passes of one process (results/speed/NOTES.md, session 36)."""
    import statistics

    spreads: dict[str, list[float]] = {}
    for c in run["configs"]:
        passes = c.get("passes") or []
        if len(passes) < 2:
            continue
        for key in ("step_s_albedo", "step_s_after_warmup"):
            times = [p[key] for p in passes]
            spreads.setdefault(c["arch"], []).append(100 * (max(times) - min(times)) / min(times))
    return {arch: {"median_pct": statistics.median(v), "max_pct": max(v), "n": len(v)} for arch, v in spreads.items()}


def held_out_table(run: dict, coefficients: dict) -> str:
    cuda, native = run["cuda"], {a: v["native_resolution"] for a, v in run["architectures"].items()}
    lines = ["| held-out setting | quantity | measured | predicted | error |", "|---|---|---:|---:|---:|"]

    def line(name: str, quantity: str, measured: float, predicted: float, fmt: str = ".1f") -> None:
        lines.append(f"| {name} | {quantity} | {measured:{fmt}} | {predicted:{fmt}} | "
                     f"{100 * abs(predicted - measured) / measured:.0f}% |")

    for c, stale in zip(run["configs"], stale_workspaces(run)):
        if not c["held_out"]:
            continue
        s = GenerationSettings.from_dict(c["settings"])
        name = f"{c['arch']} " + (", ".join(f"{k}={v}" for k, v in c["overrides"].items()) or "defaults")
        for phase, key in ((False, "step_s_albedo"), (True, "step_s_after_warmup")):
            pred = predict(coefficients["step"], step_features(s, c["resolution"], c["batch"], phase, native, cuda=cuda))
            line(name, f"step, {'after warm-up' if phase else 'albedo warm-up'} (ms)", c[key] * 1000, pred * 1000)
        pred = predict(coefficients["memory"], memory_features(s, c["resolution"], c["batch"], native, cuda))
        line(name, "peak memory (GB)", peak_gib(run, c, stale), pred, ".2f")
        line(name, "preview (ms)", c["preview_s"] * 1000, predict(coefficients["preview"], preview_features(s)) * 1000)
        line(name, "checkpoint (ms)", c["checkpoint_s"] * 1000,
             predict(coefficients["checkpoint"], checkpoint_features(s, cuda=cuda)) * 1000)
    for e, (f, y, held) in zip(run["exports"], export_rows(run)):
        if held:
            o = e["overrides"]
            line(f"export {o['mesh_resolution']}³ / {o['texture_size']}² / {o['face_budget']} faces", "export (s)",
                 y, predict(coefficients["export"], f), ".2f")
    if "fine" in coefficients:
        for r, (f, y, held) in zip(run.get("fine", []), fine_rows(run, coefficients["step"])):
            if held:
                o = r["overrides"]
                line(f"fine stage, {o['fine_steps']} steps at {o['fine_resolution']} px", "fine stage (s)", y,
                     predict(coefficients["fine"], f), ".2f")
    return "\n".join(lines)


def resume_run(run: dict, stored_path: Path, grids: list[tuple]) -> list[tuple]:
    """``--resume``: ``run`` takes over what a run cut short stored at ``stored_path`` (a command's time limit,
    a crash after the built-in grid: session 35 lost one that way), and the grids left to measure are returned.
    A grid of one pass keeps each configuration measured and measures the rest; a grid of several passes is
    kept whole or measured again whole (its passes run in opposite orders to cancel the host's drift). What
    follows the built-in grid in ``measure`` (the exports, the fine stage: each on a field of its own) is kept when
    it is there; measure measures what is missing (the grid returned with no configuration left when they are all
    kept)."""
    if not stored_path.is_file():
        return grids
    stored = json.loads(stored_path.read_text())
    if not stored.get("partial", False) or stored.get("quick") != run["quick"]:
        raise SystemExit(f"--resume continues a run cut short, and {stored_path} is a finished one "
                         "(partial: false) or a --quick one: leave --resume out to measure again")

    def key(arch: str, overrides: dict) -> str:
        return json.dumps([arch, overrides], sort_keys=True)

    have = {key(c["arch"], c["overrides"]): c for c in stored["configs"]}
    kept, left = [], []
    for arch, model, grid, passes in grids:
        rows = [have.get(key(arch, overrides)) for overrides, _held in grid]
        done = [r is not None and len(r.get("passes", [r])) >= passes for r in rows]
        if passes > 1 and not all(done):
            done = [False] * len(grid)
        kept += [r for r, d in zip(rows, done) if d]
        todo = [g for g, d in zip(grid, done) if not d]
        follows = []
        if arch == BUILTIN_ARCH:        # each measured on a field of its own: kept whatever the grid's rows
            if stored.get("exports"):
                run["exports"], run["export_warmup"] = stored["exports"], stored.get("export_warmup", False)
            else:
                follows.append("exports")
            if stored.get("fine"):
                run["fine"] = stored["fine"]
            else:
                follows.append("fine stage")
        print(f"{arch}: {sum(done)} of {len(grid)} configurations kept from {stored_path}"
              f"{', the rest measured' if todo else ''}{', its ' + ' and '.join(follows) + ' measured' if follows else ''}",
              flush=True)
        if todo or follows:
            left.append((arch, model, todo, passes))
    run["configs"] = kept
    run["resumed_wall_s"] = stored["wall_s"]        # the stored run's wall time is part of this one's
    run["architectures"] = {a: v for a, v in stored.get("architectures", {}).items()
                            if any(c["arch"] == a for c in kept)}
    return left


class BuiltinGuidances:
    """The built-in prior's guidance, and the shape prior beside it while a configuration with ``shape_model``
    is measured (as a run with the preset loads the pair: ``ShapeColourGuidance``, the prior as its colour
    half); dropped again before one without, so that each configuration's peak memory has in it the models its
    run would load, no more."""

    def __init__(self, model: str, device):
        from backend.engine.guidance import load_guidance

        self.device = device
        self.plain = load_guidance(model, device)
        self._pair = None

    def for_settings(self, settings):
        if not settings.has_shape_model:
            self._pair = None
            return self.plain
        if self._pair is None:
            from backend.engine.guidance.models import resolve_shape_model
            from backend.engine.guidance.shape_colour import ShapeColourGuidance

            # built here, not by load_guidance_for: the pair's colour half must be this very prior, not a second copy
            shape = type(self.plain)(str(resolve_shape_model(settings, settings.guidance_type)), self.device,
                                     half_precision=settings.half_precision)
            self._pair = ShapeColourGuidance(self.plain, shape)
        return self._pair


def measure(args, out: Path) -> dict:
    """Measure this device's grid; the raw numbers (``run``) are written to ``out`` after every
    configuration and after the exports, so a run cut short leaves what it measured (``--refit``)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "process":
        _CLOCK["clock"] = time.process_time
    from backend.engine.guidance import load_guidance

    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        facts = next(iter(gpu_facts()), None)
        name = torch.cuda.get_device_name()
        total = torch.cuda.get_device_properties(0).total_memory
        facts_dict = facts.to_dict() if facts else {"kind": "cuda", "name": name, "memory_total_bytes": total,
                                                     "slug": re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")}
        # SD: 8 steps of warm-up. Not more: a field trained longer by the random-weight SD model is a bigger one
        # (session 31, 20 steps: the 128x1 peak 5.8 -> 7.2 GB, its lit step 41 -> 49 ms), not a settled timing.
        counts = {"warmup": 8, "steps": 30, "block": 10}
        # The built-in prior's steps are bound by the host's kernel launches: their blocks of 5 steps moved
        # by +-20% between the two passes of one configuration (a GC pass or a busy core in ~0.1 s), more than
        # any term of the model (session 31: 40 steps in blocks of 10, ~0.8 s a timing).
        prior_counts = {"warmup": 8, "steps": 40, "block": 10}
        big_counts = {"warmup": 4, "steps": 6, "block": 2}
        export_grid, export_repeats = EXPORT_GRID, 3
        fine_grid, fine_repeats = FINE_GRID, 3
    else:
        facts_dict = cpu_facts().to_dict()
        counts = prior_counts = big_counts = {"warmup": 2, "steps": 6, "block": 1}
        export_grid, export_repeats = CPU_EXPORT_GRID, 1
        fine_grid, fine_repeats = CPU_FINE_GRID, 1
    prior_grid, sd_grid = PRIOR_GRID, SD_GRID
    # On a GPU the prior's small steps are bound by the host's kernel launches, which drift over a run
    # (sessions 14 and 17: the same configurations 13-16 ms in one run, 15-25 ms in the other): two
    # passes, the second in reverse order. Cheap there (~2 s a configuration); a CPU pass takes minutes.
    prior_passes = 2 if cuda else 1
    if args.quick:
        counts = prior_counts = big_counts = QUICK_COUNTS
        prior_grid, sd_grid, export_grid, export_repeats, prior_passes = (
            QUICK_PRIOR_GRID, QUICK_SD_GRID, QUICK_EXPORT_GRID, 1, 1)
        fine_grid, fine_repeats = QUICK_FINE_GRID, 1
    facts_dict.pop("memory_free_bytes", None)
    facts_dict.pop("index", None)
    from backend.cost.device import BANDWIDTH_GBS

    facts_dict["bandwidth_gbs"] = BANDWIDTH_GBS.get(facts_dict["slug"])
    t_start = time.perf_counter()
    run = {"device": facts_dict, "cuda": cuda, "wall_s": 0.0, "configs": [], "exports": [], "architectures": {},
           "versions": {"torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "clock": args.clock},
           "quick": bool(args.quick), "partial": True}

    def save_raw() -> None:
        run["wall_s"] = time.perf_counter() - t_start + run.get("resumed_wall_s", 0.0)
        out.mkdir(parents=True, exist_ok=True)
        (out / results_name(cuda)).write_text(json.dumps(run, indent=1, default=str) + "\n")

    # (architecture, model, grid, passes). The shape prior's configurations are measured inside the prior's passes
    # (its guidance loaded beside the prior's while they run, ``BuiltinGuidances``): until session 35 they were a
    # grid of their own, one pass after the exports, and the one fitted row with it (48x1, 18.5 ms) and the held-out
    # 48x1 without it (26.2 ms; the same features: both are the built-in architecture) came out 30% apart from the
    # host-bound step's drift over a run (results/speed/NOTES.md, session 35).
    grids = [(BUILTIN_ARCH, "builtin", prior_grid + SHAPE_GRID, prior_passes)]
    if args.sd15_only:
        # SD's grid measured again into this device's stored run, the built-in rows and exports kept (after a
        # change on SD's side, or to time SD's rows apart: tools/device/cost_all.sh's "sd15" part).
        stored = out / results_name(cuda)
        if not cuda or not stored.is_file():
            raise SystemExit(f"--sd15-only adds SD-1.5's grid to this GPU's measured run, and {stored} is not "
                             "there: run `python -m backend bench cost --no-sd15` first")
        kept = json.loads(stored.read_text())
        run.update({k: v for k, v in kept.items() if k not in ("configs", "partial", "wall_s")})
        run["configs"] = [c for c in kept["configs"] if c["arch"] != SD_ARCH]
        run["builtin_wall_s"] = kept.get("builtin_wall_s", kept["wall_s"])
        grids = []
    if cuda and not args.no_sd15:
        # One pass: SD's steps are GPU-bound. Session 31 ran two, the second backwards: the held-out 192x1 row
        # measured 40.2 / 41.2 ms, the same either way (not an effect of its place in the grid).
        grids.append((SD_ARCH, None, sd_grid, 1))     # its model built below, when it is measured
    if args.resume:
        grids = resume_run(run, out / results_name(cuda), grids)
    if any(g[0] == SD_ARCH for g in grids):
        from backend.bench.sd15 import build_sd15

        t0 = clock()
        sd_model = str(build_sd15(Path(args.model_dir)))
        print(f"SD-1.5 architecture built in {clock() - t0:.0f} s", flush=True)
        grids = [(a, sd_model if a == SD_ARCH else m, *rest) for a, m, *rest in grids]
    for arch, model, grid, passes in grids:
        reset_peak(device)
        t0 = clock()
        guidances = BuiltinGuidances(model, device) if arch == BUILTIN_ARCH else None
        plain = guidances.plain if guidances else load_guidance(model, device)
        load_s = clock() - t0
        run["architectures"][arch] = {"native_resolution": int(plain.native_resolution), "load_s": load_s}
        base = settings_for(arch, model, {})
        first = guidances.for_settings(base) if guidances else plain
        first.configure(base)
        run["architectures"][arch]["setup_s"] = measure_setup(first, base, device)
        print(f"{arch}: loaded in {load_s:.1f} s, native resolution {plain.native_resolution}, first step's set-up "
              f"{run['architectures'][arch]['setup_s']:.1f} s", flush=True)
        measured: dict[int, list[dict]] = {}
        done = run["configs"]

        def merged() -> list[dict]:
            """This grid's configurations measured so far (in grid order, passes merged)."""
            return [{"arch": arch, "overrides": grid[i][0], "held_out": grid[i][1],
                     "settings": {**settings_for(arch, model, grid[i][0]).to_dict(),
                                  "model": "builtin" if arch == BUILTIN_ARCH else "sd15"},
                     **merge_passes(measured[i])} for i in sorted(measured)]

        for p in range(passes):
            order = range(len(grid)) if p % 2 == 0 else reversed(range(len(grid)))
            for i in order:
                overrides, held = grid[i]
                settings = settings_for(arch, model, overrides)
                guidance = guidances.for_settings(settings) if guidances else plain
                guidance.configure(settings)
                big = settings.resolution_stages[0].resolution * settings.resolution_stages[0].batch_size >= 256 and arch == SD_ARCH
                try:
                    m = measure_config(guidance, settings, device,
                                       big_counts if big else prior_counts if arch == BUILTIN_ARCH else counts)
                except torch.OutOfMemoryError:
                    print(f"{arch} {overrides}: out of memory, skipped", flush=True)
                    continue
                measured.setdefault(i, []).append(m)
                run["configs"] = done + merged()
                save_raw()
                print(f"{arch} {overrides}{' (held out)' if held else ''}{f' pass {p + 1}' if passes > 1 else ''}: "
                      f"{m['step_s_albedo'] * 1000:.1f} / {m['step_s_after_warmup'] * 1000:.1f} ms, "
                      f"peak {m['peak_bytes'] / GB:.2f} GB, checkpoint {m['checkpoint_s'] * 1000:.0f} ms  "
                      f"[{time.perf_counter() - t_start:.0f} s]", flush=True)
        run["configs"] = done + merged()
        save_raw()
        if guidances and not run.get("exports"):
            # three timings each on a GPU (an export there is 1-8 s); a CPU export takes up to a minute
            run["exports"] = measure_exports(guidances.for_settings(settings_for(arch, model, {})), device,
                                             export_grid, repeats=export_repeats)
            run["export_warmup"] = True
            save_raw()
        if guidances and "fine" not in run:
            # the fine stage after a coarse run of the preset (its shape prior beside the prior)
            run["fine"] = measure_fine(guidances.for_settings(settings_for(arch, model, FINE_BASE)), device, fine_grid,
                                       repeats=fine_repeats)
            save_raw()
        del guidance, plain, guidances
        reset_peak(device)
    run["partial"] = False
    save_raw()
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend bench cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None,
                        help="folder for cost.json / cost_cpu.json (default results/speed; with --quick a new "
                             "temporary folder)")
    parser.add_argument("--profile", default=None,
                        help="where to write the fitted profile (default: backend/cost/profiles/<device>.json; "
                             "with --quick, profile.json in --out)")
    parser.add_argument("--model-dir", default="/tmp/dreamprop-sd15", help="where the SD-1.5 layout is built (CUDA)")
    parser.add_argument("--cpu", action="store_true", help="measure the CPU even when CUDA is present")
    parser.add_argument("--no-sd15", action="store_true", help="the built-in prior only")
    parser.add_argument("--sd15-only", action="store_true",
                        help="measure SD-1.5's grid only (CUDA), in place of the SD rows of this GPU's stored run "
                             "(results/speed/cost.json in --out), and fit them together")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: three tiny configurations per architecture, three small exports, "
                             "two timed steps each; writes to a temporary folder unless --out/--profile say "
                             "otherwise (its fit means nothing)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (0: torch's default). On a CPU shared with other work, 1 "
                             "avoids threads spinning against each other")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="wall time (default), or this process's CPU time: with --threads 1 on a shared "
                             "CPU, close to an idle machine's single-thread time")
    parser.add_argument("--fine-only", action="store_true",
                        help="measure the fine stage's grid only, add it to this device's stored run (results/speed/"
                             "cost.json or cost_cpu.json in --out) and fit them together")
    parser.add_argument("--resume", action="store_true",
                        help="go on with a run cut short (its cost.json / cost_cpu.json in --out, partial: true): "
                             "the grids it measured whole are kept, the rest measured")
    parser.add_argument("--refit", default=None, metavar="COST_JSON",
                        help="no measuring: fit again the raw numbers of an earlier run (its cost.json / cost_cpu.json)")
    args = parser.parse_args(argv)
    if args.resume and (args.sd15_only or args.fine_only or args.refit):
        parser.error("--resume goes on with a whole run cut short: not with --sd15-only, --fine-only or --refit")
    if args.out is None:
        args.out = tempfile.mkdtemp(prefix="bench-cost-quick-") if args.quick else "results/speed"
    if args.quick and args.profile is None:
        args.profile = str(Path(args.out) / "profile.json")
    if args.refit:
        fit_and_write(json.loads(Path(args.refit).read_text()), args)
        return 0
    if args.fine_only:
        fit_and_write(measure_fine_only(args, Path(args.out)), args)
        return 0
    fit_and_write(measure(args, Path(args.out)), args)
    return 0


def measure_fine_only(args, out: Path) -> dict:
    """This device's stored run (``out``'s results file) with its fine stages measured again now."""
    from backend.engine.guidance.models import load_guidance_for

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "process":
        _CLOCK["clock"] = time.process_time
    cuda = torch.cuda.is_available() and not args.cpu
    stored = out / results_name(cuda)
    if not stored.is_file():
        raise SystemExit(f"--fine-only adds to this device's measured run, and {stored} is not there: run "
                         "`python -m backend bench cost` first")
    run = json.loads(stored.read_text())
    device = torch.device("cuda" if cuda else "cpu")
    guidance = load_guidance_for(settings_for(BUILTIN_ARCH, "builtin", FINE_BASE), device)
    grid, repeats = (QUICK_FINE_GRID, 1) if args.quick else ((FINE_GRID, 3) if cuda else (CPU_FINE_GRID, 1))
    t0 = time.perf_counter()
    run["fine"] = measure_fine(guidance, device, grid, repeats=repeats)
    run["fine_wall_s"] = time.perf_counter() - t0
    return run


def results_name(cuda: bool) -> str:
    return "cost.json" if cuda else "cost_cpu.json"


def fit_and_write(run: dict, args) -> None:
    """Fit the measured run, write the profile and the results file, print the held-out table."""
    facts_dict, cuda, configs, exports = run["device"], run["cuda"], run["configs"], run["exports"]
    architectures, versions, wall = run["architectures"], run["versions"], run["wall_s"]
    run = remerged(run)
    parts = {**config_parts(run), "export": export_rows(run)}
    coefficients, errors = fit_and_test({k: v for k, v in parts.items() if v})
    fine = fine_rows(run, coefficients["step"])
    if fine:        # after the step's fit: a fine step is costed from it
        fine_coef, fine_err = fit_and_test({"fine": fine})
        coefficients.update(fine_coef)
        errors.update(fine_err)
    table = held_out_table(run, coefficients)
    approximate = None if cuda else (f"approximate: fitted on one CPU, {facts_dict['name']} ({versions['clock']} "
                                     f"time, {versions['threads']} torch thread(s)); another CPU's speed differs: refit "
                                     "on your machine with `python -m backend bench cost`")
    profile = {"version": PROFILE_VERSION, "device": facts_dict, "fitted": datetime.now(timezone.utc).isoformat(),
               "versions": versions, "architectures": architectures, "coefficients": coefficients,
               "units": {"step": "s", "memory": "GiB", "preview": "s", "checkpoint": "s", "export": "s", "fine": "s"},
               "held_out_error": errors, "note": approximate}
    path = Path(args.profile) if args.profile else profile_path(facts_dict["slug"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile, indent=1) + "\n")
    held = [f"{c['arch']} {c['overrides'] or 'defaults'}" for c in configs if c["held_out"]]
    summary = "; ".join(f"{part} median {e['median_pct']:.0f}% / max {e['max_pct']:.0f}% (n={e['n']})"
                        for part, e in errors.items() if e)
    table_md = (f"Cost model on {facts_dict['name']}: fitted on {sum(not c['held_out'] for c in configs)} settings, "
                f"tested on {len(held)} held out ({', '.join(held)}) and "
                f"{sum(e['held_out'] for e in exports)} held-out exports. Held-out error: {summary}."
                + spread_note(pass_spread(run))
                + (f" ({approximate})" if approximate else "") + stale_note(run) + "\n\n" + table + "\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / results_name(cuda)).write_text(json.dumps(
        {**run, "profile": f"backend/cost/profiles/{facts_dict['slug']}.json", "held_out_error": errors, "table_md": table_md, "coefficients": coefficients},
        indent=1, default=str) + "\n")
    print(table_md)
    print(f"profile written to {path}; measured in {wall:.0f} s")


if __name__ == "__main__":
    import sys

    sys.exit(main())
