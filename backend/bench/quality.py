"""Quality benchmark of the built-in prior against its procedural ground truth.

``python -m backend bench quality [--prompts ...] [--seeds 0 1 2] [--device auto] [--out results/quality]``

For every prompt of the benchmark set (``grammar.benchmark_prompts()``: the 56 "a <colour> <shape>"
of the first priors and every prop of ``backend/prior/props.py`` in its default look) and seed,
run the real pipeline (``backend.engine.api.generate`` with ``model="builtin"`` and
``backend.prior.recommended_settings``), load the exported GLB back, and compare it with the
prompt's ground truth (``backend.prior.catalogue.ground_truth``: the canonical SDF and its
procedural albedo) with ``backend.bench.metrics``: volumetric IoU (best over yaw), facing (IoU at
the canonical yaw against the best; an asymmetric prop must face the front), Chamfer distance,
albedo error at surface samples, texture PSNR of albedo renders from four fixed views, volume /
truth, normal consistency (mesh normals against the SDF's gradient: a lumpy skin or a rounded edge
lowers it where the IoU barely moves), empty meshes.

``--stages coarse,fine`` (issue 14; the default since the prior's preset runs both stages) measures the fine stage against the coarse one on the same runs:
each job runs its coarse stage once, exports and scores that mesh (row ``stages: "coarse"``), then
continues the same run into the fine stage (the coarse checkpoint handed over) and scores the fine
mesh (row ``stages: "coarse,fine"``), recording each stage's optimisation time. The report adds the
fine meshes' own tables, the side-by-side comparison with ``stage_compare.FINE_TARGETS`` and a
before/after turntable grid per seed (``before_after_seed<S>.png``): see ``backend/bench/stage_compare.py``.

Writes ``quality.md`` (verdict per seed, per-category and per-prompt tables), ``quality.json``
(every number), ``quality.jsonl`` (one line per finished job, as they come), ``jobs/`` (each job's
turntable and texture views) and ``turntables_seed<S>.png`` (one cell per prompt: label, truth and
mesh albedo views, turntable) to ``--out``. Targets per seed: ``TARGETS``.

A run of record longer than one device command is split and merged: run the parts into their own
folders (one seed each: ``--seeds 0 --out parts/seed0``; or ``--prompts solids`` / ``props``), each
with ``--time-budget`` a little under the command's limit (``--resume`` with the same ``--out``
runs what a part left; a job counts as done only with every stage it asks for), bring each folder
back as one archive (a device command returns at most 8 files), then ``--report-only parts/seed0
parts/seed1 parts/seed2 --out results/quality`` writes one report from their ``quality.jsonl`` and
images without generating anything. ``--export-variants`` A/Bs export-only settings (the fine
stage's ``fine_thin_inset``, ``mesh_threshold``...) at the cost of an export, not a run: each job's final
mesh is exported again from the run's last checkpoint under each of them and scored as a variant of
its own (its coarse row is the job's own, copied). On a GPU, ``--workers`` generations run side by
side (the models are small).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import multiprocessing as mp
import os
import platform
import time
import traceback
from pathlib import Path

import numpy as np

from backend.bench import stage_compare
from backend.bench.formatting import finite_mean as _mean
from backend.bench.formatting import fmt as _fmt
from backend.bench.formatting import row_image as _image
from backend.bench.stage_compare import FINE_TARGETS
from shared.settings import STAGES

# Targets per seed (issue 11): mean IoU >= 0.70 over the props and >= 0.75 still over the first
# priors' 56 prompts; every prompt >= 0.40; the IoU at the canonical yaw within 0.05 of the best for
# >= 90% of the asymmetric ("facing") props; mean albedo error <= 0.10; no empty mesh. A target
# whose prompts are not in a run (a solids-only part) is not applicable, not failed.
TARGETS = {"mean_iou_props": 0.70, "mean_iou_solids": 0.75, "min_iou": 0.40, "facing_gap": 0.05,
           "facing_pass_rate": 0.90, "mean_albedo_error": 0.10, "empty": 0}
CPU_SUBSET = ["a red cube", "a blue sphere"]


# -- one job (runs in a worker process) ------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(device: str, threads: int) -> None:
    """Pool worker set-up: torch threads, and with device "cuda" on a machine of several GPUs,
    worker i takes GPU i mod n (generations are independent, so this scales with the GPUs)."""
    import torch

    torch.set_num_threads(max(1, threads))
    if device == "cuda" and torch.cuda.device_count() > 1:
        identity = mp.current_process()._identity
        device = f"cuda:{(identity[0] - 1 if identity else 0) % torch.cuda.device_count()}"
    if device.startswith("cuda") and torch.device(device).index is not None:
        torch.cuda.set_device(torch.device(device))     # bare "cuda" in any library means this GPU
    _WORKER.update(device=device)


def _device_kind(meta: dict) -> str:
    """"cuda" or "cpu": whose recommended settings a report's runs used (meta's device: "NVIDIA H200 (cuda)")."""
    return "cuda" if "(cuda" in str(meta.get("device", "")) else "cpu"


def settings_for(prompt: str, seed: int, overrides: dict, model: str = "builtin", device: str = "cpu"):
    """A job's settings: the built-in prior's recommendation for ``device`` (what a user of that device
    gets), the variant's overrides, the prompt and seed."""
    from backend.prior import recommended_settings
    from shared.settings import GenerationSettings

    values = {**recommended_settings(device), **overrides, "prompt": prompt, "seed": seed, "model": model,
              "checkpoint_interval": 0}
    return GenerationSettings.from_dict(values)


def run_job(job: dict) -> list[dict]:
    """Generate one prompt/seed and score it: one row per stage asked for (``job["stages"]``: "coarse",
    or "coarse,fine": the coarse mesh, then the fine stage continued from the same run). Never raises:
    failures are recorded in the rows. A crash (not an empty field) is retried once: on a fresh GPU
    machine parallel workers can trip over a shared build cache, and a generation is deterministic per
    seed, so the retry measures the same."""
    out = _run_job_once(job)
    if any(r.get("crashed") for r in out):
        retry = _run_job_once(job)
        first = next(r["error"] for r in out if r.get("crashed"))
        return [{**r, "retried_after": first} for r in retry]
    return out


def _build_cuda_extensions(device: str) -> None:
    """Compile nerfacc's CUDA kernels once in the parent, before workers start (14 workers building the
    same JIT extension at once lost one generation of the first full GPU run to a FileNotFoundError)."""
    import torch

    from backend.engine.occupancy import make_estimator

    dev = torch.device(device)
    estimator = make_estimator(1.0, 32, dev)
    rays_o = torch.tensor([[0.0, 0.0, -2.0]], device=dev)
    rays_d = torch.tensor([[0.0, 0.0, 1.0]], device=dev)
    estimator.sampling(rays_o, rays_d, render_step_size=0.01)
    torch.cuda.synchronize(dev)

