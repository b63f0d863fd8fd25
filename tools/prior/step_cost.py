"""CPU cost of one SDS guidance step (VAE encode with its backward + the UNet's CFG pair) for prior
architectures: ``python tools/prior/step_cost.py [--steps 30]``.

Times the engine's own ``StableDiffusionGuidance`` on one thread with the built-in preset's input
(one 32 px render, upsampled to the model's native resolution), for the shipped v3 weights and for
randomly initialised priors of each candidate architecture (the cost does not depend on the
weights' values). Prints a Markdown table (backend/prior/README.md quotes it). The candidates:

- ``v3``: the shipped layout, 64 px, 4x VAE, 16x16 latents;
- ``v4``: ``model.ARCHITECTURES["v4"]``, 64 px, 2x VAE, 32x32 latents;
- ``v4-128px``: the alternative v4, 128 px images through v3's 4x VAE to the same 32x32 latents.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build_128px(path: Path) -> Path:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from backend.prior import model as M

    torch.manual_seed(0)
    tokenizer = M.build_tokenizer(Path(str(path) + ".tok"))
    vae = AutoencoderKL(**dict(M.VAE_CONFIG, sample_size=128))
    unet = UNet2DConditionModel(**M.ARCHITECTURES["v4"].unet)
    return M.save_pipeline(path, vae=vae, unet=unet, text_encoder=M.build_text_encoder(tokenizer),
                           tokenizer=tokenizer)


def time_steps(model_dir: Path, steps: int) -> tuple[float, float, float, int]:
    """(median s/step, VAE encode+backward s, UNet s, native px) over ``steps`` timed steps after 3 warm-ups."""
    from backend.engine.cameras import VIEW_SUFFIXES
    from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance

    g = StableDiffusionGuidance(str(model_dir), "cpu")
    emb = g.encode_prompts("a wooden barrel", "", VIEW_SUFFIXES)
    unet_s, totals = [], []
    inner = g._unet

    def timed_unet(*a):
        t0 = time.perf_counter()
        out = inner(*a)
        unet_s.append(time.perf_counter() - t0)
        return out

    g._unet = timed_unet
    gen = torch.Generator().manual_seed(0)
    for i in range(steps + 3):
        rgb = torch.rand(1, 32, 32, 3, requires_grad=True)
        t0 = time.perf_counter()
        out = g(rgb, emb, ["front"], guidance_scale=3.0, t_range=(0.02, 0.98), generator=gen)
        out["loss_sds"].backward()
        totals.append(time.perf_counter() - t0)
    total, unet = statistics.median(totals[3:]), statistics.median(unet_s[3:])
    return total, total - unet, unet, g.native_resolution


def main(argv=None) -> int:
    from backend.prior import WEIGHTS_DIR
    from backend.prior import model as M

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="prior_cost_"))
    try:
        models = {"v3 (shipped weights)": WEIGHTS_DIR,
                  "v4 (random)": M.build_random(tmp / "v4", arch="v4"),
                  "v4-128px (random)": build_128px(tmp / "v4_128")}
        print(f"one thread, {torch.__version__}, median of {args.steps} steps\n")
        print("| model | image px | latents | UNet params | SDS step + backward | VAE encode + backward + rest | UNet (CFG pair) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, path in models.items():
            from diffusers import UNet2DConditionModel

            n = M.n_params(UNet2DConditionModel.from_pretrained(str(path), subfolder="unet"))
            total, vae, unet, px = time_steps(path, args.steps)
            side = px // (2 ** (len(json.loads((Path(path) / "vae" / "config.json").read_text())
                                     ["block_out_channels"]) - 1))
            print(f"| {name} | {px} | {side}x{side} | {n / 1e6:.2f} M | {total * 1e3:.1f} ms | {vae * 1e3:.1f} ms | "
                  f"{unet * 1e3:.1f} ms |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
