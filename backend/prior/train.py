"""Train the built-in prior from scratch: ``python -m backend.prior.train --out DIR``.

Stages, all on one device (a GPU: about 6-8 minutes in all on an H100 with the defaults):

1. render ``--images`` training images with ``backend.prior.render`` (engine cameras, shading and
   backgrounds; captions from ``backend.prior.grammar``), kept on the device as uint8;
2. train the VAE (L1 + L2 reconstruction, a small KL term) for ``--vae-minutes``; set its
   ``scaling_factor`` to 1 / std of the latents, as SD does;
3. encode every image once, then train the UNet and the text encoder together on the latents
   (epsilon prediction, SD's scaled-linear DDPM schedule, 10% empty captions for classifier-free
   guidance) for ``--unet-minutes``, keeping an EMA of the weights;
4. save the EMA pipeline in diffusers layout to ``OUT/weights`` and a report to ``OUT/report``
   (``report.md``, ``train_log.json`` with the loss curves, ``samples.png`` with samples of every
   prompt, ``data.png`` with training images, ``vae_recon.png``).

Resumable: with ``--checkpoint FILE`` the state is saved after each stage and every
``--checkpoint-every`` seconds, and a later run with the same file continues where it stopped
(carry the file back and forth between device commands).

Step counts follow from the time budgets (measured speed after a warm-up), so the same command
fits in one device call on any GPU; ``--vae-steps``/``--unet-steps`` fix them instead (tests).

``--architecture`` picks the layout from ``backend.prior.model.ARCHITECTURES``: ``v3`` (the default,
the shipped weights: 16x16 latents), ``v4`` (32x32 latents for the same 64 px images), ``v5`` (v4
whose captions name the shading of lit and textureless renders: generate with ``shading_prompt``) or
``v6`` (v3 whose UNet also reads each image's camera, MVDream-style), ``v7``/``v8`` (v5 / v4 with the camera)
or ``v9`` (a smaller v8 for the ``shape_model`` setting, whose UNet learns only the lit and textureless
renders), ``v10`` (v9 that knows filled cups by name) or ``v11`` (v9 with multi-view attention: it learns from
groups of four views of one object, rendered so, and its folder's ``multiview.json`` tells the engine to draw
batches of four views), or ``v12`` (v9's layout as a colour prior: it learns only the albedo renders, and
renders only those). A checkpoint remembers its
architecture and a resume with another one is refused; the rendered images (``--data-cache``) are the
same for all (v5 needs a cache that kept the shading labels: rendered since session 16; v6 one that kept
the cameras: rendered since session 17).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from backend.engine.cameras import CAMERA_CONDITION_DIM, camera_condition, mirrored_camera_condition, orbit_cameras
from backend.prior import model as M
from backend.prior.catalogue import CATEGORIES
from backend.prior.grammar import VIEWS, benchmark_prompts, caption, mirrored_view
from backend.prior.render import ENTRIES, SHADINGS
from backend.prior.train_common import (add_run_arguments, log, mark_done, open_run, rendered_data, save_ckpt,
                                        training_device)

P_EMPTY = 0.10          # classifier-free guidance dropout
P_NO_LOOK = 0.08        # "a cube", "a mug": the noun alone (any look)
P_NO_VIEW = 0.25        # no view suffix (view_dependent_prompt off)
P_FILLED = 0.5          # a hollow prop drawn filled, for priors with filled captions (v10)
P_FILLED_WORD = 0.15    # ... and the caption of any other object said "filled" (it is its own filled self)
HOLLOW_ENTRY = torch.tensor([CATEGORIES[k].hollow for k, _ in ENTRIES])


PROG = "python -m backend.prior.train"
SAMPLE_COLUMNS = 8      # prompts per row of samples.png (the 8 colours of each solid make a row)


# -- captions ---------------------------------------------------------------------------------------
def caption_table(shading_captions: bool = False, filled_captions: bool = False) -> list[str]:
    """Every caption variant, indexed by ``caption_index``; the entry after the plain variants is the empty
    caption. ``shading_captions`` (v5): each also with the shading's word (``render.SHADINGS`` order);
    ``filled_captions`` (v10): then every plain variant again, said "filled" (``caption(filled=True)``: a
    hollow prop drawn filled, or now and then any other object, which is its own filled self)."""
    shadings = SHADINGS if shading_captions else (None,)
    out = []
    for filled in (False, True) if filled_captions else (False,):
        for k, look in ENTRIES:
            name = CATEGORIES[k].name
            for w in (look, None):
                for v in [*VIEWS, None]:
                    out += [caption(name, w, v, sh, filled=filled) for sh in shadings]
        if not filled:
            out.append("")
    return out


def caption_index(entry: torch.Tensor, view: torch.Tensor, generator=None,
                  shading: torch.Tensor | None = None, filled: torch.Tensor | None = None) -> torch.Tensor:
    """Random caption variant per image: empty, look word dropped, view dropped, or the full caption.
    With ``shading`` (index into ``render.SHADINGS``; a ``caption_table(True)`` index) the shading's word
    is always there: the plain caption then means an albedo render only (no dropout, or the plain
    caption would be the mixture again). ``filled`` (bool, a ``caption_table(filled_captions=True)``
    index): those images' captions say so (the empty caption stays empty)."""
    n, dev = entry.shape[0], entry.device
    nv = len(VIEWS) + 1
    ns = 1 if shading is None else len(SHADINGS)
    u = torch.rand(3, n, device=dev, generator=generator)
    dropped = (u[0] < P_NO_LOOK).long()
    view = torch.where(u[1] < P_NO_VIEW, torch.full_like(view, nv - 1), view)
    idx = ((entry * 2 + dropped) * nv + view) * ns + (0 if shading is None else shading)
    empty = len(ENTRIES) * 2 * nv * ns
    if filled is not None:
        # A prop that has no cavity is the same object "filled": some of its captions say so, so that the
        # word changes nothing there and the avoid term (plain minus filled) is about cavities only.
        solid = ~HOLLOW_ENTRY.to(entry.device)[entry] & (u[0] >= 1.0 - P_FILLED_WORD)
        idx = torch.where(filled.bool() | solid, idx + empty + 1, idx)
    return torch.where(u[2] < P_EMPTY, torch.full_like(idx, empty), idx)