@functools.lru_cache(maxsize=8)
def _truth_views(prompt: str):
    """The ground truth's albedo renders for the texture score (the same for every seed: cached)."""
    from backend.bench.metrics import render_truth_albedo, texture_cameras
    from backend.prior.catalogue import ground_truth

    truth = ground_truth(prompt)
    cams = texture_cameras()
    return cams, render_truth_albedo(truth.name, truth.look, cams)


def describe(prompt: str) -> dict:
    """What the report groups a prompt by: its category, look, group (the first priors' "solid"s or
    a "prop") and whether it has a front it must face."""
    from backend.prior.catalogue import PROP_NAMES, ground_truth

    truth = ground_truth(prompt)
    return {"category": truth.name, "look": truth.look, "group": "prop" if truth.name in PROP_NAMES else "solid",
            "facing": bool(truth.facing)}


def score(glb: bytes | None, prompt: str, seed: int, *, iou_resolution: int = 128, views: bool = True) -> dict:
    """Every metric of an exported GLB (``None``: nothing was exported) against the prompt's ground truth."""
    from backend.bench.metrics import LoadedMesh, evaluate_mesh, load_glb
    from backend.prior.catalogue import ground_truth

    truth = ground_truth(prompt)
    mesh = load_glb(glb) if glb is not None else LoadedMesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    cams, truth_views = _truth_views(prompt) if views else (None, None)
    metrics = evaluate_mesh(mesh, truth.sdf, truth.albedo, period=truth.yaw_period, res=iou_resolution, seed=seed,
                            truth_views=truth_views, cams=cams, keep_views=views)
    metrics["views"] = metrics.pop("views_png", None)       # PNG: the truth's views over the mesh's
    metrics.update(proportions_iou(mesh, truth, metrics, iou_resolution))
    return metrics


