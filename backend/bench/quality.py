"""Quality benchmark of the built-in prior against analytic ground truth.

``python -m backend bench quality [--prompts ...] [--seeds 0 1 2] [--device auto] [--out results/quality]``

For every prompt of the prior's grammar (``a <colour> <shape>``; default: all 7 x 8) and seed,
run the real pipeline (``backend.engine.api.generate`` with ``model="builtin"`` and
``backend.prior.recommended_settings``), load the exported GLB back, and compare it with the
canonical shape and colour: volumetric IoU (64^3 voxels over [-1, 1]^3, best over yaw), Chamfer
distance (scene units), mean albedo error (mean |RGB - truth| on surface samples), empty meshes.

Writes ``quality.md`` (tables and verdict), ``quality.json`` (every number) and
``turntables_seed<S>.png`` (the exported meshes' turntables, one row per prompt) to ``--out``.
Targets: mean IoU >= 0.75, every prompt >= 0.5, mean albedo error <= 0.10, no empty mesh, for
every seed. On a GPU, ``--workers`` generations run side by side (the models are small).
"""

from __future__ import annotations

import argparse
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

TARGETS = {"mean_iou": 0.75, "min_iou": 0.5, "mean_albedo_error": 0.10, "empty": 0}
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


def settings_for(prompt: str, seed: int, overrides: dict, model: str = "builtin"):
    from backend.prior import recommended_settings
    from shared.settings import GenerationSettings

    values = {**recommended_settings(), **overrides, "prompt": prompt, "seed": seed, "model": model,
              "checkpoint_interval": 0}
    return GenerationSettings.from_dict(values)


def run_job(job: dict) -> dict:
    """Generate one prompt/seed and score it. Never raises: failures are recorded in the result. A crash
    (not an empty field) is retried once: on a fresh GPU machine parallel workers can trip over a
    shared build cache, and a generation is deterministic per seed, so the retry measures the same."""
    out = _run_job_once(job)
    if out.get("crashed"):
        retry = _run_job_once(job)
        retry["retried_after"] = out["error"]
        return retry
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


def _run_job_once(job: dict) -> dict:
    from backend.bench.metrics import evaluate_mesh, load_glb
    from backend.engine.api import generate
    from backend.prior import shapes
    from backend.prior.grammar import COLOURS, parse_prompt

    out = {k: job[k] for k in ("variant", "prompt", "seed")}
    if job.get("deadline") and time.time() > job["deadline"]:
        return {**out, "skipped": True}
    device = _WORKER.get("device") or job.get("device", "cpu")
    shape, colour = parse_prompt(job["prompt"])
    t0 = time.perf_counter()
    try:
        settings = settings_for(job["prompt"], job["seed"], job.get("overrides", {}), job.get("model", "builtin"))
        try:
            result = generate(settings, device=device)
        except Exception as exc:                       # an empty field is a result, not a crash
            if type(exc).__name__ != "EmptyMeshError":
                raise
            out.update(empty=True, iou=0.0, chamfer=float("nan"), albedo_error=1.0, error=str(exc)[:300],
                       wall_s=time.perf_counter() - t0)
            return out
        t_gen = time.perf_counter() - t0
        mesh = load_glb(result.glb)
        metrics = evaluate_mesh(mesh, lambda p: shapes.sdf(shape, p), COLOURS[colour] if colour else (0.5, 0.5, 0.5),
                                period=shapes.YAW_PERIOD[shape], res=job.get("iou_resolution", 64), seed=job["seed"])
        if metrics["empty"]:
            metrics["albedo_error"] = 1.0
        timings = result.metadata.get("timings", {})
        out.update(metrics, generate_s=t_gen, wall_s=time.perf_counter() - t0,
                   s_per_step=timings.get("s_per_step"), load_s=timings.get("load_s"),
                   optimise_s=timings.get("optimise_s"), export_s=timings.get("export_s"),
                   final_losses=result.metadata.get("final_losses"), turntable=result.turntable_png,
                   glb_bytes=len(result.glb))
    except Exception as exc:
        out.update(error=f"{type(exc).__name__}: {exc}"[:500], traceback=traceback.format_exc()[-2000:],
                   crashed=True, empty=True, iou=0.0, albedo_error=1.0, chamfer=float("nan"),
                   wall_s=time.perf_counter() - t0)
    return out


