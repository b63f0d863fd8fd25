"""Why the built-in prior's step with its shape prior, and with four views, is faster on an H200 than one view
with the prior alone (results/speed/NOTES.md, session 36: 48x1 20.4 ms, 48x1 + shape 16.0, 48x4 + shape 13.9,
also in the albedo warm-up where the shape prior is never called).

For each configuration, measured as ``bench cost`` measures it (``measure_config``, one field, the same guidance
objects ``BuiltinGuidances`` hands out), in two passes: the step times, whether each guidance replays its UNet from
CUDA graphs (``use_cuda_graphs``, ``_graph_capture_failed``, the captured shapes); then one profiled block of steps
per configuration: CUDA kernel launches, graph launches, synchronisations and memcpys per step, host time per step.
Prints a table and writes ``$OUT/builtin_step_probe.json``.

    python tools/device/builtin_step_probe.py        # on the GPU (the device call: tools/device/builtin_step_probe.sh)
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backend.bench.cost import (BUILTIN_SHAPE, BuiltinGuidances, measure_config, settings_for,  # noqa: E402
                                synchronize)

CONFIGS = [("48x1", {"resolution_schedule": "48x1"}),
           ("48x1+shape", {"resolution_schedule": "48x1", "shape_model": BUILTIN_SHAPE}),
           ("48x4", {"resolution_schedule": "48x4"}),
           ("48x4+shape", {"resolution_schedule": "48x4", "shape_model": BUILTIN_SHAPE}),
           ("32x4", {"resolution_schedule": "32x4"})]
DEVICE = torch.device(os.environ.get("DEVICE", "cuda"))        # DEVICE=cpu: a smoke test of this script
COUNTS = {"warmup": 8, "steps": 40, "block": 10} if DEVICE.type == "cuda" else {"warmup": 1, "steps": 2, "block": 1}


def graph_state(g) -> dict:
    out = {}
    for name in ("plain", "colour", "shape"):
        part = g if name == "plain" else getattr(g, name, None)
        if part is None or (name == "plain" and hasattr(g, "colour")):
            continue
        out[name] = {"use_cuda_graphs": getattr(part, "use_cuda_graphs", None),
                     "capture_failed": getattr(part, "_graph_capture_failed", None),
                     "graphs": [str(k) for k in getattr(part, "_graphs", {}).keys()]}
    return out


def profile_steps(guidance, settings, steps: int = 10 if DEVICE.type == "cuda" else 2):
    from torch.profiler import ProfilerActivity, profile

    from backend.engine.trainer import Trainer

    trainer = Trainer(settings, guidance, DEVICE)
    for phase, at in (("albedo", settings.albedo_warmup_steps // 2),
                      ("lit", settings.albedo_warmup_steps + max(0, settings.steps - settings.albedo_warmup_steps) // 2)):
        trainer.step = at
        for _ in range(8):
            trainer.train_step()
        synchronize(DEVICE)
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                trainer.train_step()
            synchronize(DEVICE)
        wall = (time.perf_counter() - t0) / steps
        counts: dict[str, int] = {}
        gpu_us = 0.0
        for e in prof.events():
            counts[e.name] = counts.get(e.name, 0) + 1
            if e.device_type == torch.autograd.DeviceType.CUDA:
                gpu_us += e.self_device_time_total if hasattr(e, "self_device_time_total") else e.cuda_time_total
        pick = lambda *names: sum(v for k, v in counts.items() if any(n in k for n in names)) / steps  # noqa: E731
        yield phase, {"wall_ms_profiled": 1e3 * wall,
                      "kernel_launches": pick("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"),
                      "graph_launches": pick("cudaGraphLaunch"),
                      "syncs": pick("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"),
                      "memcpy": pick("cudaMemcpyAsync", "cudaMemcpy"),
                      "gpu_busy_ms": gpu_us / 1e3 / steps,
                      "top_host_ops": sorted(((k, v / steps) for k, v in counts.items() if k.startswith("aten::")),
                                             key=lambda kv: -kv[1])[:8]}
    del trainer


def main() -> int:
    out = Path(os.environ.get("OUT", "/tmp"))
    guidances = BuiltinGuidances("builtin", DEVICE)
    rows = []
    for pass_no, order in enumerate((CONFIGS, CONFIGS[::-1])):
        for name, overrides in order:
            s = settings_for("builtin", "builtin", overrides)
            g = guidances.for_settings(s)
            m = measure_config(g, s, DEVICE, COUNTS, checkpoint_repeats=1, fields=1)
            row = {"pass": pass_no, "config": name, "albedo_ms": 1e3 * m["step_s_albedo"],
                   "lit_ms": 1e3 * m["step_s_after_warmup"], "sampler": m["sampler"], "graphs": graph_state(g)}
            rows.append(row)
            print(f"pass {pass_no} {name:11s} albedo {row['albedo_ms']:5.1f} ms  after {row['lit_ms']:5.1f} ms  "
                  f"{m['sampler']}  {json.dumps(row['graphs'])}", flush=True)
    profiles = {}
    for name, overrides in CONFIGS:
        s = settings_for("builtin", "builtin", overrides)
        g = guidances.for_settings(s)
        for phase, p in profile_steps(g, s):
            profiles[f"{name} {phase}"] = p
            print(f"{name:11s} {phase:6s} wall {p['wall_ms_profiled']:5.1f} ms  kernels {p['kernel_launches']:6.0f}  "
                  f"graph launches {p['graph_launches']:3.0f}  syncs {p['syncs']:4.0f}  memcpy {p['memcpy']:4.0f}  "
                  f"gpu busy {p['gpu_busy_ms']:5.1f} ms", flush=True)
            print("   ", p["top_host_ops"], flush=True)
    (out / "builtin_step_probe.json").write_text(json.dumps({"rows": rows, "profiles": profiles}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
