"""Where the SD-1.5 64 px step's *host* time goes (issue 13 point 1), with the GPU out of the way.

Session 37's sync probe found the step free of synchronisations (0.3 a step, the occupancy update's), and
`bench cost` measured the step at a 256 px guidance resolution (a quarter of the UNet's and the VAE's GPU
work) at 29 ms, the default's own ~31: the step is bound by the host issuing its work, not by the GPU. So
this script times the host: the step at ``guidance_resolution`` 256 (GPU work ~10 ms, so the host never
waits on a full launch queue) phase by phase with ``perf_counter`` and no synchronisation (render, guidance
with its VAE encode and UNet call apart, losses, backward, optimiser), under variants that each take host
work away (the graphed and compiled render, the VAE's compile replayed from CUDA graphs), then cProfile's
top functions for the default. Per variant also the full-resolution step's wall, the number to move.

Run on the device (``host_profile.sh``).
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from backend.bench.speed import PROMPT, time_steps
from backend.engine.trainer import Trainer
from shared.settings import GenerationSettings

DEVICE = torch.device(os.environ.get("DEVICE", "cuda"))
OUT = Path(os.environ.get("OUT", "/tmp/host_profile"))
STEPS = int(os.environ.get("STEPS", "60"))
VARIANTS = {
    "default": {},
    "graph render": {"graph_render": True},
    "graph+compile render": {"graph_render": True, "compile_render": True},
    "vae reduce-overhead": {"vae_compile_mode": "reduce-overhead"},
    "all three": {"graph_render": True, "compile_render": True, "vae_compile_mode": "reduce-overhead"},
    "default again": {},
}


def phase_times(trainer: Trainer, n: int) -> dict:
    """Mean host ms a step per phase (no synchronisation inside the steps)."""
    g = trainer.guidance
    acc: dict = defaultdict(float)
    clock = time.perf_counter

    def timed(obj, name, label):
        inner = getattr(obj, name)

        def wrapped(*a, **k):
            t0 = clock()
            try:
                return inner(*a, **k)
            finally:
                acc[label] += clock() - t0
        setattr(obj, name, wrapped)
        return inner

    saved = {n_: timed(g, n_, n_) for n_ in ("encode_images", "predict_noise")}
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    t_all = clock()
    for _ in range(n):
        t0 = clock()
        render = trainer.render_step()
        t1 = clock()
        guide = g.guide_many([trainer.guidance_request(render)])[0]
        t2 = clock()
        losses = trainer.step_losses(render, guide)
        total = sum(losses.values())
        trainer.zero_grad()
        t3 = clock()
        total.backward()
        t4 = clock()
        trainer.optimizer_step(losses, total)
        t5 = clock()
        del render, guide, losses, total     # a graph kept alive into the next capture fails it (graphed_render)
        for k, a, b in (("render", t0, t1), ("guidance (all)", t1, t2), ("losses", t2, t3), ("backward", t3, t4),
                        ("optimiser", t4, t5), ("step", t0, t5)):
            acc[k] += b - a
    host_all = clock() - t_all
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    wall = clock() - t_all
    for name, fn in saved.items():
        setattr(g, name, fn)
    out = {k: 1000 * v / n for k, v in acc.items()}
    out["host loop"], out["wall incl. drain"] = 1000 * host_all / n, 1000 * wall / n
    return out


def top_functions(trainer: Trainer, n: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        trainer.train_step()
    prof.disable()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    s = io.StringIO()
    stats = pstats.Stats(prof, stream=s)
    stats.sort_stats("tottime").print_stats(35)
    stats.sort_stats("cumulative").print_stats(45)
    return s.getvalue()


def main() -> int:
    from backend.bench.sd15 import build_sd15
    from backend.engine.guidance import load_guidance_for

    OUT.mkdir(parents=True, exist_ok=True)
    model = str(build_sd15(Path(tempfile.gettempdir()) / "dreamprop-sd15"))
    report: dict = {"device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu"}
    only = [v for v in os.environ.get("ONLY", "").split(",") if v]
    for gres in [int(g) for g in os.environ.get("GRES", "256,0").split(",")]:
        base = GenerationSettings.from_dict({"prompt": PROMPT, "model": model, "resolution_schedule": "64x1",
                                             "guidance_resolution": gres})
        guidance = load_guidance_for(base, DEVICE)
        for name, extra in VARIANTS.items():
            if only and name not in only:
                continue
            settings = base.replace(**extra)
            trainer = Trainer(settings, guidance, DEVICE)
            time_steps(trainer, 30)
            time_steps(trainer, 20, start_step=settings.albedo_warmup_steps + 1000)
            wall = statistics.median(time_steps(trainer, STEPS, block=10))
            phases = phase_times(trainer, STEPS)
            key = f"guidance {gres or 512} px, {name}"
            report[key] = {"wall_ms": wall, "phases_ms": phases}
            print(f"\n== {key}: step wall {wall:.1f} ms; host per phase (ms): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()), flush=True)
            if gres == 256 and name == "default":
                text = top_functions(trainer, 30)
                (OUT / "cprofile-256-default.txt").write_text(text)
                print(text[:6000], flush=True)
            del trainer
        del guidance
        torch.cuda.empty_cache()
        (OUT / "host_profile.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