# -- aggregation --------------------------------------------------------------------------------------------
def summarise(rows: list[dict]) -> dict:
    done = [r for r in rows if not r.get("skipped")]
    if not done:
        return {"n": 0, "passed": False}
    ious = [r["iou"] for r in done]
    albedo = [r["albedo_error"] for r in done]
    chamfers = [r["chamfer"] for r in done if not math.isnan(r.get("chamfer", float("nan")))]
    s = {"n": len(done), "skipped": len(rows) - len(done), "mean_iou": float(np.mean(ious)),
         "min_iou": float(np.min(ious)), "mean_albedo_error": float(np.mean(albedo)),
         "max_albedo_error": float(np.max(albedo)),
         "mean_chamfer": float(np.mean(chamfers)) if chamfers else float("nan"),
         "empty": sum(bool(r.get("empty")) for r in done), "errors": sum(bool(r.get("error")) for r in done)}
    steps = [r["s_per_step"] for r in done if r.get("s_per_step")]
    s["mean_s_per_step"] = float(np.mean(steps)) if steps else None
    s["mean_wall_s"] = float(np.mean([r["wall_s"] for r in done]))
    s["passed"] = bool(s["mean_iou"] >= TARGETS["mean_iou"] and s["min_iou"] >= TARGETS["min_iou"]
                       and s["mean_albedo_error"] <= TARGETS["mean_albedo_error"] and s["empty"] == 0
                       and s["skipped"] == 0)
    return s


