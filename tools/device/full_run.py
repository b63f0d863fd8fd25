"""The default SD-1.5 schedule timed whole, not projected (issue 13: "10k steps in <= 5 minutes").

``bench speed`` projects the 10k-step run from three 200-step segments started by jumping the step counter;
each segment then pays for work a real run spreads over its 10,000 steps (the CUDA graphs of the render
captured again for the segment's hash levels, once per shading). This script runs the schedule as a user's
run does, step 0 to 10,000, and prints the wall time every 500 steps (steps only: the run's previews,
checkpoints and export are measured by ``bench cost``). ``SET`` (``key=value,...``) overrides settings;
``LIMIT_S`` stops early and the output then says how far it got.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch

from backend.bench.speed import PROMPT, synchronize, whole_run_section
from backend.engine.trainer import Trainer
from shared.settings import GenerationSettings

OUT = Path(os.environ.get("OUT", "/tmp/full_run"))
LIMIT_S = float(os.environ.get("LIMIT_S", "1e9"))


def main() -> int:
    from backend.bench.sd15 import build_sd15
    from backend.engine.guidance import load_guidance_for

    OUT.mkdir(parents=True, exist_ok=True)
    overrides = dict(kv.split("=", 1) for kv in os.environ.get("SET", "").split(",") if kv)
    model = str(build_sd15(Path(tempfile.gettempdir()) / "dreamprop-sd15"))
    settings = GenerationSettings.from_dict({"prompt": PROMPT, "model": model, **overrides})
    device = torch.device("cuda")
    guidance = load_guidance_for(settings, device)
    trainer = Trainer(settings, guidance, device)
    t_setup = time.perf_counter()
    trainer.train_step()            # the VAE encoder's compile and the UNet's graph capture: set-up, not steps
    synchronize()
    setup_s = time.perf_counter() - t_setup
    marks, t0 = [], time.perf_counter()
    while trainer.step < settings.steps:
        trainer.train_step()
        if trainer.step % 500 == 0 or trainer.step == settings.steps:
            synchronize()
            elapsed = time.perf_counter() - t0
            marks.append({"step": trainer.step, "elapsed_s": elapsed})
            print(f"step {trainer.step:5d}  {elapsed:7.1f} s  ({1000 * elapsed / (trainer.step - 1):.1f} ms/step)",
                  flush=True)
            if elapsed > LIMIT_S:
                break
    done = trainer.step - 1
    report = {"device": torch.cuda.get_device_name(), "overrides": overrides, "setup_s": setup_s,
              "steps_timed": done, "elapsed_s": marks[-1]["elapsed_s"], "marks": marks,
              "complete": trainer.step >= settings.steps,
              "ms_per_step": 1000 * marks[-1]["elapsed_s"] / done,
              "projected_10k_s": marks[-1]["elapsed_s"] / done * (settings.steps - 1) if done else None,
              "peak_gb": torch.cuda.max_memory_allocated() / 2**30}
    # The bound read in this process on this machine, after the run (session 52: the whole run's 27.8 ms could only be
    # set against another instance's bound): each part's lowest of BOUND_READINGS readings, as bench speed's
    # bound_of_record takes it, with the guidance configured as the run had it (VAE compiled, UNet graphed).
    try:
        from backend.bench.speed import measure_bound

        readings = [measure_bound(guidance) for _ in range(int(os.environ.get("BOUND_READINGS", "3")))]
        unet = min(r["unet_cfg_ms"] for r in readings)
        vae = min(r["vae_encode_fwd_bwd_ms"] for r in readings)
        report["bound"] = {"unet_cfg_ms": unet, "vae_encode_fwd_bwd_ms": vae, "bound_ms": unet + vae,
                           "readings": readings}
    except Exception as exc:        # the timing stands without it
        report["bound_failed"] = f"{type(exc).__name__}: {exc}"
    report["albedo_warmup_steps"] = settings.albedo_warmup_steps
    # What `generate --estimate` would have told the user for the steps of this run (the cost model fitted by
    # `bench cost`, results/speed/cost.json): its error against the whole run timed here (session 52).
    try:
        from backend.cost.device import local_device
        from backend.cost.estimate import estimate

        est = estimate(settings, local_device("cuda"), checkpoints=False, include_load=False)
        report["estimated_steps_s"] = est["parts_s"]["steps"] * done / max(1, settings.steps - 1)
        report["estimate_error"] = report["estimated_steps_s"] / report["elapsed_s"] - 1.0
    except Exception as exc:        # the timing stands without it
        report["estimate_failed"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps({k: v for k, v in report.items() if k != "marks"}), flush=True)
    (OUT / "full_run.json").write_text(json.dumps(report, indent=2))
    # the speed report's section (copy it to results/speed/ and run `python -m backend.bench.speed_report`)
    (OUT / "whole.json").write_text(json.dumps(whole_run_section(report), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
