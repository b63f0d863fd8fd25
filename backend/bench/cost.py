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

Writes ``backend/cost/profiles/<device-slug>.json`` (the estimator reads it) and
``results/speed/cost.json`` (raw numbers, the fit, the held-out table). Sized for ~5 minutes on an
H200; the CPU grid takes a few minutes on two cores. Refit: ``python -m backend bench cost``.
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
                                fit, memory_features, predict, preview_features, profile_path, relative_errors,
                                step_features)
from shared.presets import PRESETS
from shared.settings import GenerationSettings

PROMPT = "a red cube"

# (architecture, settings over the architecture's base, held out?). The base: the prior's preset for
# the prior, the schema defaults (threestudio's dreamfusion-sd) for SD-1.5.
PRIOR_GRID = [
    ({}, False),                                                       # the preset: 32x1, 64 samples
    ({"resolution_schedule": "64x1"}, False),
    ({"samples_per_ray": 128}, False),
    ({"resolution_schedule": "32x2"}, False),
    ({"hash_levels": 16, "hash_log2_size": 19, "hash_max_resolution": 4096}, False),   # the schema's grid
    ({"hash_levels": 16, "hash_log2_size": 17, "hash_max_resolution": 2048}, False),
    ({"resolution_schedule": "96x1", "samples_per_ray": 32}, False),
    ({"resolution_schedule": "48x1"}, True),
    ({"resolution_schedule": "48x2", "samples_per_ray": 96}, True),
    ({"hash_levels": 12, "hash_log2_size": 18, "hash_max_resolution": 1024, "samples_per_ray": 48}, True),
]
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


def reset_peak(device) -> None:
    gc.collect()
    if device.type == "cuda":
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


def settings_for(arch: str, model: str, overrides: dict) -> GenerationSettings:
    base = dict(PRESETS["builtin"]) if arch == BUILTIN_ARCH else {}
    return GenerationSettings.from_dict({**base, "prompt": PROMPT, "model": model, **overrides})