def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def write_markdown(path: Path, rows: list[dict], summary: dict, meta: dict) -> None:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    lines = ["# Quality benchmark: built-in prior vs analytic ground truth", "",
             f"- command: `{meta['command']}`",
             f"- device: {meta['device']}; workers: {meta['workers']}; wall time {meta['wall_s']:.0f} s",
             f"- settings: `backend.prior.recommended_settings()` + overrides {json.dumps(meta['overrides'])}",
             f"- targets per seed: mean IoU >= {TARGETS['mean_iou']}, every prompt >= {TARGETS['min_iou']}, "
             f"mean albedo error <= {TARGETS['mean_albedo_error']}, no empty mesh", "",
             "Metrics: IoU = volumetric IoU on 64^3 voxels over [-1,1]^3, best over rotations about the up "
             "axis; Chamfer = symmetric mean nearest-neighbour distance between 20k surface samples "
             "(scene units, shapes are ~1 unit across); albedo = mean |RGB - truth| (channels in [0,1]) "
             "at surface samples of the exported texture.", ""]
    for variant in variants:
        if len(variants) > 1 or variant != "default":
            lines += [f"## Variant `{variant}`: {json.dumps(meta['variants'].get(variant, {}))}", ""]
        lines += ["| seed | prompts | mean IoU | min IoU | mean albedo err | max albedo err | mean Chamfer | empty | "
                  "s/step | verdict |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for seed in seeds:
            s = summary[variant]["per_seed"].get(str(seed))
            if not s or not s.get("n"):
                continue
            lines.append(f"| {seed} | {s['n']}{' (+%d skipped)' % s['skipped'] if s['skipped'] else ''} | "
                         f"{_fmt(s['mean_iou'])} | {_fmt(s['min_iou'])} | {_fmt(s['mean_albedo_error'])} | "
                         f"{_fmt(s['max_albedo_error'])} | {_fmt(s['mean_chamfer'], 4)} | {s['empty']} | "
                         f"{_fmt(s['mean_s_per_step'], 4)} | {'PASS' if s['passed'] else 'FAIL'} |")
        lines += ["", f"Same verdict for every seed: **{summary[variant]['verdict']}**", ""]
        prompts = list(dict.fromkeys(r["prompt"] for r in rows if r["variant"] == variant))
        head = "| prompt | " + " | ".join(f"IoU s{s} | albedo s{s} | Chamfer s{s}" for s in seeds) + " | mean IoU | mean albedo |"
        lines += [head, "|---|" + "---:|" * (3 * len(seeds) + 2)]
        for prompt in prompts:
            cells, ious, albs = [], [], []
            for seed in seeds:
                r = next((x for x in rows if x["variant"] == variant and x["prompt"] == prompt and x["seed"] == seed),
                         None)
                if r is None or r.get("skipped"):
                    cells += ["-", "-", "-"]
                    continue
                mark = " (empty)" if r.get("empty") else ""
                cells += [_fmt(r["iou"]) + mark, _fmt(r["albedo_error"]), _fmt(r.get("chamfer"), 4)]
                ious.append(r["iou"]), albs.append(r["albedo_error"])
            lines.append(f"| {prompt} | " + " | ".join(cells) +
                         f" | {_fmt(float(np.mean(ious)) if ious else None)} | {_fmt(float(np.mean(albs)) if albs else None)} |")
        errors = [r for r in rows if r["variant"] == variant and r.get("error")]
        if errors:
            lines += ["", "Errors:", ""] + [f"- {r['prompt']} seed {r['seed']}: {r['error']}" for r in errors]
        lines.append("")
    path.write_text("\n".join(lines))


def turntable_grid(rows: list[dict], path: Path, *, view_size: int = 96, columns: int = 2) -> None:
    """One row per result: label (prompt, IoU, albedo error) and its turntable, downscaled."""
    from PIL import Image, ImageDraw

    rows = [r for r in rows if not r.get("skipped")]
    if not rows:
        return
    label_w, pad = 190, 4
    strip_w = view_size * 8
    cell_w, cell_h = label_w + strip_w + pad, view_size + pad
    n_rows = math.ceil(len(rows) / columns)
    canvas = Image.new("RGB", (columns * cell_w, n_rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, r in enumerate(rows):
        col, row = divmod(i, n_rows)
        x, y = col * cell_w, row * cell_h
        draw.text((x + 4, y + 8), r["prompt"], fill=(0, 0, 0))
        draw.text((x + 4, y + 26), f"seed {r['seed']}", fill=(80, 80, 80))
        draw.text((x + 4, y + 44), f"IoU {_fmt(r['iou'], 2)}  albedo {_fmt(r['albedo_error'], 2)}",
                  fill=(0, 110, 0) if r["iou"] >= TARGETS["min_iou"] else (200, 0, 0))
        if r.get("error"):
            draw.text((x + 4, y + 62), "empty" if r.get("empty") else "error", fill=(200, 0, 0))
        if r.get("turntable"):
            strip = Image.open(io.BytesIO(r["turntable"])).convert("RGB")
            strip = strip.resize((strip_w, view_size), Image.LANCZOS)
            canvas.paste(strip, (x + label_w, y))
    canvas.save(path, optimize=True)


# -- main ---------------------------------------------------------------------------------------------------
def expand_prompts(items: list[str] | None) -> list[str]:
    """Prompts from the command line: full prompts, 'shape', 'colour shape', or 'all'."""
    from backend.prior.grammar import SHAPES, all_prompts, caption, parse_prompt

    if not items or items == ["all"]:
        return all_prompts()
    out = []
    for item in items:
        words = item.strip().lower().split()
        if words and words[0] not in ("a", "an"):
            if len(words) == 1 and words[0] in SHAPES:
                out += [p for p in all_prompts() if p.endswith(" " + words[0])]
                continue
            item = caption(words[-1], words[0] if len(words) == 2 else None)
        parse_prompt(item)
        out.append(item)
    return out


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m backend bench quality", description=__doc__.splitlines()[0])
    p.add_argument("--prompts", nargs="*", default=None,
                   help="prompts ('a red cube'), 'colour shape', a shape (all its colours) or 'all' (default: all "
                        "on CUDA, 'a red cube' and 'a blue sphere' on CPU)")
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
    p.add_argument("--time-budget", type=float, default=None, help="seconds; later jobs are skipped")
    p.add_argument("--iou-resolution", type=int, default=64)
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import sys

    import torch

    args = parse_args(list(sys.argv[1:] if argv is None else argv))
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
    deadline = time.time() + args.time_budget if args.time_budget else None
    # Colour-major order (a red cube, a red sphere, ...): a time budget that cuts the tail still
    # leaves every shape covered.
    from backend.prior.grammar import parse_prompt, COLOURS, SHAPES

    def _key(prompt):
        shape, colour = parse_prompt(prompt)
        return (list(COLOURS).index(colour) if colour else -1, SHAPES.index(shape))

    prompts = sorted(prompts, key=_key)
    jobs = [{"variant": v, "prompt": p, "seed": s, "overrides": {**overrides, **variants[v]}, "model": args.model,
             "deadline": deadline, "iou_resolution": args.iou_resolution}
            for s in seeds for v in variants for p in prompts]
    # Validate every job's settings before spending time on any of them.
    for job in jobs:
        settings_for(job["prompt"], job["seed"], job["overrides"], args.model)
    from backend.engine.guidance.models import resolve_model

    resolve_model(args.model)      # warns loudly if the built-in prior is missing
    if on_cuda:
        _build_cuda_extensions(device)
    print(f"quality benchmark: {len(jobs)} generations ({len(prompts)} prompts x {len(seeds)} seeds x "
          f"{len(variants)} variants) on {device}, {workers} workers x {threads} threads", flush=True)
    t0 = time.perf_counter()
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    progress = open(args.out / "quality.jsonl", "w")     # one line per finished job, as they come

    def report(r):
        rows.append(r)
        progress.write(json.dumps({k: v for k, v in r.items() if k != "turntable"}, default=str) + "\n")
        progress.flush()
        status = "skipped" if r.get("skipped") else (f"ERROR {r['error'][:120]}" if r.get("error") and not r.get("empty")
                                                   else f"IoU {r['iou']:.3f} albedo {r['albedo_error']:.3f} "
                                                        f"chamfer {_fmt(r.get('chamfer'), 4)} "
                                                        f"{_fmt(r.get('s_per_step'), 4)} s/step {r.get('wall_s', 0):.0f} s")
        print(f"[{len(rows)}/{len(jobs)} {time.perf_counter() - t0:5.0f}s] {r['variant']} | {r['prompt']} | seed "
              f"{r['seed']}: {status}", flush=True)

    if workers <= 1:
        _init_worker(device, threads)
        for job in jobs:
            report(run_job(job))
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(device, threads), maxtasksperchild=None) as pool:
            for r in pool.imap_unordered(run_job, jobs):
                report(r)
    wall = time.perf_counter() - t0
    progress.close()

    order = {(j["variant"], j["prompt"], j["seed"]): i for i, j in enumerate(jobs)}
    rows.sort(key=lambda r: order[(r["variant"], r["prompt"], r["seed"])])
    summary = {}
    for v in variants:
        per_seed = {str(s): summarise([r for r in rows if r["variant"] == v and r["seed"] == s]) for s in seeds}
        verdicts = {x["passed"] for x in per_seed.values() if x.get("n")}
        summary[v] = {"per_seed": per_seed,
                      "verdict": ("PASS" if verdicts == {True} else "FAIL" if verdicts == {False} else "MIXED")}
    meta = {"command": "python -m backend bench quality " + " ".join(sys.argv[1:] if argv is None else argv),
            "device": (torch.cuda.get_device_name(torch.device(device)) if on_cuda else platform.processor() or "cpu")
            + f" ({device})", "cpu_count": cores, "gpus": n_gpus if on_cuda else 0, "workers": workers, "threads": threads, "wall_s": wall,
            "overrides": overrides, "variants": variants, "targets": TARGETS,
            "settings": settings_for(prompts[0], seeds[0], overrides, args.model).to_dict(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "results": [{k: v for k, v in r.items() if k != "turntable"} for r in rows]},
        indent=1, default=str))
    write_markdown(args.out / "quality.md", rows, summary, meta)
    for v in variants:
        for s in seeds:
            sel = [r for r in rows if r["variant"] == v and r["seed"] == s]
            name = f"turntables_seed{s}.png" if len(variants) == 1 else f"turntables_{v}_seed{s}.png"
            turntable_grid(sel, args.out / name)
    print((args.out / "quality.md").read_text().split("\n| prompt |")[0], flush=True)
    print(f"wrote {args.out}/quality.md, quality.json and turntable grids in {wall:.0f} s", flush=True)
    failed = any(summary[v]["verdict"] != "PASS" for v in variants)
    return 1 if (args.strict and failed) else 0
