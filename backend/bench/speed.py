"""``python -m backend bench speed``: the GPU speed and memory benchmark, all in one run.

Measures, with an SD-1.5-architecture pipeline built from its configuration (random weights,
real FLOPs) and loaded through the engine's own ``from_pretrained`` path:
  (a) the bound: UNet CFG-pair forward + VAE encoder forward/backward alone;
  (b)/(c) the full SDS step at 64^2, 128^2, 256^2, 512^2 renders (batch 1, default settings);
  (d) peak GPU memory of each;
  (e) export time at 256^3 / 50k faces / 1024^2;
  (f) the default schedule timed over >= 1,000 real steps, projected to 10,000;
and the same SDS step with the built-in prior. Prints a table; writes markdown + JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from shared.settings import GenerationSettings

PROMPT = "a weathered wooden barrel"


def cuda_ms(fn, *, warmup: int = 3, repeat: int = 20) -> float:
    """Median wall time of ``fn`` in ms, synchronising around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure_bound(guidance, batch: int = 1) -> dict:
    """UNet CFG pair + VAE encoder fwd/bwd at the guidance resolution: what SDS cannot go under."""
    device, res = guidance.device, guidance.resolution
    emb = guidance.encode_prompts(PROMPT, "", True)
    cond, uncond = emb.for_views(["front"] * batch)
    latent = res // guidance.vae_scale
    noisy = torch.randn(batch, 4, latent, latent, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    image = torch.rand(batch, 3, res, res, device=device, requires_grad=True)

    def unet():
        guidance.predict_noise(noisy, t, cond, uncond, 100.0)

    def vae():
        guidance.encode_images(image).float().sum().backward()

    unet_ms, vae_ms = cuda_ms(unet), cuda_ms(vae)
    return {"unet_cfg_ms": unet_ms, "vae_encode_fwd_bwd_ms": vae_ms, "bound_ms": unet_ms + vae_ms,
            "resolution": res, "batch": batch}


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_steps(trainer, n: int, start_step: int | None = None) -> list[float]:
    if start_step is not None:
        trainer.step = start_step
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        trainer.train_step()
        synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def step_at_resolution(guidance, model: str, stage: str, device, warmup: int = 30, repeat: int = 60,
                       **overrides) -> dict:
    from backend.engine.trainer import Trainer

    settings = GenerationSettings.from_dict({"prompt": PROMPT, "model": model, "resolution_schedule": stage,
                                             **overrides})
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    row = {"stage": stage}
    try:
        trainer = Trainer(settings, guidance, device)
        time_steps(trainer, warmup)                           # occupancy warm-up, allocator, autotune
        albedo = time_steps(trainer, repeat)
        mixed = time_steps(trainer, repeat, start_step=settings.albedo_warmup_steps + 1000)
        row.update(albedo_ms=statistics.median(albedo), mixed_ms=statistics.median(mixed),
                   peak_gb=torch.cuda.max_memory_allocated() / 2**30)
    except torch.OutOfMemoryError:
        row.update(albedo_ms=None, mixed_ms=None, peak_gb=None, error="CUDA out of memory")
    return row


def long_run(guidance, model: str, device, total_measured: int = 1200) -> dict:
    """Time real steps from three parts of the default 10k schedule and project the whole run."""
    from backend.engine.trainer import Trainer

    settings = GenerationSettings.from_dict({"prompt": PROMPT, "model": model})
    trainer = Trainer(settings, guidance, device)
    per = total_measured // 3
    # (start of the measured segment, first and last step of the schedule it stands for)
    segments = [(0, 0, settings.albedo_warmup_steps), (4000, settings.albedo_warmup_steps, 7000),
                (8000, 7000, settings.steps)]
    projected, measured = 0.0, []
    for start, lo, hi in segments:
        times = time_steps(trainer, per, start_step=start)
        mean_ms = sum(times) / len(times)
        measured.append({"start": start, "steps": per, "mean_ms": mean_ms, "represents": [lo, hi]})
        projected += mean_ms * (hi - lo) / 1000
    return {"measured_steps": per * 3, "segments": measured, "projected_10k_s": projected}


def export_time(guidance, model: str, device) -> dict:
    """Export of a briefly trained field at the default 256^3 / 50k faces / 1024^2."""
    from backend.engine.trainer import Trainer

    settings = GenerationSettings.from_dict({"prompt": PROMPT, "model": model, "steps": 10000})
    trainer = Trainer(settings, guidance, device)
    time_steps(trainer, 20)
    t0 = time.perf_counter()
    result = trainer.export()
    return {"total_s": time.perf_counter() - t0, "stages": result.timings, "faces": result.n_faces,
            "settings": "256^3 / 50k faces / 1024^2"}


def versions() -> dict:
    import diffusers

    out = {"torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
           "device": torch.cuda.get_device_name(), "cuda": torch.version.cuda}
    try:
        import nerfacc

        out["nerfacc"] = nerfacc.__version__
    except ImportError:
        out["nerfacc"] = None
    return out


def render_report(report: dict) -> str:
    b = report["bound"]
    lines = [f"# Speed benchmark — {report['versions']['device']}", "",
             f"Versions: {json.dumps(report['versions'])}", "",
             f"Bound (UNet CFG pair + VAE encode fwd/bwd at {b['resolution']}², fp16 eager): "
             f"**{b['bound_ms']:.1f} ms** (UNet {b['unet_cfg_ms']:.1f} + VAE {b['vae_encode_fwd_bwd_ms']:.1f})", "",
             "| render | step, albedo warm-up (ms) | step, after warm-up (ms) | × bound | peak GPU memory (GB) |",
             "|---|---|---|---|---|"]
    for row in report["steps"]:
        if row.get("error"):
            lines.append(f"| {row['stage']} | {row['error']} | | | |")
            continue
        lines.append(f"| {row['stage']} | {row['albedo_ms']:.1f} | {row['mixed_ms']:.1f} | "
                     f"{row['mixed_ms'] / b['bound_ms']:.2f} | {row['peak_gb']:.2f} |")
    lr = report["long_run"]
    lines += ["", f"Default schedule: {lr['measured_steps']} real steps measured, projected 10,000 steps: "
              f"**{lr['projected_10k_s'] / 60:.1f} min**", "",
              f"Export ({report['export']['settings']}): **{report['export']['total_s']:.1f} s** "
              f"({', '.join(f'{k} {v:.2f}' for k, v in report['export']['stages'].items())})"]
    if report.get("prior"):
        p = report["prior"]
        lines += ["", f"Built-in prior ({p['stage']}): {p['albedo_ms']:.1f} ms / {p['mixed_ms']:.1f} ms per step, "
                  f"peak {p['peak_gb']:.2f} GB"]
    return "\n".join(lines) + "\n"


def cpu_main(model: str, out: Path) -> int:
    """The CPU reference numbers: one 64^2 SDS step with the default settings, and the export."""
    from backend.engine.guidance import load_guidance
    from backend.engine.trainer import Trainer

    device = torch.device("cpu")
    guidance = load_guidance(model, device)
    settings = GenerationSettings.from_dict({"prompt": PROMPT, "model": model, "resolution_schedule": "64x1"})
    trainer = Trainer(settings, guidance, device)
    time_steps(trainer, 3)
    albedo = statistics.median(time_steps(trainer, 10))
    mixed = statistics.median(time_steps(trainer, 10, start_step=settings.albedo_warmup_steps + 1000))
    exported = export_time(guidance, model, device)
    report = {"device": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "model": guidance.name, "step_64_albedo_ms": albedo, "step_64_after_warmup_ms": mixed,
              "export": exported}
    text = (f"# CPU reference ({report['threads']} threads, {guidance.name})\n\n"
            f"| 64² SDS step, albedo warm-up | 64² SDS step, after warm-up | export 256³ / 50k / 1024² |\n"
            f"|---|---|---|\n| {albedo:.0f} ms | {mixed:.0f} ms | {exported['total_s']:.1f} s |\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu.json").write_text(json.dumps(report, indent=2))
    (out / "cpu.md").write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend bench speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/speed", help="folder for report.md and report.json")
    parser.add_argument("--model-dir", default="/tmp/dreamprop-sd15", help="where the SD-1.5 layout is built")
    parser.add_argument("--long-steps", type=int, default=1200, help="real steps timed for the 10k projection")
    parser.add_argument("--stages", default="64x1,128x1,256x1,512x1", help="render stages to time")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a generation setting in every measured configuration (repeatable)")
    parser.add_argument("--checkpoint-rays", type=int, default=None,
                        help="rays per activation-checkpointed chunk (default: the trainer's)")
    parser.add_argument("--quick", action="store_true", help="bound and render stages only (no export, no long run)")
    parser.add_argument("--cpu", action="store_true",
                        help="CPU reference only: 64^2 step and export with --cpu-model")
    parser.add_argument("--cpu-model", default="builtin", help="model for --cpu (default: the built-in prior)")
    args = parser.parse_args(argv)
    if args.cpu:
        return cpu_main(args.cpu_model, Path(args.out))
    if not torch.cuda.is_available():
        print("bench speed: needs a CUDA GPU (this machine has none; --cpu gives the CPU reference)")
        return 2
    from backend.bench.sd15 import build_sd15
    from backend.engine.guidance import load_guidance
    from backend.engine.guidance.models import builtin_available

    device = torch.device("cuda")
    overrides = dict(item.split("=", 1) for item in args.overrides)
    if args.checkpoint_rays is not None:
        import backend.engine.trainer as trainer_module

        trainer_module.CHECKPOINT_RAYS = args.checkpoint_rays
    t0 = time.perf_counter()
    model = str(build_sd15(Path(args.model_dir)))
    guidance = load_guidance(model, device)
    report = {"versions": versions(), "build_and_load_s": time.perf_counter() - t0, "overrides": overrides,
              "checkpoint_rays": args.checkpoint_rays}
    report["bound"] = measure_bound(guidance)
    print("bound", report["bound"], flush=True)
    report["steps"] = []
    for stage in args.stages.split(","):
        big = int(stage.split("x")[0]) >= 256      # slow steps: fewer repeats keep the run in one command
        row = step_at_resolution(guidance, model, stage, device, warmup=8 if big else 30, repeat=12 if big else 60,
                                 **overrides)
        print(row, flush=True)
        report["steps"].append(row)
    if args.quick:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        return 0
    report["export"] = export_time(guidance, model, device)
    print("export", report["export"], flush=True)
    report["long_run"] = long_run(guidance, model, device, args.long_steps)
    print("long run", report["long_run"], flush=True)
    if builtin_available():
        prior = load_guidance("builtin", device)
        report["prior"] = step_at_resolution(prior, "builtin", prior.native_resolution and "64x1", device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    text = render_report(report)
    (out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
