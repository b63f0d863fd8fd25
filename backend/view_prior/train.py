"""Train the view prior: ``python -m backend.view_prior.train --out DIR``.

Stages, all on one device (a GPU: about 7 minutes on an H200 with the defaults):

1. render ``--pairs`` pairs of views of one object (``render_pairs``: the text prior's procedural
   objects, each pair with its own sampled proportions, two cameras drawn independently from the
   engine's ``sample_cameras`` at the prior's camera, the same shading mode, white background as
   Zero-1-to-3's renders; a quarter of the target views blurred as the guidance sees an upsampled
   render), kept on the device as uint8;
2. encode every image once with prior v6's trained VAE (frozen, ``model.load_frozen_vae``);
3. train the UNet, the image encoder and the camera projection together (epsilon prediction on the
   target view's latent, SD's scaled-linear schedule; the reference's unscaled VAE mean concatenated
   as 4 channels, its image embedding and ``relative_camera`` projected to the cross-attention
   token; 10% of the examples with token and reference latent zeroed for classifier-free guidance;
   either view of a pair may be the reference; mirror-symmetric objects also mirrored, with
   Δazimuth negated) for ``--unet-minutes``, keeping an EMA;
4. save the EMA weights in the Zero-1-to-3 diffusers layout to ``OUT/weights`` (fp16) and a report
   to ``OUT/report``: ``report.md``, ``train_log.json``, ``loss.png``, ``novel_views.png`` (held-out
   objects drawn with a different seed: the reference, then ground truth and sample per target view).

Resumable as the text prior's ``backend.prior.train`` (whose helpers this reuses; the run options,
device choice, checkpoint and data cache of both scripts are ``backend.prior.train_common``): ``--checkpoint``
saves the state every ``--checkpoint-every`` seconds and a later run with the same file continues;
``--data-cache`` keeps the rendered pairs. Step counts follow from the time budget after a measured
warm-up; ``--unet-steps`` fixes them (tests, CPU smoke runs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from backend.engine.cameras import CameraBatch, sample_cameras
from backend.engine.guidance.zero123 import clip_pixels, relative_camera
from backend.prior import model as text_prior
from backend.prior.catalogue import CATEGORIES
from backend.prior.render import CATEGORY_WEIGHTS, ENTRIES, SHADING_PROBS, BACKGROUNDS, default_settings, render
from backend.prior.train import _thin, grid_png, lr_at, stage_clock, start_denoiser_training, to_float
from backend.prior.train_common import (add_run_arguments, log, mark_done, open_run, rendered_data, save_ckpt,
                                        training_device)
from backend.view_prior import model as M

PROG = "python -m backend.view_prior.train"
P_UNCOND = 0.10          # classifier-free guidance dropout (token and reference latent together)
BLUR_PROB = 0.25
# Target views of the report: (Δelevation, Δazimuth) from the reference, degrees.
REPORT_VIEWS = ((0.0, 90.0), (0.0, 180.0), (0.0, -90.0), (25.0, 45.0))


# -- data -------------------------------------------------------------------------------------------
def _cat_cameras(parts: list[CameraBatch]) -> CameraBatch:
    return CameraBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in
                         ("c2w", "fovy", "elevation", "azimuth", "distance")))


def draw_cameras(n: int, settings, device, chunk: int = 32) -> CameraBatch:
    """``n`` engine training cameras (``sample_cameras`` draws its elevation law once per call), in
    random order: ``sample_cameras`` stratifies azimuth over its batch, so the i-th cameras of two
    draws would share a 360/chunk-degree sector and a pair would never be seen from far apart."""
    cams = _cat_cameras([sample_cameras(settings, min(chunk, n - i), device=device) for i in range(0, n, chunk)])
    order = torch.randperm(n)
    return CameraBatch(cams.c2w[order.to(cams.c2w.device)], cams.fovy[order.to(cams.fovy.device)],
                       cams.elevation[order], cams.azimuth[order], cams.distance[order])


def orbit_from(ref: CameraBatch, d_elevation: float, d_azimuth: float, device) -> CameraBatch:
    """Cameras at the references' distance and field of view, moved by (Δelevation, Δazimuth)."""
    from backend.engine.cameras import look_at, spherical_to_position, wrap_azimuth

    el = (ref.elevation + d_elevation).clamp(-80.0, 80.0)
    az = wrap_azimuth(ref.azimuth + d_azimuth)
    eye = spherical_to_position(el, az, ref.distance)
    n = eye.shape[0]
    c2w = look_at(eye, torch.zeros(n, 3), torch.tensor([0.0, 0.0, 1.0]).expand(n, 3))
    return CameraBatch(c2w.to(device), ref.fovy, el, az, ref.distance.clone())


