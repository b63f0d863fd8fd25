"""Where a training step's time goes, phase by phase, on the host and on the GPU (issue 13 point 1).

Measurements 8-10 left the SD-1.5 64 px step at ~31 ms against a 21 ms bound, with ~28 ms of GPU work a
step and three host-side levers (graphed render, compiled render, graphed VAE) each within ~1 ms. A kernel
table cannot say which phase the extra ~7 ms of GPU work belongs to. This script annotates the step's
phases (render, VAE encode, UNet, the rest of the guidance, losses, the VAE's backward, the render's
backward, the optimiser), records a profiler trace, and attributes every kernel to the phase during whose
host window it was launched (kernels of the backward are launched from autograd's thread while the main
thread waits in ``backward()``: a time window, not a call tree, catches them). Per phase: host ms, launches,
GPU kernel ms. The bound's two parts (UNet CFG pair, VAE encode fwd+bwd) are profiled the same way, so the
step's VAE and UNet phases can be held against them. Then the built-in preset's step (48x1, both priors).

Run on the device (step_breakdown.sh); ``DEVICE=cpu python tools/device/step_breakdown.py`` is a smoke test
(no kernels on the CPU: host columns only).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from backend.bench.speed import PROMPT, measure_bound, time_steps
from backend.engine.trainer import Trainer
from shared.settings import GenerationSettings

DEVICE = torch.device(os.environ.get("DEVICE", "cuda"))
OUT = Path(os.environ.get("OUT", "/tmp/step_breakdown"))
STEPS = int(os.environ.get("STEPS", "10"))
MARK = "P:"


def annotated_step(trainer: Trainer) -> None:
    """``Trainer.train_step`` with its phases annotated; the computation is the same."""
    with record_function(MARK + "render"):
        render = trainer.render_step()
    rgb = render.rgb

    def at_rgb(grad):        # the gradient reached the render: the guidance's backward is done
        with record_function(MARK + "mark_render_backward"):
            pass
        return grad

    if rgb.requires_grad:
        rgb.register_hook(at_rgb)
    with record_function(MARK + "guidance"):
        guide = trainer.guidance.guide_many([trainer.guidance_request(render)])[0]
    with record_function(MARK + "losses"):
        losses = trainer.step_losses(render, guide)
        total = sum(losses.values())
    trainer.zero_grad()
    with record_function(MARK + "backward"):
        total.backward()
    with record_function(MARK + "optimizer"):
        trainer.optimizer_step(losses, total)


def wrap(obj, name: str, label: str) -> None:
    """Annotate ``obj.name`` (a guidance method) as phase ``label``."""
    inner = getattr(obj, name)

    def wrapped(*a, **k):
        with record_function(MARK + label):
            return inner(*a, **k)

    setattr(obj, name, wrapped)


def analyse(trace_path: str, n: int) -> dict:
    """Per phase: host window ms, kernel launches, GPU kernel ms (each a per-step mean), from a Kineto trace."""
    events = json.loads(Path(trace_path).read_text())["traceEvents"]
    ranges = [e for e in events if e.get("ph") == "X" and e.get("cat") == "user_annotation"
              and e.get("name", "").startswith(MARK)]
    marks = sorted(e["ts"] for e in ranges if e["name"] == MARK + "mark_render_backward")
    ranges = [e for e in ranges if e["name"] != MARK + "mark_render_backward"]
    launches = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {}):
            launches[e["args"]["correlation"]] = e["ts"]
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]

    def phase_at(ts: float) -> str:
        best, width = "outside", float("inf")
        for r in ranges:                         # the innermost annotation around the launch
            if r["ts"] <= ts <= r["ts"] + r["dur"] and r["dur"] < width:
                best, width = r["name"][len(MARK):], r["dur"]
        if best == "backward":                   # split at the step's own render-gradient mark
            for r in ranges:
                if r["name"] == MARK + "backward" and r["ts"] <= ts <= r["ts"] + r["dur"]:
                    m = [x for x in marks if r["ts"] <= x <= r["ts"] + r["dur"]]
                    if m:
                        return "backward_render" if ts >= m[0] else "backward_guidance"
        return best

    host = defaultdict(float)
    for r in ranges:
        host[r["name"][len(MARK):]] += r["dur"] / 1000
    kernel_ms, count = defaultdict(float), defaultdict(int)
    intervals = []
    for k in gpu:
        ts = launches.get(k.get("args", {}).get("correlation"))
        phase = phase_at(ts) if ts is not None else "unattributed"
        kernel_ms[phase] += k["dur"] / 1000
        count[phase] += 1
        intervals.append((k["ts"], k["ts"] + k["dur"]))
    intervals.sort()
    busy, end = 0.0, -1.0
    for a, b in intervals:                       # the union of kernel intervals: GPU busy time
        if b > end:
            busy += b - max(a, end)
            end = b
    span = (intervals[-1][1] - intervals[0][0]) / 1000 if intervals else 0.0
    phases = sorted(set(host) | set(kernel_ms), key=lambda p: -kernel_ms.get(p, 0))
    return {"phases": {p: {"host_ms": host.get(p, 0) / n, "gpu_ms": kernel_ms.get(p, 0) / n,
                           "kernels": count.get(p, 0) / n} for p in phases},
            "gpu_busy_ms": busy / 1000 / n, "gpu_span_ms": span / n}


def profiled(fn, n: int, name: str) -> dict:
    for _ in range(3):
        fn()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])) as prof:
        for _ in range(n):
            fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) * 1000 / n
    path = str(OUT / f"trace-{name}.json")
    prof.export_chrome_trace(path)
    result = analyse(path, n)
    result["wall_ms_profiled"] = wall
    os.remove(path)
    (OUT / f"kernels-{name}.txt").write_text(prof.key_averages().table(
        sort_by="self_device_time_total" if DEVICE.type == "cuda" else "self_cpu_time_total",
        row_limit=60, max_name_column_width=110))
    return result


def table(title: str, result: dict) -> str:
    lines = [f"\n== {title}: wall under the profiler {result['wall_ms_profiled']:.1f} ms/step, GPU busy "
             f"{result['gpu_busy_ms']:.1f}, GPU span {result['gpu_span_ms']:.1f}",
             f"{'phase':<22}{'host ms':>9}{'GPU ms':>9}{'kernels':>9}"]
    for p, v in result["phases"].items():
        lines.append(f"{p:<22}{v['host_ms']:>9.2f}{v['gpu_ms']:>9.2f}{v['kernels']:>9.1f}")
    return "\n".join(lines)


def warmed_trainer(settings: GenerationSettings, guidance, report: dict, key: str, after: int) -> Trainer:
    """A trainer past the albedo warm-up by ``after`` steps, its unprofiled step time (median of blocks of 10)
    stored under ``report[key]``."""
    trainer = Trainer(settings, guidance, DEVICE)
    time_steps(trainer, 30)
    time_steps(trainer, 16, start_step=settings.albedo_warmup_steps + after)
    report[key] = statistics.median(time_steps(trainer, 60, block=10))
    print(f"{settings.resolution_schedule} step after warm-up, unprofiled: {report[key]:.1f} ms", flush=True)
    return trainer


def sd_part(report: dict) -> None:
    from backend.bench.sd15 import build_sd15
    from backend.engine.guidance import load_guidance_for

    model = str(build_sd15(Path(tempfile.gettempdir()) / "dreamprop-sd15"))
    settings = GenerationSettings.from_dict({"prompt": PROMPT, "model": model, "resolution_schedule": "64x1"})
    guidance = load_guidance_for(settings, DEVICE)
    bound = measure_bound(guidance) if DEVICE.type == "cuda" else {}
    report["bound"] = bound
    print("bound", bound, flush=True)
    trainer = warmed_trainer(settings, guidance, report, "sd_step_ms", 1000)
    wrap(guidance, "encode_images", "vae_encode")
    wrap(guidance, "predict_noise", "unet")
    report["sd_step"] = profiled(lambda: annotated_step(trainer), STEPS, "sd-step")
    print(table("SD-1.5 64x1 step (mixed shading)", report["sd_step"]), flush=True)

    # The bound's parts, annotated as the step's: the VAE's forward and backward apart.
    res = guidance.resolution
    emb = guidance.encode_prompts(PROMPT, "", {})
    cond, uncond = emb.for_views([""])
    noisy = torch.randn(1, 4, res // guidance.vae_scale, res // guidance.vae_scale, device=DEVICE)
    t = torch.full((1,), 500, device=DEVICE, dtype=torch.long)
    image = torch.rand(1, 3, res, res, device=DEVICE, requires_grad=True)

    def bound_step():
        guidance.predict_noise(noisy, t, cond, uncond, 100.0)
        latents = guidance.encode_images(image)
        with record_function(MARK + "backward_guidance"):
            latents.float().sum().backward()

    report["bound_parts"] = profiled(bound_step, STEPS, "bound")
    print(table("bound: UNet CFG pair + VAE encode fwd/bwd", report["bound_parts"]), flush=True)
    del trainer


def builtin_part(report: dict) -> None:
    from backend.engine.guidance import load_guidance_for
    from backend.prior import recommended_settings

    settings = GenerationSettings.from_dict({**recommended_settings(), "prompt": "a wooden barrel", "model": "builtin"})
    guidance = load_guidance_for(settings, DEVICE)
    trainer = warmed_trainer(settings, guidance, report, "builtin_step_ms", 100)
    report["builtin_step"] = profiled(lambda: annotated_step(trainer), STEPS, "builtin-step")
    print(table("built-in preset step", report["builtin_step"]), flush=True)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu", "torch": torch.__version__}
    parts = os.environ.get("PARTS", "sd,builtin").split(",")
    for name, part in (("sd", sd_part), ("builtin", builtin_part)):
        if name in parts:
            try:
                part(report)
            except Exception as exc:           # noqa: BLE001 - keep the other part
                report[name + "_error"] = repr(exc)[:400]
                print(name, "failed:", repr(exc)[:400], flush=True)
        (OUT / "breakdown.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