def proportions_iou(mesh, truth, metrics: dict, res: int) -> dict:
    """``iou_proportions``: the IoU against the prop drawn with the proportions of its range (``proportion_grid``)
    that fit the mesh best, at the yaw already found, and those ``proportions``; nothing for a category without
    parameters or an empty mesh. Why beside ``iou`` (the canonical proportions, the targets' metric): the prior
    learnt every proportion of a range (a mug's radius 0.25-0.30, its wall 0.035), so a thin-walled prop drawn
    right at the low end of its range scores like a wrong one (a CPU mug: 0.43 canonical, 0.65 at radius 0.26);
    the two together tell a wrong shape from a right shape at another size."""
    from backend.bench.metrics import best_family_iou, voxelize

    grid = truth.proportion_grid()
    if not grid or mesh.empty:
        return {}
    pred = voxelize(mesh.vertices, mesh.faces, res)
    coarse = voxelize(mesh.vertices, mesh.faces, res // 2)
    value, best = best_family_iou(pred, coarse, [truth.sdf_with(p) for p in grid], yaw_deg=metrics["yaw"])
    if value < metrics["iou"]:          # the canonical proportions are a member of the family too
        return {"iou_proportions": metrics["iou"], "proportions": truth.category.canonical()}
    return {"iou_proportions": value, "proportions": grid[best]}


def stage_labels(stages: str) -> list[str]:
    """The meshes a job with the ``stages`` setting exports, in order: the coarse one always (the
    "before"), then the fine one ("coarse,fine": the "after")."""
    if stages not in STAGES:
        raise ValueError(f"--stages must be one of {' | '.join(STAGES)}, got {stages!r}")
    return list(STAGES[: STAGES.index(stages) + 1])


def _hand_over(checkpoint: str, fine_settings) -> None:
    """Make the coarse run's final checkpoint the checkpoint of a "coarse,fine" run stopped at the
    stage boundary: the coarse trajectory does not depend on what follows it, so only the stored
    ``stages`` differs, and the trainer resumes a checkpoint only under the settings it was made with."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["settings"]["stages"] = fine_settings.stages
    torch.save(state, checkpoint)


def _generate_and_score(settings, job: dict, device: str, guidance, checkpoint_path: str | None) -> dict:
    """One generation (or its continuation from ``checkpoint_path``), exported and scored."""
    from backend.engine.api import generate

    resolution = job.get("iou_resolution", 128)
    t0 = time.perf_counter()
    try:
        result = generate(settings, device=device, guidance=guidance, checkpoint_path=checkpoint_path)
    except Exception as exc:                       # an empty field is a result, not a crash
        if type(exc).__name__ != "EmptyMeshError":
            raise
        return {**score(None, job["prompt"], job["seed"], iou_resolution=resolution), "error": str(exc)[:300],
                "wall_s": time.perf_counter() - t0}
    t_gen = time.perf_counter() - t0
    metrics = score(result.glb, job["prompt"], job["seed"], iou_resolution=resolution)
    timings = result.metadata.get("timings", {})
    return {**metrics, "generate_s": t_gen, "score_s": time.perf_counter() - t0 - t_gen,
            "wall_s": time.perf_counter() - t0, "s_per_step": timings.get("s_per_step"),
            "load_s": timings.get("load_s"), "optimise_s": timings.get("optimise_s"),
            "export_s": timings.get("export_s"),
            # The stage's own time: a run with a fine stage reports it (``fine_s``: the hand-over from
            # the coarse field and the fine optimisation; its ``coarse_s`` is only the checkpoint read,
            # the coarse stage having run in the first call); a coarse-only run's is its optimise_s.
            "stage_s": timings.get("fine_s", timings.get("optimise_s")),
            "resumed_from_step": result.metadata.get("resumed_from_step"),
            "final_losses": result.metadata.get("final_losses"), "turntable": result.turntable_png,
            "glb_bytes": len(result.glb)}


def _run_job_once(job: dict) -> list[dict]:
    import tempfile

    from backend.engine.api import load_guidance_for

    base = {k: job[k] for k in ("variant", "prompt", "seed")}
    base.update(describe(job["prompt"]))
    labels = stage_labels(job.get("stages", STAGES[0]))
    exports = job.get("exports") or {}
    names = [job["variant"], *(export_variant_name(job["variant"], e) for e in exports)]
    # ">=": a budget of 0 skips every job whatever the clock's resolution (with ">" a fast enough
    # machine reached the first job within the same tick and ran it).
    if job.get("deadline") is not None and time.time() >= job["deadline"]:
        return [{**base, "variant": v, "stages": label, "skipped": True} for v in names for label in labels]
    device = _WORKER.get("device") or job.get("device", "cpu")
    rows: list[dict] = []
    t0 = time.perf_counter()
    try:
        settings = [settings_for(job["prompt"], job["seed"], {**job.get("overrides", {}), "stages": label},
                                 job.get("model", "builtin"), device) for label in labels]
        t_load = time.perf_counter()
        guidance = load_guidance_for(settings[0], device)       # loaded once, for both stages
        base["guidance_load_s"] = time.perf_counter() - t_load
        with tempfile.TemporaryDirectory(prefix="quality-") as folder:
            checkpoint = os.path.join(folder, "run.pt") if len(labels) > 1 or exports else None
            for i, (label, stage_settings) in enumerate(zip(labels, settings)):
                if i and checkpoint and os.path.isfile(checkpoint):
                    _hand_over(checkpoint, stage_settings)
                row = {**base, "stages": label,
                       **_generate_and_score(stage_settings, job, device, guidance, checkpoint)}
                if i:
                    row["coarse_s"] = rows[0].get("stage_s")
                    if row.get("stage_s") and row.get("coarse_s"):
                        row["fine_ratio"] = row["stage_s"] / row["coarse_s"]
                rows.append(row)
            for name, export_overrides in exports.items():
                rows += _export_again(job, base, labels, rows[:len(labels)], export_overrides,
                                      export_variant_name(job["variant"], name), device, guidance, checkpoint)
    except Exception as exc:
        crash = {"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": traceback.format_exc()[-2000:],
                 "crashed": True, "empty": True, "iou": 0.0, "iou_canonical": 0.0, "facing_gap": float("nan"),
                 "albedo_error": 1.0, "chamfer": float("nan"), "normal_consistency": 0.0,
                 "wall_s": time.perf_counter() - t0}
        have = {(r["variant"], r["stages"]) for r in rows}
        rows += [{**base, "variant": v, "stages": label, **crash} for v in names for label in labels
                 if (v, label) not in have]
    return rows


def export_variant_name(variant: str, export: str) -> str:
    """The variant name of a job's re-export under the export variant ``export``."""
    return export if variant == "default" else f"{variant}+{export}"


def _export_again(job, base, labels, own_rows, export_overrides, name, device, guidance, checkpoint) -> list[dict]:
    """The job's final mesh exported again from its run's last checkpoint with ``export_overrides``
    (export-only settings: the checkpoint resumes at its last step, so nothing is optimised) and scored,
    as variant ``name``; the earlier stages' rows are the job's own, copied under that name."""
    settings = settings_for(job["prompt"], job["seed"], {**job.get("overrides", {}), **export_overrides,
                                                         "stages": labels[-1]}, job.get("model", "builtin"), device)
    copied = [{**r, "variant": name, "copied_from": job["variant"]} for r in own_rows[:-1]]
    again = _generate_and_score(settings, job, device, guidance, checkpoint)
    # The run's own times (the report's stage times and s/step), the re-export's as export_again_s.
    own = own_rows[-1]
    timings = {k: own[k] for k in ("stage_s", "coarse_s", "fine_ratio", "s_per_step", "optimise_s", "load_s")
               if k in own}
    row = {**base, "variant": name, "stages": labels[-1], "export_overrides": export_overrides, **again,
           **timings, "export_again_s": again.get("wall_s")}
    return [*copied, row]


# -- aggregation --------------------------------------------------------------------------------------------
def facing_ok(row: dict) -> bool:
    """The row's object faces the front it was asked for: its IoU at the canonical yaw within
    TARGETS["facing_gap"] of its best-yaw IoU, and it is there at all (IoU >= TARGETS["min_iou"]:
    a blob that looks the same from every side has no gap but faces nothing)."""
    gap = row.get("facing_gap")
    return (not row.get("empty") and gap is not None and not math.isnan(gap) and row["iou"] >= TARGETS["min_iou"]
            and gap <= TARGETS["facing_gap"] + 1e-9)


def summarise(rows: list[dict]) -> dict:
    """One seed's numbers and verdict. Rows without a ``group`` count as the first priors' solids."""
    done = [r for r in rows if not r.get("skipped")]
    if not done:
        return {"n": 0, "passed": False}
    solids = [r for r in done if r.get("group", "solid") == "solid"]
    props = [r for r in done if r.get("group") == "prop"]
    facing = [r for r in props if r.get("facing")]
    ious = [r["iou"] for r in done]
    albedo = [r["albedo_error"] for r in done]
    s = {"n": len(done), "skipped": len(rows) - len(done), "n_solids": len(solids), "n_props": len(props),
         "mean_iou": float(np.mean(ious)), "min_iou": float(np.min(ious)),
         "mean_iou_solids": _mean(r["iou"] for r in solids),
         "min_iou_solids": min(r["iou"] for r in solids) if solids else float("nan"),
         "mean_iou_props": _mean(r["iou"] for r in props),
         "min_iou_props": min(r["iou"] for r in props) if props else float("nan"),
         "n_facing": len(facing), "facing_passed": sum(facing_ok(r) for r in facing),
         "mean_facing_gap": _mean(r.get("facing_gap") for r in facing),
         "mean_albedo_error": float(np.mean(albedo)), "max_albedo_error": float(np.max(albedo)),
         "mean_texture_psnr": _mean(r.get("texture_psnr") for r in done),
         "mean_chamfer": _mean(r.get("chamfer") for r in done),
         "mean_normal_consistency": _mean(r.get("normal_consistency") for r in done),
         "mean_volume_ratio": _mean(r.get("volume_ratio") for r in done if not r.get("empty")),
         "empty": sum(bool(r.get("empty")) for r in done), "errors": sum(bool(r.get("error")) for r in done)}
    s["facing_pass_rate"] = s["facing_passed"] / len(facing) if facing else float("nan")
    steps = [r["s_per_step"] for r in done if r.get("s_per_step")]
    s["mean_s_per_step"] = float(np.mean(steps)) if steps else None
    s["mean_wall_s"] = _mean(r.get("wall_s") for r in done)
    # Each target: (measured, passed); None where the run has none of its prompts.
    t = TARGETS
    checks = {"mean_iou_props": (s["mean_iou_props"], s["mean_iou_props"] >= t["mean_iou_props"]) if props else None,
              "mean_iou_solids": ((s["mean_iou_solids"], s["mean_iou_solids"] >= t["mean_iou_solids"]) if solids
                                  else None),
              "min_iou": (s["min_iou"], s["min_iou"] >= t["min_iou"]),
              "facing_pass_rate": ((s["facing_pass_rate"], s["facing_pass_rate"] >= t["facing_pass_rate"]) if facing
                                   else None),
              "mean_albedo_error": (s["mean_albedo_error"], s["mean_albedo_error"] <= t["mean_albedo_error"]),
              "empty": (s["empty"], s["empty"] <= t["empty"])}
    s["checks"] = {k: (None if v is None else {"value": v[0], "passed": bool(v[1])}) for k, v in checks.items()}
    s["failed"] = [k for k, v in s["checks"].items() if v is not None and not v["passed"]]
    if s["skipped"]:
        s["failed"].append("skipped")
    s["passed"] = not s["failed"]
    return s


def by_category(rows: list[dict]) -> list[dict]:
    """Per category (and look) over every seed: IoU, facing, albedo error, texture PSNR, volume."""
    out = {}
    for r in rows:
        if r.get("skipped"):
            continue
        key = (r.get("category") or r["prompt"], r.get("look"))
        out.setdefault(key, []).append(r)
    table = []
    for (category, look), rs in out.items():
        facing = bool(rs[0].get("facing"))
        table.append({"category": category, "look": look, "group": rs[0].get("group", "solid"), "facing": facing,
                      "runs": len(rs), "mean_iou": _mean(r["iou"] for r in rs), "min_iou": min(r["iou"] for r in rs),
                      "mean_iou_canonical": _mean(r.get("iou_canonical") for r in rs),
                      "mean_facing_gap": _mean(r.get("facing_gap") for r in rs),
                      "facing_passed": sum(facing_ok(r) for r in rs),
                      "mean_albedo_error": _mean(r["albedo_error"] for r in rs),
                      "mean_texture_psnr": _mean(r.get("texture_psnr") for r in rs),
                      "mean_volume_ratio": _mean(r.get("volume_ratio") for r in rs if not r.get("empty")),
                      "mean_chamfer": _mean(r.get("chamfer") for r in rs),
                      "mean_normal_consistency": _mean(r.get("normal_consistency") for r in rs),
                      "mean_iou_proportions": _mean(r.get("iou_proportions") for r in rs),
                      "empty": sum(bool(r.get("empty")) for r in rs)})
    return table


def _targets_line() -> str:
    t = TARGETS
    return (f"mean IoU >= {t['mean_iou_props']} over the props and >= {t['mean_iou_solids']} over the 56 solids, "
            f"every prompt >= {t['min_iou']}, canonical-yaw IoU within {t['facing_gap']} of the best for "
            f">= {t['facing_pass_rate']:.0%} of the facing props, mean albedo error <= {t['mean_albedo_error']}, "
            f"no empty mesh")


def write_markdown(path: Path, rows: list[dict], summary: dict, meta: dict) -> None:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# Quality benchmark: built-in prior vs procedural ground truth", "",
             f"- command: `{meta['command']}`"]
    for part in meta.get("parts", []):
        lines.append(f"  - part `{part.get('command', '?')}`: {part.get('device', '?')}, {part.get('workers', '?')} "
                     f"workers, {_fmt(part.get('wall_s'), 0)} s, {part.get('date', '')}")
    lines += [f"- device: {meta['device']}; workers: {meta['workers']}; wall time {_fmt(meta['wall_s'], 0)} s",
              f"- settings: `backend.prior.recommended_settings({_device_kind(meta)!r})` + overrides "
              f"{json.dumps(meta['overrides'])}",
              f"- targets per seed: {_targets_line()}", "",
              f"Metrics ({', '.join(f'`{k}`' for k in ('iou', 'iou_canonical', 'albedo_error', 'texture_psnr'))} in "
              "`quality.json`): IoU = volumetric IoU on 128^3 voxels over [-1,1]^3 at the best rotation about the "
              "up axis (searched on 64^3 within the category's yaw symmetry); facing gap = best-yaw IoU - IoU at "
              f"yaw 0 (the front asked for), a facing prop passes at <= {TARGETS['facing_gap']} with IoU >= "
              f"{TARGETS['min_iou']}; Chamfer = symmetric mean distance from 20k surface samples of each surface to the other "
              "surface (scene units, objects are ~1 unit across; to the surface, not to its samples, since session 60: "
              "`chamfer_points`, the sample-to-sample measure before, scored the truth 0.004-0.007 against itself); albedo = mean |RGB - truth| (channels in [0,1]) at surface "
              "samples of the exported texture, the truth taken at the nearest true surface point; texture PSNR "
              "(dB) = pure-albedo renders of the mesh vs the ground truth's from 4 views (elevation 15, 96 px), over "
              "the pixels where either is foreground, both on mid grey; volume = mesh / truth voxel volume; normal "
              "consistency = mean |cos| between the mesh's face normals and the true normals (the SDF's gradient at "
              "the nearest true-surface point), 10k samples mesh -> truth and 10k truth -> mesh, averaged; IoU, "
              "best proportions (`iou_proportions`, props only, not a target) = the IoU at the found yaw against the "
              "prop drawn with the proportions of its range (each parameter's ends and middle) that fit best: the "
              "prior learnt the whole range, and a thin-walled prop made at its low end misses the canonical one.", ""]
    for variant in variants:
        if len(variants) > 1 or variant != "default":
            lines += [f"## Variant `{variant}`: {json.dumps(meta['variants'].get(variant, {}))}", ""]
        mine = [r for r in rows if r["variant"] == variant]
        coarse = [r for r in mine if stage_compare.stage_of(r) == STAGES[0]]
        fine = [r for r in mine if stage_compare.stage_of(r) != STAGES[0]]
        if fine:
            lines += ["### Coarse only (the coarse mesh of each run)", ""]
        lines += _stage_lines(coarse, summary[variant], seeds)
        if fine:
            lines += ["### Coarse + fine (the same runs continued into the fine stage)", ""]
            lines += _stage_lines(fine, summary[variant]["fine"], seeds)
            lines += ["### Coarse only vs coarse + fine, side by side", ""]
            lines += stage_compare.markdown(summary[variant]["coarse_vs_fine"],
                                            summary[variant].get("before_after_grids", {}))
    path.write_text("\n".join(lines))


