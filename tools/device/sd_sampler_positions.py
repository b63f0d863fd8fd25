"""Why `bench cost`'s held-out SD-1.5 192x1 row measures ~40 ms a step when 256x1 measures ~27 (sessions 29-31):
both renders are too large for the fixed-budget sampler and use the dynamic one. Times the albedo step of 192x1,
256x1, 128x1 and 192x1 again in one fresh process, first things first (in `bench cost` the 192x1 row comes 8th of
the SD grid, after seven other render shapes), with Dynamo's compile counters after each, to tell a position effect
(recompilations, a compile cache run out) from a cost of the render itself. Session 31: 192x1 31.8 ms here, 40 in the
bench in either direction of its grid. An entry with an "r" (``ORDER=192r,...``) first empties the CUDA allocator and
frees the cuBLAS workspaces as the bench does before each configuration (``reset_peak``), the one difference left.
Run by sd_sampler_positions.sh."""

import os
import statistics
import tempfile
from pathlib import Path

import torch

from backend.bench.cost import drop_cuda_graphs, reset_peak, seconds_per_step, settings_for
from backend.bench.sd15 import build_sd15
from backend.engine.guidance import load_guidance
from backend.engine.occupancy import budget_fits
from backend.engine.trainer import Trainer

device = torch.device(os.environ.get("DEVICE", "cuda"))
model = str(build_sd15(Path(tempfile.gettempdir()) / "dreamprop-sd15"))
guidance = load_guidance(model, device)
ORDER = os.environ.get("ORDER", "64,192,256,192r,256r,192,192r").split(",")


def counters() -> str:
    from torch._dynamo.utils import counters as c
    return f"dynamo: {dict(c['stats'])}, recompiles {sum(c['recompiles'].values()) if 'recompiles' in c else 0}"


for entry in ORDER:
    res = entry.rstrip("r")
    if entry.endswith("r"):
        reset_peak(device)
    s = settings_for("sd15", model, {"resolution_schedule": f"{res}x1"})
    guidance.configure(s)
    drop_cuda_graphs(guidance)
    trainer = Trainer(s, guidance, device)
    n_rays = int(res) ** 2
    fits = budget_fits(n_rays, trainer.renderer.render_step_size, trainer.estimator)
    trainer.step = s.albedo_warmup_steps // 2
    for _ in range(8):
        trainer.train_step()
    times = [seconds_per_step(trainer, 10, device, 10) * 1000 for _ in range(3)]
    print(f"{res}x1{' after reset_peak' if entry.endswith('r') else ''} ({'budget' if fits else 'dynamic'} sampler): albedo {statistics.median(times):.1f} ms/step "
          f"({', '.join(f'{t:.1f}' for t in times)}); {counters()}", flush=True)
    del trainer
