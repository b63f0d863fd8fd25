"""What the two training scripts (``backend.prior.train``, ``backend.view_prior.train``) share as
command-line programs: their run options, the device choice, the resumable run's checkpoint (and its
"done" mark, which makes a second run of a finished command a no-op), the cache of rendered training
data and the log line. The training itself differs and stays in each script.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import torch

from backend.atomic_write import atomic_path

DONE = "done"            # the checkpoint's stage once the weights and the report are written


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def add_run_arguments(p: argparse.ArgumentParser, data: str) -> None:
    """The options every training script has: where to write, device, seed, EMA, mirroring, and the
    checkpoint and data cache of a resumable run; ``data`` names what is rendered ("images", "pairs")."""
    p.add_argument("--out", type=Path, required=True, help="writes OUT/weights (diffusers layout) and OUT/report")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="mirror latents left-right (only objects that are their own mirror image)")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--data-cache", type=Path, default=None,
                   help=f"keep the rendered {data} here (a resumed run on the same machine skips rendering)")
    p.add_argument("--checkpoint-every", type=float, default=60.0)


def training_device(name: str) -> torch.device:
    """``--device``: "auto" is CUDA when there is a GPU, else the CPU. On CUDA, TF32 matmuls and cuDNN's
    autotuner (training's fixed shapes gain from both)."""
    dev = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return dev


def save_ckpt(path, state: dict) -> None:
    if not path:
        return
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_ckpt(path) -> dict:
    if path and Path(path).is_file():
        return torch.load(path, map_location="cpu", weights_only=False)
    return {}


def open_run(args, dev: torch.device, prog: str, argv, new_report: Callable[[], dict],
             check: Callable[[dict], None] | None = None) -> tuple[dict, dict] | None:
    """The checkpoint to resume (``{}``: none) and the report to continue (``new_report()`` for a fresh
    run), with this run's device, options and command; ``None`` when the checkpoint says training is
    done (before any work: a finished run's weights and report stay as they are). ``check(ckpt)``
    runs first, done or not: it refuses a checkpoint this run's options can't continue."""
    import sys

    ckpt = load_ckpt(args.checkpoint)
    if check is not None:
        check(ckpt)
    if ckpt.get("stage") == DONE:
        log(f"checkpoint {args.checkpoint} says training is done; delete it to train again")
        return None
    (args.out / "report").mkdir(parents=True, exist_ok=True)
    report = ckpt.get("report") or new_report()
    report.update(device=str(torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"),
                  args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  command=f"{prog} " + " ".join(sys.argv[1:] if argv is None else argv))
    report.setdefault("timings", {})
    return ckpt, report


def rendered_data(cache, dev: torch.device, render: Callable[[], tuple], timings: dict, data: str) -> tuple:
    """The training data (a tuple of tensors, on ``dev``): from the ``--data-cache`` file when it
    exists, else ``render()`` (kept in the cache file when one is named)."""
    t0 = time.perf_counter()
    if cache and Path(cache).is_file():
        tensors = tuple(t.to(dev) for t in torch.load(cache, map_location="cpu"))
        log(f"loaded {len(tensors[0])} rendered {data} from {cache}")
        timings.setdefault("render_s", 0.0)      # rendered by an earlier run (maybe without a checkpoint)
        return tensors
    tensors = render()
    if cache:
        save_ckpt(cache, tuple(t.cpu() for t in tensors))
    timings["render_s"] = time.perf_counter() - t0
    log(f"rendered {len(tensors[0])} {data} in {timings['render_s']:.1f} s")
    return tensors


def mark_done(args, report: dict) -> None:
    """The last step of a run: its checkpoint says it is done (a later run of the command does nothing)."""
    if args.checkpoint:
        save_ckpt(args.checkpoint, {"stage": DONE, "report": report})