# -- data -------------------------------------------------------------------------------------------
@torch.no_grad()
def render_dataset(n: int, device, chunk: int = 256, seed: int = 0, minutes: float | None = None,
                   image_size: int = M.IMAGE_SIZE, categories: list[str] | None = None, p_filled: float = 0.0,
                   elevation_max: float | None = None, views_per_object: int = 1,
                   shadings: tuple[str, ...] | None = None, centred: float = 0.0):
    """``n`` training images (uint8, on ``device``), labels (entry, view, shading, filled) and cameras ((n, 16)
    ``camera_condition``, for camera-aware priors); with ``minutes``, fewer when rendering all of them
    would take longer than that. ``p_filled``: the share of hollow props drawn filled. ``elevation_max``: the
    cameras' highest elevation (None: the engine's default, as every shipped prior was trained).
    ``views_per_object`` V: groups of V consecutive views of one object (``render.sample_batch``; ``n`` and
    ``chunk`` are rounded down to whole groups); ``shadings``: only these shadings; ``centred``: the share of objects
    drawn from the middle of their proportions' ranges (``Category.sample``; 0, uniform, for every prior before v9d)."""
    from backend.prior.render import default_settings, sample_batch

    settings = default_settings() if elevation_max is None else default_settings().replace(elevation_max=elevation_max)

    v = int(views_per_object)
    n, chunk = n // v * v, max(v, chunk // v * v)
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    images = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8, device=device)
    labels = torch.empty(n, 4, dtype=torch.long, device=device)
    cameras = torch.empty(n, CAMERA_CONDITION_DIM, dtype=torch.float32, device=device)
    t0, i = time.perf_counter(), 0
    while i < n:
        b = sample_batch(min(chunk, n - i), image_size, device=device, settings=settings, generator=gen,
                         categories=categories, p_filled=p_filled, views_per_object=v, shadings=shadings,
                         centred=centred)
        images[i:i + len(b.images)] = (b.images * 255 + 0.5).to(torch.uint8)
        labels[i:i + len(b.images)] = torch.stack([b.entry, b.view, b.shading, b.filled.long()], 1)
        cameras[i:i + len(b.images)] = b.camera
        i += len(b.images)
        if minutes and i == min(n, 2 * chunk):
            per_image = (time.perf_counter() - t0) / i
            fits = int(minutes * 60 / per_image)
            if fits < n:
                log(f"  rendering {per_image * 1e3:.2f} ms/image: {fits} images fit in {minutes} min (asked {n})")
                n = max(i, fits // v * v)
    return images[:n], labels[:n], cameras[:n]


def grouped(labels: torch.Tensor, views: int) -> bool:
    """Whether ``render_dataset``'s labels come in groups of ``views`` images of one object (one entry and
    shading each): a cache rendered for a single-view prior almost never does."""
    if len(labels) == 0 or len(labels) % views:
        return False
    per_object = labels[:, [0, 2]].reshape(-1, views, 2)
    return bool((per_object == per_object[:, :1]).all())


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float() / 127.5 - 1.0


# -- schedules --------------------------------------------------------------------------------------
def lr_at(step: int, total: int, base: float, warmup: int = 200, floor: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    f = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * f)))


def stage_clock(report: dict, key: str):
    """A function that writes the time spent in a stage, over all commands of a resumed run, into
    ``report["timings"][key]``: call it before each checkpoint (which saves the report) and at the end."""
    before, t0 = report["timings"].get(key, 0.0), time.perf_counter()

    def update() -> float:
        report["timings"][key] = before + time.perf_counter() - t0
        return report["timings"][key]
    return update


