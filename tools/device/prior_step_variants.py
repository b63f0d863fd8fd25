"""The built-in preset's GPU step under a few engine settings, timed interleaved in one process (a built-in step is
host-bound, so only timings taken side by side compare: results/speed/NOTES.md, session 29). Session 29's question:
does the compiled VAE encoder (two Inductor regions, ~5 ms of host time each for 0.2 ms of kernels) cost the tiny
prior more than it saves? Run on the device by prior_step_variants.sh; DEVICE=cpu for a local smoke test."""

import json
import os
import statistics
import sys
import time

import torch

from backend.bench.cost import drop_cuda_graphs, seconds_per_step
from backend.engine.guidance.models import load_guidance_for
from backend.engine.trainer import Trainer
from shared.presets import PRESETS
from shared.settings import GenerationSettings

device = torch.device(os.environ.get("DEVICE", "cuda"))
VARIANTS = json.loads(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else {
    "preset": {}, "vae eager": {"compile_vae": False}}
STEPS, ROUNDS = int(os.environ.get("STEPS", 40)), int(os.environ.get("ROUNDS", 4))


def settings(extra: dict) -> GenerationSettings:
    return GenerationSettings.from_dict({**PRESETS["builtin"], "prompt": "a wooden barrel", "model": "builtin",
                                         "shape_model": "builtin-shape", **extra})


guidance = load_guidance_for(settings({}), device)
times = {name: [] for name in VARIANTS}
for rnd in range(ROUNDS):
    for name in (list(VARIANTS) if rnd % 2 == 0 else list(VARIANTS)[::-1]):
        s = settings(VARIANTS[name])
        guidance.configure(s)
        drop_cuda_graphs(guidance)
        trainer = Trainer(s, guidance, device)
        trainer.step = s.albedo_warmup_steps + (s.steps - s.albedo_warmup_steps) // 2
        t0 = time.perf_counter()
        for _ in range(10):
            trainer.train_step()
        first = time.perf_counter() - t0
        times[name].append(seconds_per_step(trainer, STEPS, device, 10) * 1000)
        print(f"round {rnd} {name}: {times[name][-1]:.1f} ms/step (first 10 steps {first:.2f} s)", flush=True)
        del trainer
print("\n| variant | median ms/step | rounds |\n|---|---:|---|")
for name, t in times.items():
    print(f"| {name} {VARIANTS[name]} | {statistics.median(t):.1f} | {', '.join(f'{x:.1f}' for x in t)} |")