def measure_config(guidance, settings: GenerationSettings, device, counts: dict) -> dict:
    """One configuration: step time in both phases, peak memory, one preview, one checkpoint save."""
    from backend.engine.trainer import Trainer, png_bytes

    st = settings.resolution_stages[0]
    reset_peak(device)
    trainer = Trainer(settings, guidance, device)
    # Each phase is timed in its middle: the progressive hash-grid levels and the occupancy grid's
    # updates follow the step number, so step 0 would time a field with half its levels switched off.
    trainer.step = settings.albedo_warmup_steps // 2
    for _ in range(counts["warmup"]):
        trainer.train_step()
    albedo = seconds_per_step(trainer, counts["steps"], device, counts["block"])
    trainer.step = settings.albedo_warmup_steps + max(0, settings.steps - settings.albedo_warmup_steps) // 2
    for _ in range(max(1, counts["warmup"] // 3)):       # the mixed shading's first normals pass
        trainer.train_step()
    after = seconds_per_step(trainer, counts["steps"], device, counts["block"])
    peak = peak_bytes(device)
    synchronize(device)
    t0 = clock()
    for _ in range(2):
        png_bytes(trainer.preview())
    preview_s = (clock() - t0) / 2
    with tempfile.TemporaryDirectory() as tmp:
        t0 = clock()
        trainer.save_checkpoint(str(Path(tmp) / "ckpt.pt"))
        checkpoint_s = clock() - t0
    del trainer
    return {"resolution": st.resolution, "batch": st.batch_size, "step_s_albedo": albedo,
            "step_s_after_warmup": after, "peak_bytes": peak, "preview_s": preview_s, "checkpoint_s": checkpoint_s}


def measure_exports(guidance, device, grid, repeats: int = 1) -> list[dict]:
    """Each export of ``grid`` timed ``repeats`` times, the median kept: on the H200 single timings of
    neighbouring grids differed by more than their work does (results/speed/NOTES.md, session 17)."""
    import statistics

    from backend.engine.trainer import Trainer

    settings = settings_for(BUILTIN_ARCH, "builtin", {})
    trainer = Trainer(settings, guidance, device)
    for _ in range(60):                                 # a shape to mesh, not the initial blob only
        trainer.train_step()
    rows = []
    for mesh_res, tex, faces, held in grid:
        trainer.s = settings.replace(mesh_resolution=mesh_res, texture_size=tex, face_budget=faces)
        times = []
        for _ in range(repeats):
            synchronize(device)
            t0 = clock()
            trainer.export()
            times.append(clock() - t0)
        rows.append({"overrides": {"mesh_resolution": mesh_res, "texture_size": tex, "face_budget": faces},
                     "held_out": held, "export_s": statistics.median(times), "export_times_s": times})
        print("export", rows[-1], flush=True)
    return rows


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


def config_parts(run: dict) -> dict[str, list[tuple[dict, float, bool]]]:
    """(features, measured value, held out) rows of the step, memory, preview and checkpoint parts."""
    cuda, native = run["cuda"], {a: v["native_resolution"] for a, v in run["architectures"].items()}
    parts: dict[str, list] = {"step": [], "memory": [], "preview": [], "checkpoint": []}
    for c in run["configs"]:
        s = GenerationSettings.from_dict(c["settings"])
        for phase, key in ((False, "step_s_albedo"), (True, "step_s_after_warmup")):
            parts["step"].append((step_features(s, c["resolution"], c["batch"], phase, native, cuda=cuda), c[key],
                                  c["held_out"]))
        parts["memory"].append((memory_features(s, c["resolution"], c["batch"], native, cuda), c["peak_bytes"] / GB,
                                c["held_out"]))
        parts["preview"].append((preview_features(s), c["preview_s"], c["held_out"]))
        parts["checkpoint"].append((checkpoint_features(s, cuda=cuda), c["checkpoint_s"], c["held_out"]))
    return parts


def held_out_table(run: dict, coefficients: dict) -> str:
    cuda, native = run["cuda"], {a: v["native_resolution"] for a, v in run["architectures"].items()}
    lines = ["| held-out setting | quantity | measured | predicted | error |", "|---|---|---:|---:|---:|"]

    def line(name: str, quantity: str, measured: float, predicted: float, fmt: str = ".1f") -> None:
        lines.append(f"| {name} | {quantity} | {measured:{fmt}} | {predicted:{fmt}} | "
                     f"{100 * abs(predicted - measured) / measured:.0f}% |")

    for c in run["configs"]:
        if not c["held_out"]:
            continue
        s = GenerationSettings.from_dict(c["settings"])
        name = f"{c['arch']} " + (", ".join(f"{k}={v}" for k, v in c["overrides"].items()) or "defaults")
        for phase, key in ((False, "step_s_albedo"), (True, "step_s_after_warmup")):
            pred = predict(coefficients["step"], step_features(s, c["resolution"], c["batch"], phase, native, cuda=cuda))
            line(name, f"step, {'after warm-up' if phase else 'albedo warm-up'} (ms)", c[key] * 1000, pred * 1000)
        pred = predict(coefficients["memory"], memory_features(s, c["resolution"], c["batch"], native, cuda))
        line(name, "peak memory (GB)", c["peak_bytes"] / GB, pred, ".2f")
        line(name, "preview (ms)", c["preview_s"] * 1000, predict(coefficients["preview"], preview_features(s)) * 1000)
        line(name, "checkpoint (ms)", c["checkpoint_s"] * 1000,
             predict(coefficients["checkpoint"], checkpoint_features(s, cuda=cuda)) * 1000)
    for e, (f, y, held) in zip(run["exports"], export_rows(run)):
        if held:
            o = e["overrides"]
            line(f"export {o['mesh_resolution']}³ / {o['texture_size']}² / {o['face_budget']} faces", "export (s)",
                 y, predict(coefficients["export"], f), ".2f")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend bench cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/speed", help="folder for cost.json")
    parser.add_argument("--profile", default=None,
                        help="where to write the fitted profile (default: backend/cost/profiles/<device>.json)")
    parser.add_argument("--model-dir", default="/tmp/dreamprop-sd15", help="where the SD-1.5 layout is built (CUDA)")
    parser.add_argument("--cpu", action="store_true", help="measure the CPU even when CUDA is present")
    parser.add_argument("--no-sd15", action="store_true", help="the built-in prior only")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (0: torch's default). On a CPU shared with other work, 1 "
                             "avoids threads spinning against each other")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="wall time (default), or this process's CPU time: with --threads 1 on a shared "
                             "CPU, close to an idle machine's single-thread time")
    parser.add_argument("--refit", default=None, metavar="COST_JSON",
                        help="no measuring: fit again the raw numbers of an earlier run (its cost.json / cost_cpu.json)")
    args = parser.parse_args(argv)
    if args.refit:
        fit_and_write(json.loads(Path(args.refit).read_text()), args)
        return 0
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
        counts = {"warmup": 8, "steps": 15, "block": 5}
        big_counts = {"warmup": 4, "steps": 6, "block": 2}
        export_grid = EXPORT_GRID
    else:
        facts_dict = cpu_facts().to_dict()
        counts = big_counts = {"warmup": 2, "steps": 6, "block": 1}
        export_grid = CPU_EXPORT_GRID
    facts_dict.pop("memory_free_bytes", None)
    facts_dict.pop("index", None)
    from backend.cost.device import BANDWIDTH_GBS

    facts_dict["bandwidth_gbs"] = BANDWIDTH_GBS.get(facts_dict["slug"])
    t_start = time.perf_counter()
    grids = [(BUILTIN_ARCH, "builtin", PRIOR_GRID)]
    if cuda and not args.no_sd15:
        from backend.bench.sd15 import build_sd15

        t0 = clock()
        sd_model = str(build_sd15(Path(args.model_dir)))
        print(f"SD-1.5 architecture built in {clock() - t0:.0f} s", flush=True)
        grids.append((SD_ARCH, sd_model, SD_GRID))
    architectures, configs, exports = {}, [], []
    for arch, model, grid in grids:
        reset_peak(device)
        t0 = clock()
        guidance = load_guidance(model, device)
        load_s = clock() - t0
        architectures[arch] = {"native_resolution": int(guidance.native_resolution), "load_s": load_s}
        print(f"{arch}: loaded in {load_s:.1f} s, native resolution {guidance.native_resolution}", flush=True)
        for overrides, held in grid:
            settings = settings_for(arch, model, overrides)
            guidance.configure(settings)
            big = settings.resolution_stages[0].resolution * settings.resolution_stages[0].batch_size >= 256 and arch == SD_ARCH
            row = {"arch": arch, "overrides": overrides, "held_out": held,
                   "settings": {**settings.to_dict(), "model": "builtin" if arch == BUILTIN_ARCH else "sd15"}}
            try:
                row.update(measure_config(guidance, settings, device, big_counts if big else counts))
            except torch.OutOfMemoryError:
                print(f"{arch} {overrides}: out of memory, skipped", flush=True)
                continue
            configs.append(row)
            print(f"{arch} {overrides}{' (held out)' if held else ''}: "
                  f"{row['step_s_albedo'] * 1000:.1f} / {row['step_s_after_warmup'] * 1000:.1f} ms, "
                  f"peak {row['peak_bytes'] / GB:.2f} GB  [{time.perf_counter() - t_start:.0f} s]", flush=True)
        if arch == BUILTIN_ARCH:
            # three timings each on a GPU (an export there is 1-8 s); a CPU export takes up to a minute
            exports = measure_exports(guidance, device, export_grid, repeats=3 if cuda else 1)
        del guidance
        reset_peak(device)
    run = {"device": facts_dict, "cuda": cuda, "wall_s": time.perf_counter() - t_start, "configs": configs,
           "exports": exports, "architectures": architectures,
           "versions": {"torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "clock": args.clock}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # The raw numbers first: should the fit fail, `--refit` fits them again without measuring.
    (out / results_name(cuda)).write_text(json.dumps(run, indent=1, default=str) + "\n")
    fit_and_write(run, args)
    return 0


def results_name(cuda: bool) -> str:
    return "cost.json" if cuda else "cost_cpu.json"


def fit_and_write(run: dict, args) -> None:
    """Fit the measured run, write the profile and the results file, print the held-out table."""
    facts_dict, cuda, configs, exports = run["device"], run["cuda"], run["configs"], run["exports"]
    architectures, versions, wall = run["architectures"], run["versions"], run["wall_s"]
    parts = {**config_parts(run), "export": export_rows(run)}
    coefficients, errors = fit_and_test({k: v for k, v in parts.items() if v})
    table = held_out_table(run, coefficients)
    approximate = None if cuda else (f"approximate: measured on a CPU shared with other work ({versions['clock']} "
                                     f"time, {versions['threads']} torch thread(s)); refit on your machine with "
                                     "`python -m backend bench cost`")
    profile = {"version": PROFILE_VERSION, "device": facts_dict, "fitted": datetime.now(timezone.utc).isoformat(),
               "versions": versions, "architectures": architectures, "coefficients": coefficients,
               "units": {"step": "s", "memory": "GiB", "preview": "s", "checkpoint": "s", "export": "s"},
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
                + (f" ({approximate})" if approximate else "") + "\n\n" + table + "\n")
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