def render_views(entry: torch.Tensor, cams: list[CameraBatch], seed: int, device, blur_last: bool = False,
                 shading: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The same objects (``entry``; proportions drawn once from ``seed``) seen from each camera batch
    of ``cams``: a list of (B, 3, H, W) in [0, 1]. Every call of ``render`` draws the lights, the
    backgrounds and then the proportions from its generator in the same order with the same shapes,
    so one seed gives the same objects under every camera."""
    n, dev = entry.shape[0], torch.device(device)
    g = torch.Generator(device=dev).manual_seed(seed)
    if shading is None:
        shading = torch.multinomial(torch.tensor(SHADING_PROBS, device=dev), n, replacement=True, generator=g)
    white = torch.full((n,), BACKGROUNDS.index("white"), device=dev)
    blur = torch.rand(n, device=dev, generator=g) < BLUR_PROB
    out = []
    for i, cam in enumerate(cams):
        gen = torch.Generator(device=dev).manual_seed(seed + 1)
        out.append(render(entry, cam, M.IMAGE_SIZE, shading=shading, background=white, generator=gen,
                          blur=blur if (blur_last and i == len(cams) - 1) else None))
    return out


def draw_entries(n: int, device, generator) -> torch.Tensor:
    """Random (category, look) entries with the text prior's category weights."""
    dev = torch.device(device)
    cat = torch.multinomial(torch.tensor(CATEGORY_WEIGHTS, device=dev), n, replacement=True, generator=generator)
    n_looks = torch.tensor([len(c.looks) for c in CATEGORIES], device=dev)
    first = torch.cumsum(n_looks, 0) - n_looks
    return first[cat] + torch.floor(torch.rand(n, device=dev, generator=generator) * n_looks[cat]).long()


@torch.no_grad()
def render_pairs(n: int, device, chunk: int = 1024, seed: int = 0, minutes: float | None = None):
    """``n`` pairs: images (n, 2, 3, H, W) uint8, cameras (n, 2, 3) [elevation, azimuth, distance],
    entries (n,); fewer when rendering them all would take longer than ``minutes``."""
    dev = torch.device(device)
    settings = default_settings()
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    images = torch.empty(n, 2, 3, M.IMAGE_SIZE, M.IMAGE_SIZE, dtype=torch.uint8, device=dev)
    cams = torch.empty(n, 2, 3, device=dev)
    entries = torch.empty(n, dtype=torch.long, device=dev)
    t0, i, k = time.perf_counter(), 0, 0
    while i < n:
        b = min(chunk, n - i)
        entry = draw_entries(b, dev, gen)
        ref, tgt = draw_cameras(b, settings, dev), draw_cameras(b, settings, dev)
        views = render_views(entry, [ref, tgt], seed * 1_000_003 + 2 * k, dev, blur_last=True)
        images[i:i + b] = (torch.stack(views, 1) * 255 + 0.5).to(torch.uint8)
        cams[i:i + b] = torch.stack([torch.stack([c.elevation, c.azimuth, c.distance], -1) for c in (ref, tgt)],
                                    1).to(dev)
        entries[i:i + b] = entry
        i, k = i + b, k + 1
        if minutes and k == 2:
            per_pair = (time.perf_counter() - t0) / i
            fits = int(minutes * 60 / per_pair)
            if fits < n:
                log(f"  rendering {per_pair * 1e3:.2f} ms/pair: {fits} pairs fit in {minutes} min (asked {n})")
                n = max(i, fits)
    return images[:n], cams[:n], entries[:n]


@torch.no_grad()
def encode_pairs(vae, images: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior mean and std of every image: (n, 2, 4, h, w) each."""
    flat = images.flatten(0, 1)
    means, stds = [], []
    for i in range(0, len(flat), chunk):
        with torch.autocast(flat.device.type, dtype=torch.bfloat16, enabled=flat.device.type == "cuda"):
            post = vae.encode(to_float(flat[i:i + chunk])).latent_dist
        means.append(post.mean.float())
        stds.append(post.std.float())
    shape = (images.shape[0], 2, *means[0].shape[1:])
    return torch.cat(means).view(shape), torch.cat(stds).view(shape)


# -- training ---------------------------------------------------------------------------------------
class ViewPrior(torch.nn.Module):
    """The trained parts together, so one optimiser, one EMA and one state dict cover them."""

    def __init__(self, unet, image_encoder, projection):
        super().__init__()
        self.unet, self.image_encoder, self.projection = unet, image_encoder, projection

    def token(self, pixels: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """The cross-attention token (B, 1, D), computed exactly as ``Zero123Guidance.camera_token``."""
        embedding = self.image_encoder(pixels).image_embeds[:, None, :]
        return self.projection(torch.cat([embedding, camera[:, None, :].to(embedding)], -1))

    def forward(self, noisy, t, ref_latent, token):
        return self.unet(torch.cat([noisy, ref_latent], 1), t, encoder_hidden_states=token).sample


def clip_input(images_u8: torch.Tensor, processor_size: int = M.IMAGE_SIZE) -> torch.Tensor:
    return clip_pixels(images_u8.float() / 255.0, processor_size, M.CLIP_MEAN, M.CLIP_STD)


def train(model: ViewPrior, data: dict, scale: float, args, ckpt: dict, report: dict, base: dict) -> None:
    images, cams, entries, means, stds = (data[k] for k in ("images", "cams", "entries", "means", "stds"))
    dev = means.device
    if ckpt.get("stage") == "unet":
        model.load_state_dict(ckpt["model"])
        report["curve"] = ckpt["report"]["curve"]
    params = list(model.parameters())
    alphas, opt, ema, start, budget = start_denoiser_training(params, args.lr, ckpt, "opt", args.unet_minutes,
                                                              args.unet_steps, dev)
    gen = torch.Generator(device=dev).manual_seed(args.seed + 2)
    mirror_ok = torch.tensor([CATEGORIES[k].mirror_ok for k, _ in ENTRIES], device=dev)
    model.train()
    step, run, t_last = start, [], time.perf_counter()
    clock = stage_clock(report, "unet_s")
    bins, counts = torch.zeros(10, device=dev), torch.zeros(10, device=dev)
    while step < budget.total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, budget.total, args.lr)
        b = args.batch
        idx = torch.randint(len(means), (b,), device=dev, generator=gen)
        # Either view of a pair may be the reference.
        swap = (torch.rand(b, device=dev, generator=gen) < 0.5).long()
        r, q = swap, 1 - swap
        rows = torch.arange(b, device=dev)
        ref_mean, ref_img = means[idx, r], images[idx, r]
        z0 = (means[idx, q] + stds[idx, q] * torch.randn(means[idx, q].shape, device=dev, generator=gen)) * scale
        c_ref, c_tgt = cams[idx, r], cams[idx, q]
        camera = relative_camera(c_tgt[:, 0], c_tgt[:, 1], c_tgt[:, 2], c_ref[:, 0], c_ref[:, 1], c_ref[:, 2])
        if args.flip:
            # A mirror image of a mirror-symmetric object is the same object seen from the mirrored
            # azimuths: both views flip and Δazimuth changes sign.
            flip = (torch.rand(b, device=dev, generator=gen) < 0.5) & mirror_ok[entries[idx]]
            f4 = flip[:, None, None, None]
            z0, ref_mean = torch.where(f4, z0.flip(-1), z0), torch.where(f4, ref_mean.flip(-1), ref_mean)
            ref_img = torch.where(f4, ref_img.flip(-1), ref_img)
            camera = torch.where(flip[:, None], camera * torch.tensor([1.0, -1.0, 1.0, 1.0], device=dev), camera)
        keep = (torch.rand(b, device=dev, generator=gen) >= P_UNCOND).float()
        t = torch.randint(0, len(alphas), (b,), device=dev, generator=gen)
        noise = torch.randn(z0.shape, device=dev, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            token = model.token(clip_input(ref_img), camera) * keep[:, None, None]
            pred = model(zt, t, ref_mean * keep[:, None, None, None], token).float()
        per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - decay)
            bucket = (t * 10 // len(alphas)).clamp(max=9)
            bins.index_add_(0, bucket, per.detach())
            counts.index_add_(0, bucket, torch.ones_like(per))
        del rows
        run.append(loss.detach())
        step += 1
        budget.update(step - start)
        if step % args.log_every == 0 or step == budget.total:
            mean = torch.stack(run).mean().item()
            by_t = (bins / counts.clamp(min=1)).tolist()
            report["curve"].append({"step": step, "loss": round(mean, 5), "loss_by_t_decile": [round(v, 4) for v in by_t]})
            log(f"unet {step}/{budget.total} loss {mean:.4f} lr {opt.param_groups[0]['lr']:.2e}")
            run = []
            bins.zero_(), counts.zero_()
        if args.checkpoint and time.perf_counter() - t_last > args.checkpoint_every:
            clock()
            save_ckpt(args.checkpoint, {"stage": "unet", "step": step, "total": budget.total,
                                        "model": model.state_dict(), "opt": opt.state_dict(),
                                        "ema": [e.cpu() for e in ema], "report": report, **base})
            t_last = time.perf_counter()
    report["steps"] = budget.total
    clock()
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    model.eval()


# -- report -----------------------------------------------------------------------------------------
@torch.no_grad()
def sample_views(model: ViewPrior, vae, ref_u8: torch.Tensor, camera: torch.Tensor, *, steps: int, cfg: float,
                 seed: int) -> torch.Tensor:
    """DDIM samples of the views ``camera`` (B, 4) of references ``ref_u8`` (B, 3, H, W): (B, 3, H, W) in [0, 1]."""
    from diffusers import DDIMScheduler

    dev = ref_u8.device
    sched = DDIMScheduler(**text_prior.SCHEDULER_CONFIG)
    sched.set_timesteps(steps)
    ref_latent = vae.encode(to_float(ref_u8)).latent_dist.mode()
    token = model.token(clip_input(ref_u8), camera)
    g = torch.Generator(device=dev).manual_seed(seed)
    z = torch.randn(ref_u8.shape[0], 4, M.LATENT_SIZE, M.LATENT_SIZE, generator=g, device=dev)
    for t in sched.timesteps:
        eps = model(torch.cat([z, z]), t.to(dev), torch.cat([ref_latent, torch.zeros_like(ref_latent)]),
                    torch.cat([token, torch.zeros_like(token)]))
        e_c, e_u = eps.chunk(2)
        z = sched.step(e_u + cfg * (e_c - e_u), t, z).prev_sample
    return ((vae.decode(z / vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)


@torch.no_grad()
def novel_view_report(model: ViewPrior, vae, args, dev) -> tuple[torch.Tensor, dict]:
    """Held-out objects (entries and proportions drawn with another seed than training's): per object
    the reference, then per ``REPORT_VIEWS`` the ground truth and the sample. Returns the grid's
    images (rows of 1 + 2 * len(REPORT_VIEWS)) and PSNRs of sample and of the reference copied, vs
    ground truth."""
    n = args.report_objects
    settings = default_settings()
    gen = torch.Generator(device=dev).manual_seed(10_000 + args.seed)
    torch.manual_seed(10_000 + args.seed)
    entry = draw_entries(n, dev, gen)
    ref = draw_cameras(n, settings.replace(elevation_min=0.0, elevation_max=30.0), dev)
    targets = [orbit_from(ref, de, da, dev) for de, da in REPORT_VIEWS]
    albedo = torch.zeros(n, dtype=torch.long, device=dev)
    views = render_views(entry, [ref, *targets], 777_000 + args.seed, dev, shading=albedo)
    ref_u8 = (views[0] * 255 + 0.5).to(torch.uint8)
    columns, psnr_sample, psnr_copy = [views[0]], [], []
    for cam, gt in zip(targets, views[1:]):
        camera = relative_camera(cam.elevation, cam.azimuth, cam.distance, ref.elevation, ref.azimuth, ref.distance)
        out = sample_views(model, vae, ref_u8, camera.to(dev), steps=args.sample_steps, cfg=args.sample_cfg,
                           seed=args.seed)
        columns += [gt, out]
        # PSNR of the MSE pooled over the objects (a mean of per-image PSNRs is dominated by the
        # objects whose views all look alike: a sphere's copied reference scores 100 dB).
        psnr = lambda x: (-10 * torch.log10(((x - gt) ** 2).mean().clamp(min=1e-10))).item()
        psnr_sample.append(psnr(out))
        psnr_copy.append(psnr(views[0]))
    grid = torch.stack(columns, 1).flatten(0, 1)
    stats = {"views": [list(v) for v in REPORT_VIEWS], "psnr_sample": [round(v, 2) for v in psnr_sample],
             "psnr_reference_copied": [round(v, 2) for v in psnr_copy], "objects": n,
             "entries": [f"{CATEGORIES[ENTRIES[int(e)][0]].name}/{ENTRIES[int(e)][1]}" for e in entry.tolist()]}
    return grid, stats


def loss_png(curve: list[dict], path: Path, size=(640, 360)) -> None:
    """The training loss against steps (log scale), drawn with PIL (no plotting library needed)."""
    from PIL import Image, ImageDraw
    import math

    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    if len(curve) >= 2:
        xs = [r["step"] for r in curve]
        ys = [math.log10(max(r["loss"], 1e-6)) for r in curve]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys) + 1e-9
        m = 40
        pts = [(m + (x - x0) / max(1, x1 - x0) * (size[0] - 2 * m),
                size[1] - m - (y - y0) / (y1 - y0) * (size[1] - 2 * m)) for x, y in zip(xs, ys)]
        d.rectangle([m, m, size[0] - m, size[1] - m], outline="gray")
        d.line(pts, fill="navy", width=2)
        d.text((m, 10), f"epsilon MSE (log10) vs step: {curve[0]['loss']:.4f} at {x0} -> {curve[-1]['loss']:.4f} at {x1}",
               fill="black")
        d.text((m, size[1] - m + 8), f"{x0}", fill="black")
        d.text((size[0] - m - 40, size[1] - m + 8), f"{x1}", fill="black")
    img.save(path)


def write_report(out: Path, report: dict) -> None:
    nv = report["novel_views"]
    lines = ["# View prior: training report", "",
             f"- device: {report['device']}; total {report['timings']['total_s']:.0f} s (render "
             f"{report['timings'].get('render_s', 0):.0f} s, UNet {report['timings'].get('unet_s', 0):.0f} s)",
             f"- pairs: {report['pairs']} at {M.IMAGE_SIZE} px; batch {report['args']['batch']}; steps {report['steps']}",
             "- parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in report["params"].items()),
             f"- weights: {report['weights_mb']:.2f} MB (fp16 safetensors)",
             f"- command: `{report['command']}`", "",
             "## Loss (epsilon MSE; by timestep decile 0-99 ... 900-999); `loss.png`", "",
             "| step | loss | " + " | ".join(f"t{d}" for d in range(10)) + " |", "|---:|---:|" + "---:|" * 10]
    for row in _thin(report["curve"], 20):
        lines.append(f"| {row['step']} | {row['loss']:.4f} | " + " | ".join(f"{v:.3f}" for v in row["loss_by_t_decile"]) + " |")
    lines += ["", "## Novel views of held-out objects (`novel_views.png`)", "",
              f"{nv['objects']} objects drawn with another seed than training (proportions not seen in training), "
              "reference at elevation 0-30 degrees, albedo shading, white background. Each row: the reference, then "
              "for each target view (Δelevation, Δazimuth) the ground truth and a DDIM sample "
              f"({report['samples']['steps']} steps, image CFG {report['samples']['cfg']}).", "",
              "| target view (Δel, Δaz) | PSNR sample vs GT | PSNR reference copied vs GT |", "|---|---:|---:|"]
    for v, a, b in zip(nv["views"], nv["psnr_sample"], nv["psnr_reference_copied"]):
        lines.append(f"| {v[0]:+.0f}, {v[1]:+.0f} | {a:.2f} | {b:.2f} |")
    lines += ["", "Objects, row by row: " + ", ".join(nv["entries"]), ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "train_log.json").write_text(json.dumps(report, indent=1))


# -- main -------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_run_arguments(p, "pairs")
    p.add_argument("--pairs", type=int, default=60_000)
    p.add_argument("--render-minutes", type=float, default=1.3, help="render fewer pairs if these would take longer")
    p.add_argument("--render-chunk", type=int, default=2048,
                   help="pairs rendered per batch (each category is traced once per batch: big batches keep a GPU busy)")
    p.add_argument("--unet-minutes", type=float, default=4.8)
    p.add_argument("--unet-steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--log-every", type=int, default=200)
    p.add_argument("--report-objects", type=int, default=8)
    p.add_argument("--sample-steps", type=int, default=40)
    p.add_argument("--sample-cfg", type=float, default=3.0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    dev = training_device(args.device)
    out = args.out
    opened = open_run(args, dev, PROG, argv, lambda: {"curve": []})
    if opened is None:
        return 0
    ckpt, report = opened
    stage = ckpt.get("stage")
    timings = report["timings"]

    images, cams, entries = rendered_data(args.data_cache, dev, lambda: render_pairs(
        args.pairs, dev, chunk=args.render_chunk, seed=args.seed, minutes=args.render_minutes), timings, "pairs")
    report["pairs"] = len(images)

    vae = M.load_frozen_vae().to(dev).eval().requires_grad_(False)
    scale = float(vae.config.scaling_factor)
    means, stds = encode_pairs(vae, images)
    log(f"latents {tuple(means.shape)}, scaled std {means.std().item() * scale:.3f}")

    torch.manual_seed(args.seed)
    model = ViewPrior(M.build_unet(), M.build_image_encoder(), M.build_projection()).to(dev)
    report["params"] = {"unet": text_prior.n_params(model.unet), "image_encoder": text_prior.n_params(model.image_encoder),
                        "projection": text_prior.n_params(model.projection), "vae (frozen, prior v6's)":
                        text_prior.n_params(vae)}
    log("parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in report["params"].items()))
    if stage == "unet":
        log(f"resumed from {args.checkpoint} (step {ckpt.get('step', 0)})")
    data = dict(images=images, cams=cams, entries=entries, means=means, stds=stds)
    train(model, data, scale, args, ckpt if stage == "unet" else {}, report, {})
    t_after_unet = time.perf_counter()

    grid, report["novel_views"] = novel_view_report(model, vae, args, dev)
    grid_png(grid, 1 + 2 * len(REPORT_VIEWS), out / "report" / "novel_views.png")
    report["samples"] = {"steps": args.sample_steps, "cfg": args.sample_cfg}
    log(f"novel views: PSNR sample {report['novel_views']['psnr_sample']} vs reference copied "
        f"{report['novel_views']['psnr_reference_copied']}")

    weights = M.save_layout(out / "weights", vae=vae.float().cpu(), unet=model.unet.float().cpu(),
                            image_encoder=model.image_encoder.float().cpu(), projection=model.projection.float().cpu())
    report["weights_mb"] = sum(f.stat().st_size for f in weights.rglob("*") if f.is_file()) / 1e6
    # Over all the commands of a resumed run (see backend.prior.train's report).
    timings["total_s"] = timings.get("render_s", 0.0) + timings.get("unet_s", 0.0) + time.perf_counter() - t_after_unet
    loss_png(report["curve"], out / "report" / "loss.png")
    write_report(out / "report", report)
    log(f"saved {weights} ({report['weights_mb']:.2f} MB) and {out / 'report'} in {timings['total_s']:.0f} s")
    mark_done(args, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
