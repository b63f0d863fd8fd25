"""Why the built-in prior's 48 px step is slower than its 64 px one on the H200 (session 29's `bench cost`: after
the warm-up 48x1 21.7 / 23.9 ms, 64x1 17.0 / 17.3, 32x1 19.2 / 15.9). Times the three render sizes interleaved in one
process (so a slow moment of the machine hits all three), each timing with the render's sample counts, then a
torch.profiler table of one 48 px and one 64 px block. Run on the device by prior_resolution_profile.sh."""

import os
import statistics
import sys

import torch

from backend.bench.cost import drop_cuda_graphs, seconds_per_step, settings_for
from backend.engine.guidance import load_guidance
from backend.engine.trainer import Trainer

device = torch.device(os.environ.get("DEVICE", "cuda"))     # DEVICE=cpu: a local smoke test
guidance = load_guidance("builtin", device)
SIZES = (32, 48, 64)


def trainer_for(res: int, **extra) -> Trainer:
    settings = settings_for("builtin", "builtin", {"resolution_schedule": f"{res}x1", **extra})
    guidance.configure(settings)
    drop_cuda_graphs(guidance)
    trainer = Trainer(settings, guidance, device)
    trainer.step = settings.albedo_warmup_steps + max(0, settings.steps - settings.albedo_warmup_steps) // 2
    for _ in range(10):
        trainer.train_step()
    return trainer


times = {r: [] for r in SIZES}
for rep in range(3):
    for res in (SIZES if rep % 2 == 0 else SIZES[::-1]):
        tr = trainer_for(res)
        times[res].append(seconds_per_step(tr, 30, device, 10) * 1000)
        print(f"rep {rep} {res}x1: {times[res][-1]:.1f} ms/step", flush=True)
        del tr
for res in SIZES:
    print(f"{res}x1: median {statistics.median(times[res]):.1f} ms ({', '.join(f'{t:.1f}' for t in times[res])})")

# Without the CUDA graphs of the UNet and of the render: does one of them make the difference?
for extra in ({"cuda_graphs": False},):
    for res in SIZES:
        tr = trainer_for(res, **extra)
        print(f"{extra} {res}x1: {seconds_per_step(tr, 30, device, 10) * 1000:.1f} ms/step", flush=True)
        del tr

from torch.profiler import ProfilerActivity, profile

for res in (48, 64):
    tr = trainer_for(res)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            tr.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    print(f"\n== {res}x1, 10 steps, by CUDA time")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))
    print(f"== {res}x1, by CPU time")
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=60))
    del tr
sys.stdout.flush()