def _stage_lines(rows: list[dict], entry: dict, seeds: list[int]) -> list[str]:
    """One variant's tables for the meshes of one stage: per seed (with the verdict), per category
    and per prompt."""
    lines = ["| seed | prompts | mean IoU | mean IoU solids | mean IoU props | min IoU | facing pass | "
             "mean albedo err | max albedo err | texture PSNR | mean Chamfer | normal consistency | empty | s/step | "
             "verdict |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for seed in seeds:
        s = entry["per_seed"].get(str(seed))
        if not s or not s.get("n"):
            continue
        facing = f"{s['facing_passed']}/{s['n_facing']}" if s["n_facing"] else "-"
        verdict = "PASS" if s["passed"] else "FAIL (" + ", ".join(s["failed"]) + ")"
        lines.append(f"| {seed} | {s['n']}{' (+%d skipped)' % s['skipped'] if s['skipped'] else ''} | "
                     f"{_fmt(s['mean_iou'])} | {_fmt(s['mean_iou_solids'])} | {_fmt(s['mean_iou_props'])} | "
                     f"{_fmt(s['min_iou'])} | {facing} | {_fmt(s['mean_albedo_error'])} | "
                     f"{_fmt(s['max_albedo_error'])} | {_fmt(s['mean_texture_psnr'], 1)} | "
                     f"{_fmt(s['mean_chamfer'], 4)} | {_fmt(s.get('mean_normal_consistency'))} | {s['empty']} | "
                     f"{_fmt(s['mean_s_per_step'], 4)} | {verdict} |")
    lines += ["", f"Same verdict for every seed: **{entry['verdict']}**", "",
              "#### By category (all seeds)", "",
              "| category | look | group | runs | mean IoU | min IoU | IoU at yaw 0 | facing gap | facing pass | "
              "albedo err | texture PSNR | volume / truth | Chamfer | normal consistency | IoU, best proportions |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    solids_by_shape = {}
    for c in by_category(rows):
        if c["group"] == "solid":       # the 8 colours of a solid in one line
            solids_by_shape.setdefault(c["category"], []).append(c)
            continue
        lines.append(_category_line(c))
    for shape, cs in solids_by_shape.items():
        merged = by_category([{**r, "look": "8 colours" if len(cs) > 1 else r.get("look")} for r in rows
                              if r.get("category", r["prompt"]) == shape])
        lines.append(_category_line(merged[0]))
    lines += ["", "#### By prompt", ""]
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    head = ("| prompt | " + " | ".join(f"s{s}: IoU / gap / albedo / PSNR / normals" for s in seeds)
            + " | mean IoU | mean albedo |")
    lines += [head, "|---|" + "---:|" * (len(seeds) + 2)]
    for prompt in prompts:
        cells, ious, albs = [], [], []
        for seed in seeds:
            r = next((x for x in rows if x["prompt"] == prompt and x["seed"] == seed), None)
            if r is None or r.get("skipped"):
                cells.append("-")
                continue
            mark = " (empty)" if r.get("empty") else ""
            cells.append(f"{_fmt(r['iou'])}{mark} / {_fmt(r.get('facing_gap'), 2)} / {_fmt(r['albedo_error'])} / "
                         f"{_fmt(r.get('texture_psnr'), 1)} / {_fmt(r.get('normal_consistency'))}")
            ious.append(r["iou"]), albs.append(r["albedo_error"])
        lines.append(f"| {prompt} | " + " | ".join(cells) + f" | {_fmt(_mean(ious))} | {_fmt(_mean(albs))} |")
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {r['prompt']} seed {r['seed']}: {r['error']}" for r in errors]
    lines.append("")
    return lines


def _category_line(c: dict) -> str:
    facing = f"{c['facing_passed']}/{c['runs']}" if c["facing"] else "(no front)"
    return (f"| {c['category']} | {c['look'] or '-'} | {c['group']} | {c['runs']} | {_fmt(c['mean_iou'])} | "
            f"{_fmt(c['min_iou'])} | {_fmt(c['mean_iou_canonical'])} | {_fmt(c['mean_facing_gap'])} | {facing} | "
            f"{_fmt(c['mean_albedo_error'])} | {_fmt(c['mean_texture_psnr'], 1)} | {_fmt(c['mean_volume_ratio'], 2)} | "
            f"{_fmt(c['mean_chamfer'], 4)} | {_fmt(c.get('mean_normal_consistency'))} | "
            f"{_fmt(c.get('mean_iou_proportions'))} |")


def turntable_grid(rows: list[dict], path: Path, *, view_size: int = 96, columns: int = 2,
                   views_columns: int = 4) -> None:
    """One cell per result: label (prompt, IoU, facing gap, albedo error, texture PSNR), the texture
    score's views (truth on top, mesh below; ``views_columns`` of them side by side) and the exported
    mesh's turntable, downscaled. Images come from the rows' ``turntable`` bytes or their
    ``turntable_file`` / ``views_file`` paths."""
    from PIL import Image, ImageDraw

    rows = [r for r in rows if not r.get("skipped")]
    if not rows:
        return
    label_w, pad = 200, 4
    views_w = view_size * views_columns // 2     # views_columns x 2 rows, scaled to the cell's height
    strip_w = view_size * 8
    cell_w, cell_h = label_w + views_w + strip_w + 2 * pad, view_size + pad
    n_rows = math.ceil(len(rows) / columns)
    canvas = Image.new("RGB", (columns * cell_w, n_rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, r in enumerate(rows):
        col, row = divmod(i, n_rows)
        x, y = col * cell_w, row * cell_h
        ok = r["iou"] >= TARGETS["min_iou"] and not r.get("empty")
        draw.text((x + 4, y + 6), r["prompt"], fill=(0, 0, 0))
        stage = "" if "stages" not in r else ", " + r["stages"].replace(",", "+")
        draw.text((x + 4, y + 22), f"seed {r['seed']}{stage}" + ("  (facing)" if r.get("facing") else ""),
                  fill=(80, 80, 80))
        draw.text((x + 4, y + 38), f"IoU {_fmt(r['iou'], 2)}  gap {_fmt(r.get('facing_gap'), 2)}",
                  fill=(0, 110, 0) if ok else (200, 0, 0))
        draw.text((x + 4, y + 54), f"albedo {_fmt(r['albedo_error'], 2)}  PSNR {_fmt(r.get('texture_psnr'), 1)}",
                  fill=(0, 110, 0) if r["albedo_error"] <= TARGETS["mean_albedo_error"] else (200, 0, 0))
        if r.get("error"):
            draw.text((x + 4, y + 70), "empty" if r.get("empty") else "error", fill=(200, 0, 0))
        for key, left, width in (("views", label_w, views_w), ("turntable", label_w + views_w + pad, strip_w)):
            image = _image(r, key)
            if image is not None:
                canvas.paste(image.resize((width, view_size), Image.LANCZOS), (x + left, y))
    canvas.quantize(256).save(path, optimize=True)      # 256 colours: a committed run stays small


# -- prompts ------------------------------------------------------------------------------------------------
PROMPT_SETS = {
    "benchmark": "the benchmark set (default on CUDA): the 56 solids and every prop in its default look",
    "all": "same as benchmark",
    "solids": "the first priors' 56 prompts: every colour of every simple solid",
    "props": "every prop of backend/prior/props.py in its default look",
    "facing": "the props that have a front (asymmetric)",
    "hollow": "the props opened from the top (the hollow setting's auto: mug, bowl, bucket)",
}


def expand_prompts(items: list[str] | None) -> list[str]:
    """Prompts from the command line: a set name (``PROMPT_SETS``), full prompts ("a red cube"),
    "<look> <object>" ("orange torus", "wooden barrel") or an object alone (all its looks)."""
    from backend.prior.catalogue import BY_NAME, PROP_NAMES
    from backend.prior.grammar import article, benchmark_prompts, caption, parse_prompt

    bench = benchmark_prompts()
    sets = {"benchmark": bench, "all": bench,
            "solids": [p for p in bench if parse_prompt(p)[0] not in PROP_NAMES],
            "props": [p for p in bench if parse_prompt(p)[0] in PROP_NAMES],
            "facing": [p for p in bench if BY_NAME[parse_prompt(p)[0]].facing],
            # the props the engine opens from the top (``hollow`` auto: backend/engine/hollow.py)
            "hollow": [p for p in bench if BY_NAME[parse_prompt(p)[0]].hollow]}
    if not items:
        return bench
    out = []
    for item in items:
        text = " ".join(item.strip().lower().split())
        if text in sets:
            out += sets[text]
        elif text in BY_NAME:
            out += [caption(text, look) for look in BY_NAME[text].looks]
        else:
            if text.split()[:1] not in (["a"], ["an"]):
                text = f"{article(text)} {text}"
            name, look = parse_prompt(text)          # ValueError naming the grammar for anything else
            out.append(caption(name, look))
    return list(dict.fromkeys(out))


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def parse_args(argv):
    sets = "; ".join(f"'{k}': {v}" for k, v in PROMPT_SETS.items())
    p = argparse.ArgumentParser(prog="python -m backend bench quality", description=__doc__.splitlines()[0])
    p.add_argument("--prompts", nargs="*", default=None,
                   help=f"prompts ('a red cube'), 'look object' ('wooden barrel'), an object (all its looks) or a "
                        f"set ({sets}); default: benchmark on CUDA, 'a red cube' and 'a blue sphere' on CPU")
    p.add_argument("--seeds", nargs="*", type=int, default=None, help="default: 0 1 2 on CUDA, 0 on CPU")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", type=Path, default=Path("results/quality"))
    p.add_argument("--model", default="builtin")
    p.add_argument("--workers", type=int, default=None,
                   help="generations side by side (default: 1 on CPU, min(12, cores - 2) on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override a generation setting (repeatable)")
    p.add_argument("--variants", type=Path, default=None,
                   help="JSON file {name: {setting: value}}: run every prompt/seed under each variant")
    p.add_argument("--export-variants", type=Path, default=None,
                   help="JSON file {name: {setting: value}} of export-only settings (those a checkpoint resumes "
                        "under, e.g. fine_thin_inset, mesh_threshold): each job's final mesh is also exported "
                        "under each and scored as variant NAME, for the cost of an export")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds; jobs not started by then are skipped (--resume runs them later); 0: start "
                        "none (with --resume: only the report of the rows kept)")
    p.add_argument("--straggler-s", type=float, default=420.0,
                   help="with --time-budget and several workers: jobs still running this many seconds after the "
                        "budget ends are abandoned (no row: --resume runs them again) so that the report is "
                        "written; a GPU job once hung a whole device command (session 22)")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished jobs of --out's quality.jsonl and run only the others")
    p.add_argument("--report-only", nargs="+", type=Path, default=None, metavar="PART",
                   help="generate nothing: merge the quality.jsonl of these folders (or files) into one report "
                        "in --out (a job found in several parts: the last part's row)")
    p.add_argument("--stages", default=None, choices=STAGES,
                   help="default: the prior's preset (what a user gets; coarse,fine since session 14). "
                        "coarse: the coarse stage's mesh; coarse,fine: each run's coarse mesh is exported and "
                        "scored, then the same run continues into the fine stage and its mesh is scored too (the "
                        "side by side costs one coarse stage, not two)")
    p.add_argument("--iou-resolution", type=int, default=128,
                   help="voxels per side for the IoUs (the yaw search runs on 64^3)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if args.stages is None:
        from backend.prior import recommended_settings

        args.stages = recommended_settings().get("stages", STAGES[0])
    if args.time_budget is not None and args.time_budget < 0:
        p.error(f"--time-budget: must be >= 0 seconds, got {args.time_budget}")
    return args


# -- files ----------------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def save_images(row: dict, out: Path) -> dict:
    """Write the row's turntable and texture views under ``out/jobs/`` (256-colour PNGs at the grid's
    size, to keep a committed run small) and put their paths, relative to ``out``, in their place."""
    from PIL import Image

    row = dict(row)
    variant = f"{_slug(row['variant'])}_" if row["variant"] != "default" else ""
    folder = Path("jobs") / f"{variant}seed{row['seed']}"
    stage = "" if row.get("stages", STAGES[0]) == STAGES[0] else ".fine"
    for key, height in (("turntable", 96), ("views", 192)):
        data = row.pop(key, None)
        if not data:
            continue
        image = Image.open(io.BytesIO(data)).convert("RGB")
        image = image.resize((max(1, round(image.width * height / image.height)), height), Image.LANCZOS)
        rel = folder / f"{_slug(row['prompt'])}{stage}.{key}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        image.quantize(256).save(out / rel, optimize=True)
        row[f"{key}_file"] = str(rel)
    return row


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a part (its folder or its quality.jsonl), image paths made absolute."""
    path = path / "quality.jsonl" if path.is_dir() else path
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            for key in ("turntable_file", "views_file"):
                if row.get(key):
                    row[key] = str((path.parent / row[key]).resolve())
            rows.append(row)
    return rows


def _job_key(row: dict) -> tuple:
    """A row's identity: its job and the stages its mesh went through (rows written before the fine
    stage existed are coarse)."""
    return row["variant"], row["prompt"], row["seed"], row.get("stages", STAGES[0])


def write_report(rows: list[dict], out: Path, meta: dict, variants: dict) -> dict:
    """quality.json, quality.md and the turntable grids of finished rows (image paths absolute or
    relative to ``out``); returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [{k: (str(Path(os.path.relpath(Path(v).resolve(), out.resolve())))
                 if k in ("turntable_file", "views_file") and v and Path(v).is_absolute() else v)
             for k, v in r.items()} for r in rows]
    seeds = sorted({r["seed"] for r in rows})
    absolute = [{k: (str(out / v) if k in ("turntable_file", "views_file") and v and not Path(v).is_absolute()
                     else v) for k, v in r.items()} for r in rows]
    summary = {}
    for v in variants:
        mine = [r for r in rows if r["variant"] == v]
        coarse = [r for r in mine if stage_compare.stage_of(r) == STAGES[0]]
        fine = [r for r in mine if stage_compare.stage_of(r) != STAGES[0]]
        summary[v] = _stage_summary(coarse, seeds)        # the coarse meshes: the summary as before stages
        if fine:
            summary[v]["fine"] = _stage_summary(fine, seeds)
            summary[v]["coarse_vs_fine"] = stage_compare.summarise(mine)
            grids = {}
            for s in seeds:
                name = f"before_after_seed{s}.png" if len(variants) == 1 else f"before_after_{v}_seed{s}.png"
                ps = stage_compare.pairs([r for r in absolute if r["variant"] == v and r["seed"] == s])
                if stage_compare.before_after_grid(ps, out / name):
                    grids[str(s)] = name
            summary[v]["before_after_grids"] = grids
    (out / "quality.json").write_text(json.dumps(
        {"meta": meta, "summary": summary,
         "results": [{k: v for k, v in r.items() if k not in ("turntable", "views")} for r in rows]},
        indent=1, default=str))
    write_markdown(out / "quality.md", rows, summary, meta)
    for v in variants:
        for s in seeds:
            # The mesh each job ends with (coarse + fine where the run had a fine stage): what a user gets.
            sel = stage_compare.final_rows([r for r in absolute if r["variant"] == v and r["seed"] == s])
            name = f"turntables_seed{s}.png" if len(variants) == 1 else f"turntables_{v}_seed{s}.png"
            turntable_grid(sel, out / name)
    return summary


def _stage_summary(rows: list[dict], seeds: list[int]) -> dict:
    """Per-seed summaries, per-category table and verdict of one variant's meshes of one stage."""
    per_seed = {str(s): summarise([r for r in rows if r["seed"] == s]) for s in seeds}
    verdicts = {x["passed"] for x in per_seed.values() if x.get("n")}
    return {"per_seed": per_seed, "by_category": by_category(rows),
            "verdict": "PASS" if verdicts == {True} else "FAIL" if verdicts == {False} else "MIXED"}


def _sort_rows(rows: list[dict]) -> list[dict]:
    """Benchmark order (solids colour-major, then the props), then anything else; seed-major."""
    order = {p: i for i, p in enumerate(_job_order(expand_prompts(None)))}
    return sorted(rows, key=lambda r: (r["variant"], r["seed"], order.get(r["prompt"], len(order)), r["prompt"],
                                       STAGES.index(stage_compare.stage_of(r))))


def _job_order(prompts: list[str]) -> list[str]:
    """Solids colour-major (a red cube, a red sphere, ...: a time budget that cuts the tail still
    leaves every shape covered), then the props in catalogue order."""
    from backend.prior.catalogue import CATEGORIES, PROP_NAMES
    from backend.prior.grammar import parse_prompt

    names = [c.name for c in CATEGORIES]

    def key(prompt):
        name, look = parse_prompt(prompt)
        looks = list(CATEGORIES[names.index(name)].looks)
        if name in PROP_NAMES:
            return (1, names.index(name), looks.index(look) if look in looks else -1)
        return (0, looks.index(look) if look in looks else -1, names.index(name))

    return sorted(prompts, key=key)


def _copy_images(row: dict, out: Path) -> dict:
    """A part's images copied into ``out/jobs/`` (when the part lives elsewhere), so that the merged
    report's folder holds everything it points to."""
    import shutil

    row = dict(row)
    for key in ("turntable_file", "views_file"):
        source = Path(row[key]) if row.get(key) else None
        if source is None or not source.is_file() or out.resolve() in source.resolve().parents:
            continue
        dest = out / "jobs" / source.parent.name / source.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        row[key] = str(dest.resolve())
    return row


def report_only(args, argv) -> int:
    rows, parts = {}, []
    for part in args.report_only:
        for row in read_jsonl(part):
            if not row.get("skipped") or _job_key(row) not in rows:
                rows[_job_key(row)] = row
        meta_file = (part if part.is_dir() else part.parent) / "quality.json"
        if meta_file.is_file():
            parts.append(json.loads(meta_file.read_text()).get("meta", {}))
    rows = _sort_rows([_copy_images(r, args.out) for r in rows.values()])
    if not rows:
        print("no rows in " + ", ".join(map(str, args.report_only)))
        return 2
    variants = {v: next((p["variants"][v] for p in parts if v in p.get("variants", {})), {})
                for v in dict.fromkeys(r["variant"] for r in rows)}
    meta = {"command": "python -m backend bench quality " + " ".join(argv),
            "parts": [{k: p.get(k) for k in ("command", "device", "workers", "wall_s", "date")} for p in parts],
            "device": "; ".join(dict.fromkeys(p.get("device", "?") for p in parts)) or "?",
            "workers": "/".join(str(p.get("workers", "?")) for p in parts) or "?",
            "wall_s": sum(p.get("wall_s", 0.0) for p in parts),
            "overrides": parts[0].get("overrides", {}) if parts else {}, "variants": variants, "targets": TARGETS,
            "fine_targets": FINE_TARGETS, "stages": "; ".join(dict.fromkeys(p.get("stages", STAGES[0]) for p in parts)),
            "settings": parts[0].get("settings") if parts else None, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if len({json.dumps(p.get("overrides", {}), sort_keys=True) for p in parts}) > 1:
        meta["overrides_differ"] = [p.get("overrides") for p in parts]
    summary = write_report(rows, args.out, meta, variants)
    print((args.out / "quality.md").read_text().split("\n#### By category")[0], flush=True)
    print(f"merged {len(rows)} rows from {len(args.report_only)} parts into {args.out}", flush=True)
    failed = any(summary[v]["verdict"] != "PASS" or summary[v].get("coarse_vs_fine", {}).get("verdict", "PASS")
                 != "PASS" for v in variants)
    return 1 if (args.strict and failed) else 0


def load_export_variants(path: Path | None, variants: dict) -> dict:
    """``--export-variants``' {name: {setting: value}}, checked: export-only settings (a checkpoint resumes
    under any value of them, so the re-export reuses the run), names unlike the run variants'."""
    if path is None:
        return {}
    from backend.engine.trainer import NON_TRAJECTORY

    exports = json.loads(Path(path).read_text())
    if not isinstance(exports, dict) or not all(isinstance(o, dict) for o in exports.values()):
        raise SystemExit(f"--export-variants: {path} must hold {{name: {{setting: value}}}}")
    for name, overrides in exports.items():
        bad = sorted(set(overrides) - NON_TRAJECTORY)
        if bad:
            raise SystemExit(f"--export-variants: {name!r} changes {', '.join(bad)}, which the run depends on; an "
                             f"export variant may change only {', '.join(sorted(NON_TRAJECTORY))}")
        if name in variants or name == "default":
            raise SystemExit(f"--export-variants: the name {name!r} is already a variant of the run")
    return exports


# -- main ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.report_only:
        return report_only(args, argv)

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cuda = device.startswith("cuda")
    prompts = expand_prompts(args.prompts) if args.prompts else (expand_prompts(None) if on_cuda else CPU_SUBSET)
    seeds = args.seeds if args.seeds else ([0, 1, 2] if on_cuda else [0])
    cores = os.cpu_count() or 2
    n_gpus = torch.cuda.device_count() if device == "cuda" else 1
    workers = args.workers or (min(12 * n_gpus, max(1, cores - 2)) if on_cuda else 1)
    threads = args.threads or (1 if workers > 1 else max(1, torch.get_num_threads()))
    overrides = parse_overrides(args.overrides)
    variants = {"default": {}}
    if args.variants:
        variants = json.loads(Path(args.variants).read_text())
    exports = load_export_variants(args.export_variants, variants)
    prompts = _job_order(prompts)
    labels = stage_labels(args.stages)
    # A variant may name its own model ({"v4": {"model": "path/to/weights"}}): two priors side by side
    # on the same prompts, seeds and machine.
    models = {v: variants[v].get("model", args.model) for v in variants}
    jobs = [{"variant": v, "prompt": p, "seed": s, "model": models[v],
             "overrides": {k: x for k, x in {**overrides, **variants[v]}.items() if k != "model"},
             "deadline": None, "iou_resolution": args.iou_resolution, "stages": args.stages, "exports": exports,
             "device": device}
            for s in seeds for p in prompts for v in variants]   # variants interleaved: a time budget cuts all alike
    # Validate every job's settings (each stage's) before spending time on any of them.
    for job in jobs:
        for label in labels:
            for export_overrides in [{}, *exports.values()]:
                settings_for(job["prompt"], job["seed"], {**job["overrides"], **export_overrides, "stages": label},
                             job["model"], device)
    # Every row a job writes: its own variant's, then each export variant's, each stage.
    row_variants = {v: [v, *(export_variant_name(v, e) for e in exports)] for v in variants}
    report_variants = {**variants, **{export_variant_name(v, e): {**variants[v], **o}
                                      for v in variants for e, o in exports.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    kept = []
    if args.resume and (args.out / "quality.jsonl").is_file():
        # A job is done when every stage it asks for has a finished row; otherwise it runs again
        # whole (the fine stage continues the coarse stage of its own run).
        finished = {_job_key(r): r for r in read_jsonl(args.out / "quality.jsonl")
                    if not r.get("skipped") and not r.get("crashed")}
        def keys(j):
            return [_job_key({**j, "variant": v, "stages": label}) for v in row_variants[j["variant"]]
                    for label in labels]
        done = [j for j in jobs if all(k in finished for k in keys(j))]
        kept = [finished[k] for j in done for k in keys(j)]
        done_keys = {_job_key(j) for j in done}
        jobs = [j for j in jobs if _job_key(j) not in done_keys]
        print(f"resuming: {len(done)} jobs already done in {args.out / 'quality.jsonl'}", flush=True)
    from backend.engine.guidance.models import resolve_model

    for model in dict.fromkeys(models.values()):
        resolve_model(model)       # warns loudly if the built-in prior is missing
    if on_cuda and jobs:
        _build_cuda_extensions(device)
    # The time budget counts from here: the extension builds above (a minute on a fresh GPU machine)
    # are not generation time, and a short budget must not skip every job before the first starts.
    deadline = None
    if args.time_budget is not None:
        deadline = time.time() + args.time_budget
        for job in jobs:
            job["deadline"] = deadline
    print(f"quality benchmark: {len(jobs)} generations ({len(prompts)} prompts x {len(seeds)} seeds x "
          f"{len(variants)} variants{', less those resumed' if kept else ''}; stages {args.stages}) on {device}, "
          f"{workers} workers x {threads} threads", flush=True)
    t0 = time.perf_counter()
    rows = [{k: (os.path.relpath(v, args.out.resolve()) if k.endswith("_file") and v else v) for k, v in r.items()}
            for r in kept]
    progress = open(args.out / "quality.jsonl", "w")     # one line per finished job, as they come
    for r in rows:
        progress.write(json.dumps(r, default=str) + "\n")
    progress.flush()
    total = len(rows) + len(jobs) * len(labels) * (1 + len(exports))

    def report(job_rows):
        for r in job_rows:
            report_row(r)

    def report_row(r):
        r = save_images(r, args.out) if not r.get("skipped") else r
        rows.append(r)
        progress.write(json.dumps(r, default=str) + "\n")
        progress.flush()
        if r.get("skipped"):
            status = "skipped"
        elif r.get("error") and not r.get("empty"):
            status = f"ERROR {r['error'][:120]}"
        else:
            status = (f"IoU {r['iou']:.3f} (yaw 0: {r.get('iou_canonical', 0):.3f}) albedo {r['albedo_error']:.3f} "
                      f"PSNR {_fmt(r.get('texture_psnr'), 1)} chamfer {_fmt(r.get('chamfer'), 4)} "
                      f"normals {_fmt(r.get('normal_consistency'))} volume {_fmt(r.get('volume_ratio'), 2)} "
                      f"{_fmt(r.get('s_per_step'), 4)} s/step stage {_fmt(r.get('stage_s'), 1)} s "
                      f"{r.get('wall_s', 0):.0f} s")
        print(f"[{len(rows)}/{total} {time.perf_counter() - t0:5.0f}s] {r['variant']} | {r['prompt']} | seed "
              f"{r['seed']} | {r.get('stages', STAGES[0])}: {status}", flush=True)

    if workers <= 1:
        _init_worker(device, threads)
        for job in jobs:
            report(run_job(job))
    elif jobs:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(device, threads), maxtasksperchild=None) as pool:
            results = pool.imap_unordered(run_job, jobs)
            for pending in range(len(jobs), 0, -1):
                # A pool cannot cancel one task, so a hung job is waited for only until the straggler
                # limit, then the pool is terminated (leaving the `with`) and the report written.
                wait = None if deadline is None else max(1.0, deadline + args.straggler_s - time.time())
                try:
                    report(results.next(timeout=wait))
                except mp.TimeoutError:
                    print(f"{pending} job(s) still running {args.straggler_s:.0f} s after the time budget: "
                          f"abandoned (--resume runs them again)", flush=True)
                    break
    wall = time.perf_counter() - t0
    progress.close()

    meta = {"command": "python -m backend bench quality " + " ".join(argv),
            "device": (torch.cuda.get_device_name(torch.device(device)) if on_cuda else platform.processor() or "cpu")
            + f" ({device})", "cpu_count": cores, "gpus": n_gpus if on_cuda else 0, "workers": workers,
            "threads": threads, "wall_s": wall, "resumed_jobs": len(kept) // (len(labels) * (1 + len(exports))),
            "stages": args.stages, "overrides": overrides, "variants": report_variants, "export_variants": exports,
            "targets": TARGETS, "fine_targets": FINE_TARGETS,
            "settings": settings_for(prompts[0], seeds[0], overrides, args.model, device).to_dict(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    summary = write_report(_sort_rows(rows), args.out, meta, report_variants)
    print((args.out / "quality.md").read_text().split("\n#### By category")[0], flush=True)
    print(f"wrote {args.out}/quality.md, quality.json and turntable grids in {wall:.0f} s", flush=True)
    failed = any(summary[v]["verdict"] != "PASS" or summary[v].get("coarse_vs_fine", {}).get("verdict", "PASS")
                 != "PASS" for v in variants)
    return 1 if (args.strict and failed) else 0
