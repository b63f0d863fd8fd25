"""Where a training step makes the host wait for the GPU (issue 13 point 1: "no host sync").

Measurement 11 left the SD-1.5 64 px step at ~31 ms of wall for ~28 ms of GPU work, and three host-side
levers (graphed render, compiled render, graphed VAE) within ~1 ms. A step that never waits for the GPU
runs at max(host, GPU); one synchronisation anywhere makes the GPU idle while the host issues the work
after it. This script counts the synchronising CUDA calls of a step (profiler: cudaStreamSynchronize,
cudaDeviceSynchronize, cudaEventSynchronize, blocking cudaMemcpy) and names the Python line of each
(``torch.cuda.set_sync_debug_mode("warn")`` warns at every synchronising ATen call; the warning's stack
is reduced to this project's innermost frames). The SD-1.5 architecture's 64 px step, then the built-in
GPU preset (dynamic sampler, as it ships) and the same with the budget sampler.

Run on the device (``sync_probe.sh``); ``DEVICE=cpu`` is a smoke test (no synchronisation on the CPU).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from backend.bench.speed import PROMPT, time_steps
from backend.engine.trainer import Trainer
from shared.settings import GenerationSettings

DEVICE = torch.device(os.environ.get("DEVICE", "cuda"))
OUT = Path(os.environ.get("OUT", "/tmp/sync_probe"))
STEPS = int(os.environ.get("STEPS", "10"))
ROOT = str(Path(__file__).resolve().parents[2])


def where_syncs(trainer: Trainer, n: int) -> dict:
    """Per step: each synchronising ATen call's innermost project frame (and the frame above it)."""
    seen: Counter = Counter()

    def hook(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(ROOT)
                  and "sync_probe" not in f.filename]
        key = " <- ".join(f"{Path(f.filename).relative_to(ROOT)}:{f.lineno} {f.line}" for f in frames[-1:-4:-1])
        seen[f"{str(message)[:60]} @ {key}"] += 1

    if DEVICE.type != "cuda":
        return {}
    old = warnings.showwarning
    warnings.showwarning = hook
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = hook
            torch.cuda.set_sync_debug_mode("warn")
            for _ in range(n):
                trainer.train_step()
            torch.cuda.set_sync_debug_mode("default")
    finally:
        warnings.showwarning = old
    return {k: v / n for k, v in seen.most_common()}


def count_syncs(trainer: Trainer, n: int) -> dict:
    """Per step: synchronising CUDA runtime calls and the host wall under the profiler."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(n):
            trainer.train_step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
    counts: Counter = Counter()
    for e in prof.events():
        if e.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
                      "cudaMemcpyAsync", "cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch"):
            counts[e.name] += 1
    return {k: v / n for k, v in counts.items()}


def probe(name: str, settings: GenerationSettings, guidance, report: dict, after: int) -> None:
    trainer = Trainer(settings, guidance, DEVICE)
    time_steps(trainer, 30)
    albedo = statistics.median(time_steps(trainer, 40, block=10))
    time_steps(trainer, 16, start_step=settings.albedo_warmup_steps + after)
    mixed = statistics.median(time_steps(trainer, 60, block=10))
    row = {"albedo_ms": albedo, "mixed_ms": mixed, "calls_per_step": count_syncs(trainer, STEPS),
           "syncs_at": where_syncs(trainer, STEPS)}
    # the albedo steps' syncs too (no normals, no light)
    trainer.step = 0
    row["albedo_syncs_at"] = where_syncs(trainer, STEPS)
    report[name] = row
    print(f"\n== {name}: step {albedo:.1f} ms (albedo) / {mixed:.1f} ms (mixed); calls a step {row['calls_per_step']}")
    for k, v in row["syncs_at"].items():
        print(f"  {v:5.1f} x  {k}")
    print("  albedo steps:")
    for k, v in row["albedo_syncs_at"].items():
        print(f"  {v:5.1f} x  {k}")


def main() -> int:
    from backend.bench.sd15 import build_sd15
    from backend.engine.guidance import load_guidance_for
    from backend.prior import recommended_settings

    OUT.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu", "torch": torch.__version__}
    parts = os.environ.get("PARTS", "sd,builtin").split(",")
    def part(name, make_settings, after):
        try:                          # a part that cannot run (e.g. a prior missing from the tree) keeps the rest
            settings = make_settings()
            probe(name, settings, load_guidance_for(settings, DEVICE), report, after)
        except Exception as exc:      # noqa: BLE001
            report[name] = {"error": repr(exc)[:300]}
            print(f"{name}: failed: {exc!r}"[:300], flush=True)
        (OUT / "sync_probe.json").write_text(json.dumps(report, indent=2))

    if "sd" in parts:
        model = str(build_sd15(Path(tempfile.gettempdir()) / "dreamprop-sd15"))
        part("sd15 64x1", lambda: GenerationSettings.from_dict({"prompt": PROMPT, "model": model,
                                                                 "resolution_schedule": "64x1"}), 1000)
    if "builtin" in parts:
        device = "cuda" if DEVICE.type == "cuda" else "cpu"
        for extra in ({}, {"sampling": "budget"}):
            part("builtin preset" + (" budget" if extra else ""),
                 lambda: GenerationSettings.from_dict({**recommended_settings(device), "prompt": "a wooden barrel",
                                                       "model": "builtin", **extra}), 100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
