"""Props per hour on one device: one job after another, one group sharing each guidance call
(``backend.engine.batching``), and several processes sharing the device (issue 13 point 2).

    python -m backend bench throughput                    # both parts, written to results/speed/
    python -m backend bench throughput --part prior       # or one part (merged into the same JSON)
    python -m backend bench throughput --tiny --device cpu   # a check that it runs end to end

(a) ``prior``: ``--jobs`` (16) built-in-prior props at the prior's preset as a user gets it, each a
    different prompt of ``grammar.benchmark_prompts()``, whole jobs (optimisation and export):
    ``sequential`` (what a server worker does with --batch-jobs 1; the first ``--sequential-sample``
    jobs are run and the wall time is projected to all), ``group`` (all jobs in one group) and
    ``processes`` (``--processes`` processes sharing the device, each running its share one after
    another, as ``bench quality`` does; timed from when every process has loaded its model) and
    ``process-groups`` (``--group-processes`` processes, each running its share as one group: what
    ``serve --workers P --batch-jobs G`` does on one GPU; a comma list measures several P).
(b) ``sd15``: ``--sd-jobs`` (8) jobs at default settings with the SD-1.5 architecture (random weights,
    ``sd15.py``): ``--sd-steps`` optimisation steps per job are timed, one job after another vs all
    in one group, and projected to the settings' full step count (export excluded: ~5 s a prop,
    the same in both modes).

Every mode is warmed up first (CUDA graph captures, cuDNN's kernel choice) and synchronised at the
end. Writes ``throughput.json`` (raw numbers plus ``table_md``) in ``--out``; a part run alone
keeps the other part's numbers already in the file.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

TARGETS = {"prior_group_vs_sequential": 3.0, "prior_group_vs_processes": 1.0, "sd15_group_vs_sequential": 1.5}
TINY = dict(model="tiny-random", steps=6, resolution_schedule="32x1", samples_per_ray=32, hash_log2_size=12,
            hash_max_resolution=256, albedo_warmup_steps=2, mesh_resolution=32, texture_size=64,
            face_budget=2000, occupancy_resolution=16, preview_interval=0, checkpoint_interval=0)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def prior_settings(count: int, tiny: bool = False, device: str = "cpu") -> list:
    """``count`` jobs at the built-in prior's preset for ``device``, each a different benchmark prompt and seed."""
    from backend.prior import recommended_settings
    from backend.prior.grammar import benchmark_prompts
    from shared.settings import GenerationSettings

    prompts = benchmark_prompts()
    stride = max(1, len(prompts) // max(1, count))
    return [GenerationSettings.from_dict({**recommended_settings(device), **(TINY if tiny else {}),
                                          "prompt": prompts[(i * stride) % len(prompts)], "seed": i,
                                          "checkpoint_interval": 0})
            for i in range(count)]


def sd15_settings(count: int, model: str, steps: int, tiny: bool = False) -> list:
    """``count`` jobs at the default settings (``steps`` is the full run the timing is projected to)."""
    from shared.settings import GenerationSettings

    prompts = ["a wooden barrel", "a red fire hydrant", "a stone well", "a brass lantern", "a leather armchair",
               "a potted cactus", "a treasure chest", "a vintage radio"]
    extra = {**TINY, "steps": steps} if tiny else {}
    return [GenerationSettings.from_dict({**extra, "prompt": prompts[i % len(prompts)], "seed": i, "model": model,
                                          "checkpoint_interval": 0})
            for i in range(count)]


# ---- (a) whole built-in-prior jobs ----------------------------------------------------------------
def _warm_up(settings, device: str, guidance, group: int) -> None:
    """A few steps at the timed shapes: CUDA graphs are captured and cuDNN picks kernels per shape."""
    from backend.engine.batching import step_group
    from backend.engine.trainer import Trainer

    from shared.settings import GenerationSettings

    short = GenerationSettings.from_dict({**settings.to_dict(), "steps": 3})
    trainers = [Trainer(short, guidance, device) for _ in range(group)]
    for _ in range(3):
        if group == 1:
            trainers[0].train_step()
        else:
            step_group(trainers, guidance)
    _sync(device)


def prior_sequential(jobs: list, device: str, sample: int) -> dict:
    from backend.engine.api import generate, load_guidance_for

    guidance = load_guidance_for(jobs[0], device)
    _warm_up(jobs[0], device, guidance, 1)
    sample = max(1, min(sample, len(jobs)))
    t0 = time.perf_counter()
    per_job = []
    for settings in jobs[:sample]:
        t = time.perf_counter()
        generate(settings, device=device, guidance=guidance)
        per_job.append(time.perf_counter() - t)
    _sync(device)
    measured = time.perf_counter() - t0
    return {"jobs": len(jobs), "measured_jobs": sample, "measured_wall_s": measured, "per_job_s": per_job,
            "wall_s": measured * len(jobs) / sample, "projected": sample < len(jobs)}


def prior_group(jobs: list, device: str) -> dict:
    from backend.engine.api import load_guidance_for
    from backend.engine.batching import generate_group

    guidance = load_guidance_for(jobs[0], device)
    _warm_up(jobs[0], device, guidance, len(jobs))
    t0 = time.perf_counter()
    results = generate_group(jobs, device=device, guidance=guidance)
    _sync(device)
    wall = time.perf_counter() - t0
    failed = [str(r) for r in results if isinstance(r, Exception)]
    done = [r.metadata["timings"] for r in results if not isinstance(r, Exception)]
    return {"jobs": len(jobs), "wall_s": wall, "failed": failed,
            "s_per_group_step": max((t["s_per_step"] for t in done), default=None),
            "export_s_total": sum(t["export_s"] for t in done)}


def _process_main(index: int, settings_dicts: list, device: str, threads: int, grouped: bool, barrier,
                  results) -> None:
    """One of the several processes: load the model, warm up, wait for the others, run its jobs (one
    after another, or ``grouped`` as one group)."""
    import torch

    torch.set_num_threads(max(1, threads))
    from backend.engine.api import generate, load_guidance_for
    from backend.engine.batching import generate_group
    from shared.settings import GenerationSettings

    jobs = [GenerationSettings.from_dict(d) for d in settings_dicts]
    guidance = load_guidance_for(jobs[0], device) if jobs else None
    if jobs:
        _warm_up(jobs[0], device, guidance, len(jobs) if grouped else 1)
    barrier.wait()
    t0 = time.perf_counter()
    failed = []
    if grouped and jobs:
        failed = [str(r) for r in generate_group(jobs, device=device, guidance=guidance) if isinstance(r, Exception)]
    else:
        for settings in jobs:
            generate(settings, device=device, guidance=guidance)
    _sync(device)
    results.put((index, time.perf_counter() - t0, failed))


def prior_processes(jobs: list, device: str, processes: int, threads: int, grouped: bool = False) -> dict:
    """``processes`` processes share the jobs round-robin; each runs its share one after another or, with
    ``grouped``, as one group (one guidance call per step for its jobs)."""
    processes = max(1, min(processes, len(jobs)))
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes + 1), ctx.Queue()
    shares = [[s.to_dict() for s in jobs[i::processes]] for i in range(processes)]
    procs = [ctx.Process(target=_process_main, args=(i, shares[i], device, threads, grouped, barrier, results))
             for i in range(processes)]
    for p in procs:
        p.start()
    barrier.wait()                 # every process has its model loaded and warmed up
    t0 = time.perf_counter()
    walls = [results.get() for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    return {"jobs": len(jobs), "processes": processes, "threads_per_process": threads, "wall_s": wall,
            "group_size": -(-len(jobs) // processes) if grouped else 1,
            "process_wall_s": sorted(w for _, w, _ in walls), "failed": [f for _, _, fs in walls for f in fs]}


# ---- (b) SD-1.5 architecture, fixed steps projected --------------------------------------------
def sd15_modes(jobs: list, device: str, steps: int, modes: list[str], sample: int) -> dict:
    from backend.engine.batching import step_group
    from backend.engine.guidance.models import load_guidance_for
    from backend.engine.trainer import Trainer

    guidance = load_guidance_for(jobs[0], device)
    full = jobs[0].steps
    out = {}
    if "sequential" in modes:
        _warm_up(jobs[0], device, guidance, 1)
        sample = max(1, min(sample, len(jobs)))
        t0 = time.perf_counter()
        for settings in jobs[:sample]:
            trainer = Trainer(settings, guidance, device)
            for _ in range(steps):
                trainer.train_step()
        _sync(device)
        wall = time.perf_counter() - t0
        out["sequential"] = {"jobs": len(jobs), "measured_jobs": sample, "steps_per_job": steps,
                             "measured_wall_s": wall, "s_per_job_step": wall / (steps * sample),
                             "wall_s": wall * len(jobs) / sample * full / steps, "projected_steps": full,
                             "projected": sample < len(jobs)}
    if "group" in modes:
        _warm_up(jobs[0], device, guidance, len(jobs))
        t0 = time.perf_counter()
        trainers = [Trainer(settings, guidance, device) for settings in jobs]
        for _ in range(steps):
            for r in step_group(trainers, guidance):
                if isinstance(r, Exception):
                    raise r
        _sync(device)
        wall = time.perf_counter() - t0
        out["group"] = {"jobs": len(jobs), "steps_per_job": steps, "measured_wall_s": wall,
                        "s_per_job_step": wall / (steps * len(jobs)), "wall_s": wall * full / steps,
                        "projected_steps": full}
    return out


# ---- report ------------------------------------------------------------------------------------
def table(results: dict) -> str:
    rows = ["| part | mode | jobs | wall s | props/hour | speed-up |", "|---|---|---:|---:|---:|---:|"]
    for part, label in (("prior", "built-in prior"), ("sd15", "SD-1.5 architecture")):
        modes = results.get(part, {})
        base = modes.get("sequential", {}).get("wall_s")
        names = ["sequential", "group", "processes"] + sorted(
            (m for m in modes if m.startswith("process_groups_")), key=lambda m: int(m.rsplit("_", 1)[1]))
        for mode in names:
            r = modes.get(mode)
            if not r:
                continue
            note = []
            if r.get("projected"):
                note.append(f"{r['measured_jobs']} of {r['jobs']} run, projected")
            if r.get("projected_steps"):
                note.append(f"{r['steps_per_job']} steps/job run, projected to {r['projected_steps']}")
            if mode == "processes":
                note.append(f"{r['processes']} processes")
            if mode.startswith("process_groups_"):
                note.append(f"{r['processes']} processes, each one group of {r['group_size']}")
            name = ("process groups" if mode.startswith("process_groups_") else mode) + (
                f" ({'; '.join(note)})" if note else "")
            per_hour = r["jobs"] * 3600.0 / r["wall_s"]
            speedup = f"{base / r['wall_s']:.2f}x" if base else "-"
            rows.append(f"| {label} | {name} | {r['jobs']} | {r['wall_s']:.1f} | {per_hour:.1f} | {speedup} |")
    return "\n".join(rows)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m backend bench throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("results/speed"))
    p.add_argument("--part", choices=("prior", "sd15", "all"), default="all")
    p.add_argument("--modes", default="sequential,group,processes,process-groups",
                   help="comma-separated: sequential, group, processes, process-groups (the last two: the prior "
                        "part only)")
    p.add_argument("--jobs", type=int, default=16, help="built-in-prior props (default 16)")
    p.add_argument("--sequential-sample", type=int, default=2,
                   help="prior jobs run one after another; the wall time is projected to --jobs (default 2)")
    p.add_argument("--processes", type=int, default=8, help="processes sharing the device (default 8)")
    p.add_argument("--group-processes", default="4,8",
                   help="process-groups mode: processes, each running its share of --jobs as one group; a comma "
                        "list measures each (default 4,8)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process in those modes (default 1)")
    p.add_argument("--sd-jobs", type=int, default=8)
    p.add_argument("--sd-steps", type=int, default=30, help="timed steps per SD-1.5 job (default 30)")
    p.add_argument("--sd-sequential-sample", type=int, default=2,
                   help="SD-1.5 jobs run one after another, projected to --sd-jobs (default 2)")
    p.add_argument("--sd-model-dir", default="/tmp/dreamprop-sd15", help="where the SD-1.5 layout is built")
    p.add_argument("--tiny", action="store_true",
                   help="tiny-random model and budgets everywhere: a check that everything runs (on a CPU)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import sys

    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"sequential", "group", "processes", "process-groups"}
    if unknown:
        raise SystemExit(f"--modes: unknown {', '.join(sorted(unknown))} "
                         "(allowed: sequential, group, processes, process-groups)")
    try:
        group_processes = [int(v) for v in args.group_processes.split(",") if v.strip()]
    except ValueError:
        group_processes = []
    if not group_processes or min(group_processes) < 1:
        raise SystemExit(f"--group-processes: a comma list of process counts >= 1, got {args.group_processes!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "throughput.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    import platform

    import diffusers

    on_cuda = device.startswith("cuda")
    results.update({"device": torch.cuda.get_device_name() if on_cuda else f"cpu ({os.cpu_count()} cores)",
                    "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                                 "python": platform.python_version(), "cuda": torch.version.cuda},
                    "targets": TARGETS, "tiny": args.tiny,
                    "command": "python -m backend bench throughput " + " ".join(argv)})
    t_start = time.perf_counter()

    def save() -> None:
        results["table_md"] = table(results)
        path.write_text(json.dumps(results, indent=2, default=str))

    if args.part in ("prior", "all"):
        jobs = prior_settings(args.jobs, args.tiny, device)
        part = results.setdefault("prior", {})
        part["settings"] = jobs[0].to_dict()
        part["prompts"] = [s.prompt for s in jobs]
        if "sequential" in modes:
            part["sequential"] = prior_sequential(jobs, device, args.sequential_sample)
            print(f"prior sequential: {part['sequential']['wall_s']:.1f} s", flush=True)
            save()
        if "group" in modes:
            part["group"] = prior_group(jobs, device)
            print(f"prior group: {part['group']['wall_s']:.1f} s", flush=True)
            save()
        if "processes" in modes:
            part["processes"] = prior_processes(jobs, device, args.processes, args.threads)
            print(f"prior processes: {part['processes']['wall_s']:.1f} s", flush=True)
            save()
        if "process-groups" in modes:
            for count in group_processes:
                r = prior_processes(jobs, device, count, args.threads, grouped=True)
                part[f"process_groups_{count}"] = r
                print(f"prior process groups ({r['processes']} x {r['group_size']}): {r['wall_s']:.1f} s", flush=True)
                save()
    if args.part in ("sd15", "all"):
        if args.tiny:
            model, full_steps = "tiny-random", 10000
        else:
            from backend.bench.sd15 import build_sd15

            model, full_steps = str(build_sd15(Path(args.sd_model_dir))), 10000
        jobs = sd15_settings(args.sd_jobs, model, full_steps, args.tiny)
        part = results.setdefault("sd15", {})
        part["settings"] = jobs[0].to_dict()
        part.update(sd15_modes(jobs, device, args.sd_steps, [m for m in modes if m in ("sequential", "group")],
                               args.sd_sequential_sample))
        save()
    results["bench_wall_s"] = time.perf_counter() - t_start
    save()
    print(results["table_md"])
    print(f"wrote {path} in {results['bench_wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