class Budget:
    """Turns a time budget into a step count after ``probe`` timed steps."""

    def __init__(self, minutes: float | None, steps: int | None, probe: int = 30):
        self.minutes, self.probe = minutes, probe
        self.fixed = steps is not None          # 0 is a count too (``--init-from`` with no training)
        self.total = steps if steps is not None else 10**9
        self.t0 = None

    def resume(self, total: int) -> None:
        """Keep the step count the first command chose: a resumed run that timed its steps again
        would change the total (and the learning-rate schedule) halfway through."""
        self.fixed, self.total = True, total

    def update(self, step: int) -> None:
        if self.fixed:
            return
        if step == 5:
            self.t0 = time.perf_counter()
        elif step == 5 + self.probe:
            per_step = (time.perf_counter() - self.t0) / self.probe
            self.total = max(step + 1, int(self.minutes * 60 / per_step))
            log(f"  {per_step * 1000:.1f} ms/step -> {self.total} steps in {self.minutes} min")


def start_denoiser_training(params: list, lr: float, ckpt: dict, opt_key: str, minutes, steps, dev):
    """The denoiser stage's training state, shared by this prior and the view prior: the noise
    schedule's cumulative alphas, AdamW, the EMA of ``params``, the first step and the step budget,
    continued from ``ckpt`` when it was saved in that stage (its optimiser under ``opt_key``; the
    caller loads its own modules' weights)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**{k: v for k, v in M.SCHEDULER_CONFIG.items() if k not in ("set_alpha_to_one", "steps_offset")})
    alphas = sched.alphas_cumprod.to(dev)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ema = [p.detach().clone().float() for p in params]
    start = 0
    budget = Budget(minutes, steps)
    if ckpt.get("stage") == "unet":
        opt.load_state_dict(ckpt[opt_key])
        ema = [e.to(dev) for e in ckpt["ema"]]
        start = ckpt["step"]
        budget.resume(ckpt["total"])
    return alphas, opt, ema, start, budget


# -- VAE --------------------------------------------------------------------------------------------
def train_vae(vae, images, args, ckpt, report) -> None:
    dev = images.device
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    start = 0
    if ckpt.get("stage") == "vae":
        vae.load_state_dict(ckpt["vae"])
        opt.load_state_dict(ckpt["vae_opt"])
        start = ckpt["step"]
        report["vae_curve"] = ckpt["report"]["vae_curve"]
    budget = Budget(args.vae_minutes, args.vae_steps)
    if start:
        budget.resume(ckpt["total"])
    gen = torch.Generator(device=dev).manual_seed(args.seed + 1)
    vae.train()
    step, run, t_last = start, [], time.perf_counter()
    clock = stage_clock(report, "vae_s")
    while step < budget.total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, budget.total, args.vae_lr)
        idx = torch.randint(len(images), (args.vae_batch,), device=dev, generator=gen)
        x = to_float(images[idx])
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            post = vae.encode(x).latent_dist
            z = post.sample()
            rec = vae.decode(z).sample.float()
        mean, logvar = post.mean.float(), post.logvar.float()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()      # per latent dimension
        rec_loss = (rec - x).abs().mean() + F.mse_loss(rec, x)
        loss = rec_loss + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        run.append([rec_loss.detach(), kl.detach()])
        step += 1
        budget.update(step - start)
        if step % 100 == 0 or step == budget.total:
            r, k = torch.stack([torch.stack(v) for v in run]).mean(0).tolist()
            report["vae_curve"].append({"step": step, "rec": round(r, 5), "kl_per_dim": round(k, 4)})
            log(f"vae {step}/{budget.total} rec {r:.4f} kl/dim {k:.3f}")
            run = []
        if args.checkpoint and time.perf_counter() - t_last > args.checkpoint_every:
            clock()
            save_ckpt(args.checkpoint, {"stage": "vae", "step": step, "total": budget.total, "vae": vae.state_dict(),
                                        "vae_opt": opt.state_dict(), "report": report})
            t_last = time.perf_counter()
    report["vae_steps"] = budget.total
    clock()
    vae.eval()


@torch.no_grad()
def encode_all(vae, images, chunk=1024):
    means, stds = [], []
    for i in range(0, len(images), chunk):
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=images.device.type == "cuda"):
            post = vae.encode(to_float(images[i:i + chunk])).latent_dist
        means.append(post.mean.float())
        stds.append(post.std.float())
    return torch.cat(means), torch.cat(stds)


# -- UNet + text encoder ----------------------------------------------------------------------------
def init_from(folder: Path, vae, unet, text_encoder, tokenizer):
    """Load a prior's weights into freshly built models of the chosen architecture (a fine-tune's start);
    returns the prior's tokenizer. The UNet may lack only a camera projection, which starts at zero."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    loaded = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    if loaded.get_vocab() != tokenizer.get_vocab():
        raise SystemExit(f"--init-from {folder}: its tokenizer is not this architecture's (another vocabulary)")
    text_encoder.load_state_dict(CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").state_dict())
    src_vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    vae.load_state_dict(src_vae.state_dict())
    vae.register_to_config(scaling_factor=src_vae.config.scaling_factor)
    state = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").state_dict()
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("class_embedding.") for k in missing):
        raise SystemExit(f"--init-from {folder}: its UNet is not this architecture's "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if missing:
        # zero last layer: the camera's embedding adds nothing until training makes it (ControlNet's trick)
        torch.nn.init.zeros_(unet.class_embedding.linear_2.weight)
        torch.nn.init.zeros_(unet.class_embedding.linear_2.bias)
    return loaded


def training_pool(labels: torch.Tensor, arch: M.Architecture) -> torch.Tensor | None:
    """Indices of the images the UNet learns from: those whose shading is one of ``arch.shadings``
    (None: every image)."""
    if arch.shadings is None:
        return None
    if labels.shape[1] < 3:
        raise SystemExit(f"architecture {arch.name} learns only {', '.join(arch.shadings)} renders, but the data "
                         f"cache was rendered before shading labels were kept: pass another --data-cache")
    wanted = torch.tensor([SHADINGS.index(s) for s in arch.shadings], device=labels.device)
    pool = torch.isin(labels[:, 2], wanted).nonzero().squeeze(1)
    if len(pool) == 0:
        raise SystemExit(f"architecture {arch.name} learns only {', '.join(arch.shadings)} renders; "
                         f"the data has none")
    return pool


def train_unet(unet, text_encoder, tokens, latents, latent_std, labels, scale, args, ckpt, report, base,
               cameras=None):
    """``cameras`` (N, 16): each image's ``camera_condition``, for a camera-aware UNet (None: text only)."""
    dev = latents.device
    arch = M.architecture(args.architecture)
    shading_captions = arch.shading_captions
    pool = training_pool(labels, arch)
    if pool is not None:
        report["unet_images"] = len(pool)
        log(f"unet learns {len(pool)} of {len(latents)} images ({', '.join(arch.shadings)} renders)")
    if ckpt.get("stage") == "unet":
        unet.load_state_dict(ckpt["unet"])
        text_encoder.load_state_dict(ckpt["text_encoder"])
        report["unet_curve"] = ckpt["report"]["unet_curve"]
    params = list(unet.parameters()) + list(text_encoder.parameters())
    alphas, opt, ema, start, budget = start_denoiser_training(params, args.unet_lr, ckpt, "unet_opt",
                                                              args.unet_minutes, args.unet_steps, dev)
    gen = torch.Generator(device=dev).manual_seed(args.seed + 2)
    unet.train(), text_encoder.train()
    step, run, t_last = start, [], time.perf_counter()
    clock = stage_clock(report, "unet_s")
    bins = torch.zeros(10, device=dev)
    counts = torch.zeros(10, device=dev)
    mirror = torch.tensor([VIEWS.index(mirrored_view(v)) for v in VIEWS], device=dev)
    # Only objects whose mirror image is themselves may be flipped (a mug with its handle on the
    # left is not the prior's mug).
    mirror_ok = torch.tensor([CATEGORIES[k].mirror_ok for k, _ in ENTRIES], device=dev)
    # A multi-view prior learns from whole objects: the images come in groups of ``views`` (render_dataset), each
    # group drawn as one, noised at one timestep and mirrored as one.
    views = arch.num_views
    if views > 1:
        members = torch.arange(len(latents), device=dev) if pool is None else pool
        firsts = members[members % views == 0]
        offsets = torch.arange(views, device=dev)
    per_view = (lambda x: x.repeat_interleave(views, 0)) if views > 1 else (lambda x: x)
    while step < budget.total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, budget.total, args.unet_lr)
        if views > 1:
            pick = torch.randint(len(firsts), (args.unet_batch // views,), device=dev, generator=gen)
            idx = (firsts[pick][:, None] + offsets).reshape(-1)
        else:
            idx = torch.randint(len(latents) if pool is None else len(pool), (args.unet_batch,), device=dev,
                                generator=gen)
            if pool is not None:
                idx = pool[idx]
        z0 = (latents[idx] + latent_std[idx] * torch.randn(latents[idx].shape, device=dev, generator=gen)) * scale
        view = labels[idx, 1]
        camera = cameras[idx] if cameras is not None else None
        if args.flip:
            # A mirrored image of a mirror-symmetric object is the view from the mirrored azimuth:
            # "front left" becomes "front right", so the caption flips with the latents.
            flip = per_view(torch.rand(len(idx) // views, device=dev, generator=gen) < 0.5) & mirror_ok[labels[idx, 0]]
            z0 = torch.where(flip[:, None, None, None], z0.flip(-1), z0)
            view = torch.where(flip, mirror[view], view)
            if camera is not None:
                camera = torch.where(flip[:, None], mirrored_camera_condition(camera), camera)
        cap = caption_index(labels[idx, 0], view, generator=gen, shading=labels[idx, 2] if shading_captions else None,
                            filled=labels[idx, 3] if arch.filled_captions else None)
        t = per_view(torch.randint(0, len(alphas), (len(idx) // views,), device=dev, generator=gen))
        noise = torch.randn(z0.shape, device=dev, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            context = text_encoder(tokens[cap])[0]
            pred = unet(zt, t, encoder_hidden_states=context, class_labels=camera).sample.float()
        per = ((pred - noise) ** 2).mean(dim=(1, 2, 3))
        loss = per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - decay)
            b = (t * 10 // len(alphas)).clamp(max=9)
            bins.index_add_(0, b, per.detach())
            counts.index_add_(0, b, torch.ones_like(per))
        run.append(loss.detach())
        step += 1
        budget.update(step - start)
        if step % 200 == 0 or step == budget.total:
            mean = torch.stack(run).mean().item()
            by_t = (bins / counts.clamp(min=1)).tolist()
            report["unet_curve"].append({"step": step, "loss": round(mean, 5),
                                         "loss_by_t_decile": [round(v, 4) for v in by_t]})
            log(f"unet {step}/{budget.total} loss {mean:.4f} lr {opt.param_groups[0]['lr']:.2e}")
            run = []
            bins.zero_(), counts.zero_()
        if args.checkpoint and time.perf_counter() - t_last > args.checkpoint_every:
            clock()
            save_ckpt(args.checkpoint, {"stage": "unet", "step": step, "total": budget.total, "unet": unet.state_dict(),
                                        "text_encoder": text_encoder.state_dict(), "unet_opt": opt.state_dict(),
                                        "ema": [e.cpu() for e in ema], "report": report, **base})
            t_last = time.perf_counter()
    report["unet_steps"] = budget.total
    clock()
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    unet.eval(), text_encoder.eval()


# -- sampling and report ----------------------------------------------------------------------------
@torch.no_grad()
def sample(unet, text_encoder, vae, tokens_of, prompts: list[str], *, n_per_prompt=2, steps=40, cfg=4.0,
           seed=0, device="cpu", camera: torch.Tensor | None = None) -> torch.Tensor:
    """DDIM samples (len(prompts) * n_per_prompt, 3, H, W) in [0, 1], prompt-major, at the UNet's latent size.
    ``camera`` (1, 16): the ``camera_condition`` every sample is drawn from, for a camera-aware UNet; (V, 16):
    a multi-view UNet's V views, each sample then V images of one object (len(prompts) * n_per_prompt * V)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**M.SCHEDULER_CONFIG)
    sched.set_timesteps(steps)
    views = 1 if camera is None else len(camera)
    n = len(prompts) * n_per_prompt * views
    cond = text_encoder(tokens_of(prompts).to(device))[0].repeat_interleave(n_per_prompt * views, 0)
    uncond = text_encoder(tokens_of([""]).to(device))[0].expand_as(cond)
    g = torch.Generator(device=device).manual_seed(seed)
    side = int(unet.config.sample_size)
    z = torch.randn(n, int(unet.config.in_channels), side, side, generator=g, device=device)
    for t in sched.timesteps:
        inp = torch.cat([z, z])
        labels = None if camera is None else camera.to(device).repeat(len(inp) // views, 1)
        eps = unet(inp, t.to(device), encoder_hidden_states=torch.cat([cond, uncond]), class_labels=labels).sample
        e_c, e_u = eps.chunk(2)
        z = sched.step(e_u + cfg * (e_c - e_u), t, z).prev_sample
    img = vae.decode(z / vae.config.scaling_factor).sample
    return ((img + 1) / 2).clamp(0, 1)


def report_camera(views: int = 1) -> torch.Tensor:
    """The camera a camera-aware prior's report samples are drawn from: the preview's 3/4 view (15 degrees
    up, azimuth 30) at the prior's distance and field of view; a multi-view prior's ``views`` views from
    there around the object."""
    from backend.prior import CAMERA

    cams = orbit_cameras(15.0, [30.0 + k * 360.0 / views for k in range(views)], CAMERA["distance_min"],
                         CAMERA["fovy_min"])
    return camera_condition(cams.c2w)


def grid_png(images: torch.Tensor, cols: int, path: Path, upscale: int = 2, pad: int = 2) -> None:
    from PIL import Image

    imgs = (images.permute(0, 2, 3, 1).float().cpu().numpy() * 255 + 0.5).astype(np.uint8)
    n, h, w, _ = imgs.shape
    rows = math.ceil(n / cols)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(imgs):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im
    Image.fromarray(canvas).resize((canvas.shape[1] * upscale, canvas.shape[0] * upscale), Image.NEAREST).save(path)


def _thin(curve: list, n: int) -> list:
    rows = curve[:: max(1, len(curve) // n)]
    return rows + curve[-1:] if curve and rows[-1] is not curve[-1] else rows


def write_report(out: Path, report: dict) -> None:
    lines = ["# Built-in prior: training report", "",
             f"- device: {report['device']}; total time {report['timings']['total_s']:.0f} s "
             f"(render {report['timings']['render_s']:.0f} s, VAE {report['timings'].get('vae_s', 0.0):.0f} s, "
             f"UNet {report['timings'].get('unet_s', 0.0):.0f} s)",
             *([f"- fine-tuned from `{report['init_from']}` (its VAE kept)"] if report.get("init_from") else []),
             f"- architecture: {report['architecture']} ({report['latent_size']}x{report['latent_size']} latents)",
             f"- images: {report['images']} at {report['image_size']} px; batch VAE {report['args']['vae_batch']}, "
             f"UNet {report['args']['unet_batch']}",
             f"- parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in report["params"].items()),
             f"- VAE scaling_factor: {report['scaling_factor']:.4f}",
             f"- command: `{report['command']}`", "",
             "## VAE (reconstruction L1+L2, KL per latent dimension)", "", "| step | rec | KL/dim |", "|---:|---:|---:|"]
    for row in _thin(report["vae_curve"], 15):
        lines.append(f"| {row['step']} | {row['rec']:.4f} | {row['kl_per_dim']:.3f} |")
    lines += ["", "## UNet + text encoder (epsilon MSE; by timestep decile 0-99 ... 900-999)", "",
              "| step | loss | " + " | ".join(f"t{d}" for d in range(10)) + " |", "|---:|---:|" + "---:|" * 10]
    for row in _thin(report["unet_curve"], 20):
        lines.append(f"| {row['step']} | {row['loss']:.4f} | " + " | ".join(f"{v:.3f}" for v in row["loss_by_t_decile"]) + " |")
    lines += ["", "## Images", "",
              "- `data.png`: training images (rows of 8).",
              "- `vae_recon.png`: VAE reconstructions: odd rows originals, even rows reconstructions."]
    if report["samples"]["per_prompt"]:
        views = report.get("num_views", 1)
        per_row = SAMPLE_COLUMNS if views == 1 else f"4 (each sample {views} views of one object, 15 degrees up, from azimuth 30)"
        lines += [f"- `samples.png`: {report['samples']['per_prompt']} DDIM samples ({report['samples']['steps']} steps, "
                  f"CFG {report['samples']['cfg']}) per prompt, {per_row} prompts a row, in the order of "
                  f"`grammar.benchmark_prompts()`: the 7 solids in 8 colours, then every prop in its default look:",
                  "", ", ".join(benchmark_prompts())]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "train_log.json").write_text(json.dumps(report, indent=1))


# -- main -------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_run_arguments(p, "images")
    p.add_argument("--architecture", choices=sorted(M.ARCHITECTURES), default=M.DEFAULT_ARCHITECTURE,
                   help="v3: the shipped prior, 16x16 latents; v4: 32x32 latents for thin parts; v5: v4 with "
                        "captions that name the shading (generate with shading_prompt on); v6: v3 that also reads "
                        "the camera (shipped); v7: v5 with the camera; v8: v4 with the camera; v9: the shipped shape "
                        "prior; v10: v9 with filled captions; v11: v9 with multi-view attention over four views "
                        "(model.py)")
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--render-minutes", type=float, default=1.0, help="render fewer images if these would take longer")
    p.add_argument("--render-chunk", type=int, default=2048,
                   help="images rendered per batch (each category is traced once per batch: big batches "
                        "keep a GPU busy)")
    p.add_argument("--vae-minutes", type=float, default=1.2)
    p.add_argument("--vae-steps", type=int, default=None)
    p.add_argument("--vae-batch", type=int, default=128)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=3e-5)
    p.add_argument("--unet-minutes", type=float, default=4.5)
    p.add_argument("--unet-steps", type=int, default=None)
    p.add_argument("--unet-batch", type=int, default=256)
    p.add_argument("--unet-lr", type=float, default=5e-4)
    p.add_argument("--samples-per-prompt", type=int, default=2,
                   help="DDIM samples per benchmark prompt in report/samples.png (0: no samples.png)")
    p.add_argument("--sample-steps", type=int, default=40, help="DDIM steps of the report's samples")
    p.add_argument("--sample-cfg", type=float, default=4.0)
    p.add_argument("--init-from", type=Path, default=None, metavar="WEIGHTS",
                   help="fine-tune: start from this prior's folder (its tokenizer, text encoder, VAE and UNet; "
                        "the VAE is kept, not trained). A camera-aware architecture on a text-only prior gets its "
                        "camera projection zero-initialised, so it starts as that prior")
    p.add_argument("--elevation-max", type=float, default=None, metavar="DEGREES",
                   help="the training cameras' highest elevation (default: the engine's, 45): a prior that has seen "
                        "objects from higher up can guide generation with cameras up there (a cup's inside is in view)")
    p.add_argument("--categories", default=None, metavar="NAMES",
                   help="render only these categories (comma-separated catalogue names, e.g. cube,pyramid)")
    p.add_argument("--centred-proportions", type=float, default=0.0, metavar="SHARE",
                   help="the share of objects drawn from the middle third of their proportions' ranges (integer "
                        "parameters: their canonical value) instead of uniformly over them; 0-1, default 0 (every "
                        "prior before v9d): a prompt names no proportions, so what the prior draws most is its typical prop")
    args = p.parse_args(argv)
    if not 0.0 <= args.centred_proportions <= 1.0:
        p.error(f"--centred-proportions must be in [0, 1], got {args.centred_proportions}")
    if args.elevation_max is not None and not 45.0 <= args.elevation_max <= 89.0:
        p.error(f"--elevation-max must be in [45, 89] degrees, got {args.elevation_max}")
    if args.categories is not None:
        from backend.prior.catalogue import CATEGORIES as ALL

        names = [n.strip() for n in args.categories.split(",") if n.strip()]
        unknown = sorted(set(names) - {c.name for c in ALL})
        if not names or unknown:
            p.error(f"--categories must name catalogue categories ({', '.join(c.name for c in ALL)}), got {unknown or names}")
        args.categories = names
    if args.init_from is not None and not (args.init_from / "model_index.json").is_file():
        p.error(f"--init-from must be a prior's diffusers folder (with model_index.json), got {args.init_from}")
    if args.samples_per_prompt < 0:
        p.error(f"--samples-per-prompt must be >= 0 (0: no samples.png), got {args.samples_per_prompt}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    dev = training_device(args.device)
    out = args.out
    arch = M.architecture(args.architecture)

    def same_architecture(ckpt: dict) -> None:
        # Checkpoints written before --architecture existed are v3's.
        ckpt_arch = (ckpt.get("report") or {}).get("architecture", "v3")
        if ckpt and ckpt_arch != arch.name:
            raise SystemExit(f"--architecture {arch.name} does not match the checkpoint {args.checkpoint} "
                             f"(architecture {ckpt_arch}): pass --architecture {ckpt_arch} or another --checkpoint")

    opened = open_run(args, dev, PROG, argv, lambda: {"vae_curve": [], "unet_curve": []}, check=same_architecture)
    if opened is None:
        return 0
    ckpt, report = opened
    report.update(architecture=arch.name, image_size=arch.image_size, latent_size=arch.latent_size,
                  num_views=arch.num_views)
    if args.unet_batch % arch.num_views:
        raise SystemExit(f"--unet-batch must be a multiple of architecture {arch.name}'s {arch.num_views} views of an "
                         f"object, got {args.unet_batch}")
    stage = ckpt.get("stage")
    timings = report["timings"]

    images, labels, *rest = rendered_data(args.data_cache, dev, lambda: render_dataset(
        args.images, dev, chunk=args.render_chunk, seed=args.seed, minutes=args.render_minutes,
        image_size=arch.image_size, categories=args.categories, p_filled=P_FILLED if arch.filled_captions else 0.0,
        elevation_max=args.elevation_max, views_per_object=arch.num_views,
        shadings=arch.shadings if arch.num_views > 1 or arch.render_own_shadings else None,
        centred=args.centred_proportions),
        timings, "images")
    cameras = rest[0] if rest and arch.camera_condition else None
    if arch.camera_condition and cameras is None:
        raise SystemExit(f"--data-cache {args.data_cache} was rendered before cameras were kept; architecture "
                         f"{arch.name} is conditioned on the camera: pass another --data-cache")
    if arch.shading_captions and labels.shape[1] < 3:
        raise SystemExit(f"--data-cache {args.data_cache} was rendered before shading labels were kept; "
                         f"architecture {arch.name} captions the shading: pass another --data-cache")
    if arch.filled_captions and labels.shape[1] < 4:
        raise SystemExit(f"--data-cache {args.data_cache} was rendered before filled cups were drawn; architecture "
                         f"{arch.name} learns them by name: pass another --data-cache")
    if images.shape[-1] != arch.image_size:
        raise SystemExit(f"--data-cache {args.data_cache} holds {images.shape[-1]} px images; architecture "
                         f"{arch.name} trains on {arch.image_size} px: pass another --data-cache")
    if arch.num_views > 1 and not grouped(labels, arch.num_views):
        raise SystemExit(f"--data-cache {args.data_cache} holds single views, not groups of {arch.num_views} views of one "
                         f"object; architecture {arch.name} learns from whole objects: pass another --data-cache")
    report["images"] = len(images)
    if args.elevation_max is not None:
        report["elevation_max"] = args.elevation_max
    if args.centred_proportions:
        report["centred_proportions"] = args.centred_proportions
    grid_png(images[:64].float() / 255, 8, out / "report" / "data.png")

    torch.manual_seed(args.seed)
    tok_dir = out / "_tokenizer"
    tokenizer = M.build_tokenizer(tok_dir, arch.name)
    vae, unet = M.build_vae(arch.name).to(dev), M.build_unet(arch.name).to(dev)
    text_encoder = M.build_text_encoder(tokenizer).to(dev)
    report["params"] = {"vae": M.n_params(vae), "vae_encoder": M.n_params(vae.encoder), "unet": M.n_params(unet),
                        "text_encoder": M.n_params(text_encoder)}
    log("parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in report["params"].items()))

    if stage in (None, "vae") and args.init_from is not None:
        tokenizer = init_from(args.init_from, vae, unet, text_encoder, tokenizer)
        report["init_from"] = str(args.init_from)
        log(f"initialised from {args.init_from} (its VAE is kept)")
    elif stage in (None, "vae"):
        train_vae(vae, images, args, ckpt, report)
    else:
        if args.init_from is not None and stage == "unet_start":
            tokenizer = init_from(args.init_from, vae, unet, text_encoder, tokenizer)   # the UNet's start again
        vae.load_state_dict(ckpt["vae_final"])
        log(f"resumed from {args.checkpoint} (stage {stage}, step {ckpt.get('step', 0)})")

    means, stds = encode_all(vae, images)
    # A fine-tune keeps its prior's latent scale: its UNet was trained on latents of that scale.
    scale = float(ckpt.get("scale") or (vae.config.scaling_factor if args.init_from is not None
                                        else 1.0 / means.std().item()))
    vae.register_to_config(scaling_factor=scale)
    report["scaling_factor"] = scale
    log(f"latents {tuple(means.shape)}, std {means.std().item():.3f}, posterior std {stds.mean().item():.4f}, "
        f"scaling_factor {scale:.4f}")
    base = {"vae_final": {k: v.cpu() for k, v in vae.state_dict().items()}, "scale": scale}
    if stage in (None, "vae"):
        save_ckpt(args.checkpoint, {"stage": "unet_start", **base, "report": report})
    with torch.no_grad():
        k = min(8, len(images))
        recon = vae.decode(vae.encode(to_float(images[:2 * k])).latent_dist.mean).sample
    originals = images[:2 * k].float() / 255
    recon = ((recon + 1) / 2).clamp(0, 1).float()
    rows = [originals[:k], recon[:k], originals[k:], recon[k:]]
    grid_png(torch.cat([r for r in rows if len(r)]), k, out / "report" / "vae_recon.png")

    captions = caption_table(arch.shading_captions, arch.filled_captions)
    tokens = M.tokenize(tokenizer, captions).to(dev)
    train_unet(unet, text_encoder, tokens, means, stds, labels, scale, args,
               ckpt if stage == "unet" else {}, report, base, cameras)
    t_after_unet = time.perf_counter()

    vae.eval()
    if args.samples_per_prompt:
        tokens_of = lambda texts: M.tokenize(tokenizer, texts)
        samples = sample(unet, text_encoder, vae, tokens_of, benchmark_prompts(), n_per_prompt=args.samples_per_prompt,
                         steps=args.sample_steps, cfg=args.sample_cfg, device=dev, seed=args.seed,
                         camera=report_camera(arch.num_views) if arch.camera_condition else None)
        # a multi-view prior's samples: each object's views side by side, 4 prompts a row
        cols = SAMPLE_COLUMNS * args.samples_per_prompt if arch.num_views == 1 else 4 * arch.num_views * args.samples_per_prompt
        grid_png(samples, cols, out / "report" / "samples.png")
    report["samples"] = {"per_prompt": args.samples_per_prompt, "steps": args.sample_steps, "cfg": args.sample_cfg}

    weights = M.save_pipeline(out / "weights", vae=vae.float().cpu(), unet=unet.float().cpu(),
                              text_encoder=text_encoder.float().cpu(), tokenizer=tokenizer, num_views=arch.num_views)
    shutil.rmtree(tok_dir, ignore_errors=True)
    # Over all the commands of a resumed run: the stages' own clocks, plus this command's sampling
    # and saving (set-up and data loading of each command are left out).
    timings["total_s"] = (timings.get("render_s", 0.0) + timings.get("vae_s", 0.0) + timings.get("unet_s", 0.0)
                          + time.perf_counter() - t_after_unet)
    write_report(out / "report", report)
    size = sum(f.stat().st_size for f in weights.rglob("*") if f.is_file())
    log(f"saved {weights} ({size / 1e6:.1f} MB) and {out / 'report'} in {timings['total_s']:.0f} s")
    mark_done(args, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
