"""``python -m backend bench speed``: the GPU speed and memory benchmark, all in one run.

Measures, with an SD-1.5-architecture pipeline built from its configuration (random weights,
real FLOPs) and loaded through the engine's own ``from_pretrained`` path:
  (a) the bound: UNet CFG-pair forward + VAE encoder forward/backward alone;
  (b)/(c) the full SDS step at 64^2, 128^2, 256^2, 512^2 renders (batch 1, default settings);
  (d) peak GPU memory of each;
  (e) export time at 256^3 / 50k faces / 1024^2;
  (f) the default schedule timed over >= 1,000 real steps, projected to 10,000;
and the same SDS step with the built-in prior. The levers are measured A/B in the same process: the
UNet eager vs CUDA graph, the VAE encoder's attention (SDPA vs plain matmul), torch.compile and
channels_last, and the 64^2 step with the other sampler (``sampling``); ``--ab KEY=VALUE[,...]`` adds
a row of the first stage with those settings (e.g. the issue-13 levers ``field_precision``,
``compile_render``, ``vae_channels_last`` switched one at a time). Writes ``single.json`` (data
and its markdown under ``table_md``), then assembles ``report.md``/``report.json`` from the section
files present (``backend.bench.speed_report``).

Device run (one call): ``python -m backend bench speed --no-prior`` (~5 minutes on an H200).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from backend.engine.cameras import VIEW_SUFFIXES
from backend.engine.trainer import resolve_sampling
from shared.settings import GenerationSettings

PROMPT = "a weathered wooden barrel"
JUMP_WARMUP = 30          # unmeasured steps after each jump of the long run's step counter (long_run)


def cuda_ms(fn, *, warmup: int = 3, repeat: int = 20) -> float:
    """Median wall time of ``fn`` in ms, synchronising around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure_bound(guidance, batch: int = 1) -> dict:
    """UNet CFG pair + VAE encoder fwd/bwd at the guidance resolution: what SDS cannot go under."""
    device, res = guidance.device, guidance.resolution
    emb = guidance.encode_prompts(PROMPT, "", VIEW_SUFFIXES)
    cond, uncond = emb.for_views(["front"] * batch)
    latent = res // guidance.vae_scale
    noisy = torch.randn(batch, 4, latent, latent, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    image = torch.rand(batch, 3, res, res, device=device, requires_grad=True)

    def unet():
        guidance.predict_noise(noisy, t, cond, uncond, 100.0)

    def vae():
        guidance.encode_images(image).float().sum().backward()

    unet_ms, vae_ms = cuda_ms(unet), cuda_ms(vae)
    return {"unet_cfg_ms": unet_ms, "vae_encode_fwd_bwd_ms": vae_ms, "bound_ms": unet_ms + vae_ms,
            "resolution": res, "batch": batch}


def bound_variants(guidance, settings: GenerationSettings, compile_vae: bool = True) -> dict:
    """The bound's two parts under the levers that act on them, A/B in one process: the UNet eager vs
    replayed from a CUDA graph; the VAE encoder with SDPA vs plain-matmul attention (eager, and
    the default, compiled), and with channels_last weights. Leaves the guidance configured for
    ``settings``."""
    rows = {}
    for use_graphs in (False, True):
        # eager VAE here: its compile is timed below, with its own variant
        guidance.configure(settings.replace(cuda_graphs=use_graphs, compile_vae=False))
        rows["unet_graph" if use_graphs else "unet_eager"] = measure_bound(guidance)["unet_cfg_ms"]
    # channels_last first: it rewrites the weights, which a compiled encoder must not see change.
    guidance.configure(settings.replace(vae_attention="sdpa", compile_vae=False))
    guidance.vae.to(memory_format=torch.channels_last)
    rows["vae_sdpa_channels_last"] = measure_bound(guidance)["vae_encode_fwd_bwd_ms"]
    guidance.vae.to(memory_format=torch.contiguous_format)
    # (attention, compiled, channels_last); channels_last acts with the compile only (vae_channels_last)
    variants = [("sdpa", False, False), ("matmul", False, False)] + (
        [("matmul", True, False), ("matmul", True, True)] if compile_vae else [])
    for attention, compiled, channels_last in variants:
        name = f"vae_{attention}_{'compiled' if compiled else 'eager'}" + ("_channels_last" if channels_last else "")
        try:
            guidance.configure(settings.replace(vae_attention=attention, compile_vae=compiled,
                                                vae_channels_last=channels_last))
            t0 = time.perf_counter()
            image = torch.rand(1, 3, guidance.resolution, guidance.resolution, device=guidance.device,
                               requires_grad=True)
            guidance.encode_images(image).float().sum().backward()        # compiles, if compiled
            torch.cuda.synchronize()
            if compiled:
                rows[f"{name}_compile_s" if channels_last else "vae_compile_s"] = time.perf_counter() - t0
                rows["vae_compile_fell_back"] = not guidance.compile_vae
            rows[name] = measure_bound(guidance)["vae_encode_fwd_bwd_ms"]
        except Exception as exc:                  # noqa: BLE001 - a lever that fails is a reading too
            rows[name + "_error"] = repr(exc)[:300]
    guidance.configure(settings)
    rows["vae_default"] = (f"{guidance.vae_attention}, {'compiled' if guidance.compile_vae else 'eager'}"
                           + (", channels_last" if guidance.vae_channels_last else ""))
    return rows


def hashgrid_micro(device, n_points: int = 262144) -> dict:
    """Forward+backward of the default 16-level encoder on ``n_points`` points: PyTorch vs fused."""
    from backend.engine.hashgrid import HashGridEncoding

    x = torch.rand(n_points, 3, device=device) * 2 - 1
    out = {"points": n_points}
    for fused in (False, True):
        enc = HashGridEncoding(fused=fused).to(device)
        for jac in (False, True):
            def run():
                if jac:
                    f, j = enc.forward_with_jacobian(x)
                    (f.sum() + j.sum()).backward()
                else:
                    enc(x).sum().backward()
            out[f"{'fused' if fused else 'torch'}_{'with_jacobian' if jac else 'features'}_ms"] = cuda_ms(run)
    return out


def profile_steps(trainer, n: int = 10, save_to: Path | None = None) -> dict:
    """Where a step's GPU time goes: top kernels by device time, and GPU-busy vs wall time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    time_steps(trainer, 3)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        time_steps(trainer, n, block=n)
    wall = (time.perf_counter() - t0) * 1000 / n
    # Kernel events only (CPU ops also carry the device time of what they launched).
    events = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA and e.self_device_time_total > 0]
    busy = sum(e.self_device_time_total for e in events) / 1000 / n
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:15]
    if save_to is not None:               # the whole table, for reading later (the report keeps the top 15)
        save_to.write_text(prof.key_averages().table(sort_by="self_device_time_total", row_limit=80,
                                                     max_name_column_width=120))
    return {"steps": n, "wall_ms_per_step": wall, "gpu_busy_ms_per_step": busy,
            "top": [{"name": e.key[:90], "ms_per_step": e.self_device_time_total / 1000 / n,
                     "calls_per_step": e.count / n} for e in top]}


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_steps(trainer, n: int, start_step: int | None = None, block: int = 1) -> list[float]:
    """Per-step ms of ``n`` steps, timed in blocks of ``block`` steps with one synchronisation per
    block: a real run never waits for the GPU between steps (the CPU queues the next step while the
    GPU finishes the last), so a sync per step would add a bubble that training does not have."""
    if start_step is not None:
        trainer.step = start_step
    synchronize()
    times = []
    for _ in range(max(1, n // block)):
        t0 = time.perf_counter()
        for _ in range(block):
            trainer.train_step()
        synchronize()
        times.append((time.perf_counter() - t0) * 1000 / block)
    return times


def step_at_resolution(guidance, model: str, stage: str, device, warmup: int = 30, repeat: int = 60,
                       profile: bool = False, profile_path: Path | None = None, **overrides) -> dict:
    from backend.engine.trainer import Trainer

    settings = GenerationSettings.from_dict({"prompt": PROMPT, "model": model, "resolution_schedule": stage,
                                             **overrides})
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    row = {"stage": stage}
    try:
        trainer = Trainer(settings, guidance, device)
        time_steps(trainer, warmup)                           # occupancy warm-up, allocator, autotune
        block = 1 if repeat < 30 else 10
        albedo = time_steps(trainer, repeat, block=block)
        # The shaded steps' own warm-up: their first steps compile the lit/textureless renders
        # (compile_render) and must not land in the measured blocks.
        time_steps(trainer, min(warmup, 16), start_step=settings.albedo_warmup_steps + 1000)
        mixed = time_steps(trainer, repeat, block=block)
        row.update(albedo_ms=statistics.median(albedo), mixed_ms=statistics.median(mixed),
                   peak_gb=torch.cuda.max_memory_allocated() / 2**30, overrides=overrides)
        if profile:
            try:
                row["profile"] = profile_steps(trainer, save_to=profile_path)
            except Exception as exc:        # noqa: BLE001 - the profile is a reading aid; keep the timings
                row["profile_error"] = repr(exc)
    except torch.OutOfMemoryError:
        row.update(albedo_ms=None, mixed_ms=None, peak_gb=None, error="CUDA out of memory")
    return row


def long_run(guidance, model: str, device, total_measured: int = 1200, jump_warmup: int = JUMP_WARMUP,
             **overrides) -> dict:
    """Time real steps from three parts of the default 10k schedule and project the whole run.

    Each later segment starts by jumping the step counter, which changes the active hash levels and the
    shading mix at once: the ``jump_warmup`` steps after a jump are run unmeasured, or the segment
    would carry the CUDA graphs of the training render captured again for its levels and shadings
    (``graph_render``: ~3 captures of 0.1-0.3 s in 200 steps, +3-8 ms a step in session 37's run) that a
    real run spreads over its 10,000 steps (``tools/device/full_run.py`` times the schedule whole)."""
    from backend.engine.trainer import Trainer

    settings = GenerationSettings.from_dict({"prompt": PROMPT, "model": model, **overrides})
    trainer = Trainer(settings, guidance, device)
    per = total_measured // 3
    # (start of the measured segment, first and last step of the schedule it stands for)
    segments = [(0, 0, settings.albedo_warmup_steps), (4000, settings.albedo_warmup_steps, 7000),
                (8000, 7000, settings.steps)]
    projected, measured = 0.0, []
    for start, lo, hi in segments:
        if start and jump_warmup:   # the jump, then steps of the segment's own levels and shadings, unclocked
            time_steps(trainer, jump_warmup, start_step=start)
            clock_start = trainer.step
            times = time_steps(trainer, per, block=per)
        else:
            clock_start = start
            times = time_steps(trainer, per, start_step=start, block=per)
        mean_ms = sum(times) / len(times)
        measured.append({"start": start, "clock_start": clock_start, "steps": per, "mean_ms": mean_ms,
                         "represents": [lo, hi]})
        projected += mean_ms * (hi - lo) / 1000
    return {"measured_steps": per * 3, "segments": measured, "projected_10k_s": projected,
            "overrides": overrides}


TARGET_10K_S = 300.0          # issue 13: 10k default steps in <= 5 minutes
TARGET_BOUND_RATIO = 1.3      # issue 13: the default step at <= 1.3x the bound


def whole_run_section(run: dict) -> dict:
    """The speed report's section for the default schedule timed whole (``tools/device/full_run.py``'s
    ``full_run.json``: steps 1 to 10,000 of one run, the set-up step apart), beside what the cost model
    estimated for those steps; ``run`` with its ``table_md`` (``backend.bench.speed_report``)."""
    steps, wall = run["steps_timed"], run["elapsed_s"]
    minutes = run["projected_10k_s"] / 60
    complete = "" if run.get("complete") else f" (stopped after {steps} steps: projected)"
    met = "met" if run["projected_10k_s"] <= TARGET_10K_S else "not met"
    est = run.get("estimated_steps_s")
    est_cells = (f"{est:.1f} s | {100 * run['estimate_error']:+.0f}%" if est is not None
                 else f"- | - ({run.get('estimate_failed', 'not computed')})")
    marks = run.get("marks", [])
    # after the albedo warm-up (the step the single-job table sets against the bound), from the marks around it
    warm = run.get("albedo_warmup_steps", 2000)
    at = {m["step"]: m["elapsed_s"] for m in marks}
    after_ms = (1000 * (at[max(at)] - at[warm]) / (max(at) - warm)) if warm in at and max(at) > warm else None
    bound = (run.get("bound") or {}).get("bound_ms")
    if bound and after_ms:
        b = run["bound"]
        ratio = after_ms / bound
        bound_line = (f"Bound read in the same process after the run (UNet CFG pair {b['unet_cfg_ms']:.1f} + VAE encode "
                      f"fwd/bwd {b['vae_encode_fwd_bwd_ms']:.1f} ms, each its lowest of {len(b.get('readings', []))}): "
                      f"**{bound:.1f} ms**; steps {warm}-{max(at)} (after the albedo warm-up) {after_ms:.1f} ms a step = "
                      f"**{ratio:.2f}x** the bound (target <= {TARGET_BOUND_RATIO}x: "
                      f"**{'met' if ratio <= TARGET_BOUND_RATIO else 'not met'}**).")
    else:
        bound_line = ("No bound read on this instance" + (f" ({run['bound_failed']})" if run.get("bound_failed") else "")
                      + (f"; steps {warm}-{max(at)} (after the albedo warm-up) {after_ms:.1f} ms a step." if after_ms
                         else "."))
    rates, last = [], (1, 0.0)
    for m in marks:                                   # ms a step within each 500-step stretch
        rates.append(f"{m['step']}: {1000 * (m['elapsed_s'] - last[1]) / max(1, m['step'] - last[0]):.1f}")
        last = (m["step"], m["elapsed_s"])
    lines = [f"# The default schedule timed whole: {run['device']}", "",
             "One run of the default settings (Stable Diffusion 1.5 architecture, `64x1`, 10,000 steps), step 1 "
             "to the last, as a user's run takes them (`tools/device/full_run.py`); the first step (the VAE "
             f"encoder's compile, the UNet's graph capture: {run['setup_s']:.1f} s) is set-up, as in `bench speed`. "
             "Previews, checkpoints and the export are not in it (`bench cost` measures them).", "",
             "| steps timed | wall (s) | ms/step | 10,000 steps | target | with the set-up step | cost model's "
             "estimate of these steps | its error |", "|---:|---:|---:|---:|---|---:|---:|---:|",
             f"| {steps} | {wall:.1f} | {run['ms_per_step']:.1f} | **{minutes:.2f} min**{complete} | <= 5 min: "
             f"**{met}** | {(run['projected_10k_s'] + run['setup_s']) / 60:.2f} min | {est_cells} |", "",
             bound_line, "",
             f"Peak GPU memory {run['peak_gb']:.2f} GB. ms a step by the step each 500-step stretch ends at: "
             + ", ".join(rates) + "."]
    return {**run, "table_md": "\n".join(lines)}


def export_time(guidance, model: str, device) -> dict:
    """Export of a briefly trained field at the default 256^3 / 50k faces / 1024^2."""
    from backend.engine.trainer import Trainer

    settings = GenerationSettings.from_dict({"prompt": PROMPT, "model": model, "steps": 10000})
    trainer = Trainer(settings, guidance, device)
    time_steps(trainer, 20)
    t0 = time.perf_counter()
    result = trainer.export()
    return {"total_s": time.perf_counter() - t0, "stages": result.timings, "faces": result.n_faces,
            "settings": "256^3 / 50k faces / 1024^2"}


def versions() -> dict:
    import diffusers

    out = {"torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
           "device": torch.cuda.get_device_name(), "cuda": torch.version.cuda}
    try:
        import triton

        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    try:
        import nerfacc

        out["nerfacc"] = nerfacc.__version__
    except ImportError:
        out["nerfacc"] = None
    return out


def default_readings(report: dict) -> dict[str, list[float]]:
    """Every reading this run took of the bound's two parts in their default configuration: the bound's own
    (``report["bound"]``) and the lever A/B's row of the same configuration (``report["bound_variants"]``:
    the UNet replayed from a graph or eager, as ``cuda_graphs``; the VAE as ``vae_default`` names it)."""
    b, bv = report["bound"], report.get("bound_variants") or {}
    unet_key = "unet_graph" if report.get("cuda_graphs") else "unet_eager"
    default = [part.strip() for part in str(bv.get("vae_default", "")).split(",") if part.strip()]
    vae_key = "vae_" + "_".join(default) if default else None
    unet = [b["unet_cfg_ms"]] + ([bv[unet_key]] if isinstance(bv.get(unet_key), (int, float)) else [])
    vae = [b["vae_encode_fwd_bwd_ms"]] + ([bv[vae_key]] if vae_key and isinstance(bv.get(vae_key), (int, float)) else [])
    return {"unet": unet, "vae": vae}


def bound_of_record(report: dict) -> dict:
    """The bound the report divides by: each part at its lowest reading in this run (``default_readings``).
    Why not the bound's own reading alone: the same compiled VAE encoder read 15.5 and 12.8 ms in one process
    (session 38), and 10.8 against 12.5-13.9 in run 8; a bound is what the step cannot go under, so the
    lowest reading of the same work is the one that bounds it, and a slow reading would flatter the ratio."""
    readings = default_readings(report)
    unet, vae = min(readings["unet"]), min(readings["vae"])
    return {**report["bound"], "unet_cfg_ms": unet, "vae_encode_fwd_bwd_ms": vae, "bound_ms": unet + vae,
            "readings": readings}


def render_report(report: dict) -> str:
    v = report["versions"]
    b = bound_of_record(report)
    graphs = "UNet replayed from a CUDA graph" if report.get("cuda_graphs") else "eager"
    spread = ""
    if any(len(r) > 1 for r in b["readings"].values()):
        spread = (" — each part the lowest of this run's readings of the default configuration (UNet "
                  + " / ".join(f"{x:.1f}" for x in b["readings"]["unet"]) + ", VAE "
                  + " / ".join(f"{x:.1f}" for x in b["readings"]["vae"]) + " ms)")
    lines = [f"# Speed benchmark — {v['device']}", "", f"Versions: {json.dumps(v)}", "",
             f"Bound (UNet CFG pair + VAE encode fwd/bwd at {b['resolution']}², fp16, {graphs}): "
             f"**{b['bound_ms']:.1f} ms** (UNet {b['unet_cfg_ms']:.1f} + VAE {b['vae_encode_fwd_bwd_ms']:.1f}){spread}", ""]
    first = next((r for r in report.get("steps", []) if not r.get("variant") and r.get("mixed_ms")), None)
    lr = report.get("long_run") or {}
    if first:
        minutes = lr["projected_10k_s"] / 60 if "projected_10k_s" in lr else None
        lines += ["| bound (ms) | default step after warm-up, " + first["stage"] + " (ms) | × bound | "
                  "10,000 default steps (projected) | targets |", "|---:|---:|---:|---:|---|",
                  f"| {b['bound_ms']:.1f} | {first['mixed_ms']:.1f} | {first['mixed_ms'] / b['bound_ms']:.2f} | "
                  + (f"{minutes:.1f} min" if minutes is not None else "not run")
                  + " | ≤ 1.3× and ≤ 5 min |", ""]
    if report.get("bound_variants"):
        bv = report["bound_variants"]

        def ms(key):
            return f"{bv[key]:.1f} ms" if key in bv else "failed"
        lines += [f"Levers on the bound: UNet eager {ms('unet_eager')}, CUDA graph {ms('unet_graph')}; VAE encoder "
                  f"fwd+bwd with SDPA attention {ms('vae_sdpa_eager')}, plain-matmul attention "
                  f"{ms('vae_matmul_eager')}, matmul + torch.compile {ms('vae_matmul_compiled')}"
                  + (f" (compiled in {bv['vae_compile_s']:.0f} s, once per process and image size)"
                     if bv.get("vae_compile_s", 0) >= 1 else "")
                  + f", SDPA with channels_last {ms('vae_sdpa_channels_last')}"
                  + (f", matmul + torch.compile + channels_last {ms('vae_matmul_compiled_channels_last')}"
                     if "vae_matmul_compiled_channels_last" in bv else "")
                  + f". The bound uses {bv.get('vae_default', '?')}.", ""]
    if report.get("kernel_check"):
        kc = report["kernel_check"]
        lines += [f"Fused Triton hash grid vs the PyTorch reference (features, Jacobian, table gradient; "
                  f"{len(kc['errors'])} checks): max relative error {kc['max_rel_error']:.1e}, tolerance "
                  f"{kc.get('tolerance', 1e-3):.0e} (see `hashgrid_triton.GPU_TOLERANCE`) — "
                  f"**{'PASS' if kc['passed'] else 'FAIL'}**", ""]
    if report.get("hashgrid_micro"):
        m = report["hashgrid_micro"]
        lines += [f"Hash grid fwd+bwd, {m['points']} points, 16 levels: PyTorch {m['torch_features_ms']:.2f} ms "
                  f"(with Jacobian {m['torch_with_jacobian_ms']:.2f}), fused {m['fused_features_ms']:.2f} ms "
                  f"(with Jacobian {m['fused_with_jacobian_ms']:.2f}).", ""]
    lines += ["| render | step, albedo warm-up (ms) | step, after warm-up (ms) | × bound | peak GPU memory (GB) |",
              "|---|---|---|---|---|"]
    for row in report["steps"]:
        name = row["stage"] + (" (again)" if row.get("repeat") else "") + (
            f" ({', '.join(f'{k}={v}' for k, v in row['variant'].items())})" if row.get("variant") else "")
        if row.get("error"):
            lines.append(f"| {name} | {row['error']} | | | |")
            continue
        lines.append(f"| {name} | {row['albedo_ms']:.1f} | {row['mixed_ms']:.1f} | "
                     f"{row['mixed_ms'] / b['bound_ms']:.2f} | {row['peak_gb']:.2f} |")
    lr = report.get("long_run")
    if lr and "projected_10k_s" in lr:
        lines += ["", f"Default schedule: {lr['measured_steps']} real steps measured, projected 10,000 steps: "
                  f"**{lr['projected_10k_s'] / 60:.1f} min** (segments: "
                  + ", ".join(f"{s['mean_ms']:.1f} ms" for s in lr["segments"]) + "; mean "
                  f"{lr['projected_10k_s'] / 10:.1f} ms/step = {lr['projected_10k_s'] / 10 / b['bound_ms']:.2f}× the "
                  "bound)"]
    if report.get("export") and "total_s" in report["export"]:
        e = report["export"]
        lines += ["", f"Export ({e['settings']}): **{e['total_s']:.1f} s** "
                  f"({', '.join(f'{k} {t:.2f}' for k, t in e['stages'].items())})"]
    low = report.get("low_res_guidance")
    if low:
        lb, ls, ll = low["bound"], low["step"], low["long_run"]
        lines += ["", f"Option `guidance_resolution=256` (32² latents): bound {lb['bound_ms']:.1f} ms "
                  f"(UNet {lb['unet_cfg_ms']:.1f} + VAE {lb['vae_encode_fwd_bwd_ms']:.1f}); 64² step "
                  f"{ls['albedo_ms']:.1f} / {ls['mixed_ms']:.1f} ms ({ls['mixed_ms'] / lb['bound_ms']:.2f}× its bound); "
                  f"10,000 steps projected from {ll['measured_steps']}: **{ll['projected_10k_s'] / 60:.1f} min**"]
    prof = next((r["profile"] for r in report["steps"] if r.get("profile")), None)
    if prof:
        lines += ["", f"Profile of the first stage ({prof['steps']} steps after warm-up): wall "
                  f"{prof['wall_ms_per_step']:.1f} ms/step under the profiler, GPU busy "
                  f"{prof['gpu_busy_ms_per_step']:.1f} ms/step.", "", "| kernel / op | ms per step | calls per step |",
                  "|---|---:|---:|"]
        lines += [f"| `{t['name']}` | {t['ms_per_step']:.2f} | {t['calls_per_step']:.0f} |" for t in prof["top"]]
    if report.get("prior") and report["prior"].get("mixed_ms") is not None:
        p = report["prior"]
        lines += ["", f"Built-in prior ({p['stage']}, its preset): {p['albedo_ms']:.1f} ms / {p['mixed_ms']:.1f} ms "
                  f"per step, peak {p['peak_gb']:.2f} GB"]
    return "\n".join(lines) + "\n"


def PRIOR_PRESET_OVERRIDES() -> dict:
    """The built-in prior's own preset (its camera, budgets and render size), as the CLI applies it."""
    from backend.prior import recommended_settings

    preset = recommended_settings()
    preset.pop("resolution_schedule", None)
    # The step of the colour prior alone: this bench loads one guidance (the shape prior's share is
    # costed by `bench cost`, whose held-out rows include it).
    preset.pop("shape_model", None)
    return preset


def cpu_main(model: str, out: Path) -> int:
    """The CPU reference numbers: one 64^2 SDS step with the default settings, and the export."""
    from backend.engine.guidance import load_guidance
    from backend.engine.trainer import Trainer

    device = torch.device("cpu")
    guidance = load_guidance(model, device)
    settings = GenerationSettings.from_dict({"prompt": PROMPT, "model": model, "resolution_schedule": "64x1"})
    trainer = Trainer(settings, guidance, device)
    time_steps(trainer, 3)
    albedo = statistics.median(time_steps(trainer, 10))
    mixed = statistics.median(time_steps(trainer, 10, start_step=settings.albedo_warmup_steps + 1000))
    exported = export_time(guidance, model, device)
    report = {"device": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "model": guidance.name, "step_64_albedo_ms": albedo, "step_64_after_warmup_ms": mixed,
              "export": exported}
    text = (f"# CPU reference ({report['threads']} threads, {guidance.name})\n\n"
            f"| 64² SDS step, albedo warm-up | 64² SDS step, after warm-up | export 256³ / 50k / 1024² |\n"
            f"|---|---|---|\n| {albedo:.0f} ms | {mixed:.0f} ms | {exported['total_s']:.1f} s |\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu.json").write_text(json.dumps(report, indent=2))
    (out / "cpu.md").write_text(text)
    print(text)
    return 0


def parse_ab(text: str) -> dict:
    """``--ab``'s ``KEY=VALUE[,KEY=VALUE...]`` -> {KEY: VALUE}, each a generation setting with a valid
    value (``SettingError`` names the one that is not)."""
    variant = {}
    for item in text.split(","):
        if "=" not in item:
            raise SystemExit(f"--ab: expected KEY=VALUE[,KEY=VALUE...], got {text!r}")
        key, value = (part.strip() for part in item.split("=", 1))
        variant[key] = value
    GenerationSettings().replace(**variant)        # validates names and values
    return variant


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend bench speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/speed",
                        help="folder for single.json (this run, with its markdown in 'table_md'); report.md and "
                             "report.json are then assembled there (backend.bench.speed_report)")
    parser.add_argument("--model-dir", default="/tmp/dreamprop-sd15", help="where the SD-1.5 layout is built")
    parser.add_argument("--long-steps", type=int, default=1200, help="real steps timed for the 10k projection")
    parser.add_argument("--stages", default="64x1,128x1,256x1,512x1", help="render stages to time")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a generation setting in every measured configuration (repeatable)")
    parser.add_argument("--ab", dest="ab", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="also time the first stage with these settings changed (the guidance configured "
                             "with them too), after the default rows: one row per --ab, A/B in the same process "
                             "(repeatable; e.g. --ab field_precision=fp32 --ab compile_render=false)")
    parser.add_argument("--checkpoint-rays", type=int, default=None,
                        help="rays per activation-checkpointed chunk (the checkpoint_rays setting; default: "
                             "its default)")
    parser.add_argument("--quick", action="store_true", help="bound and render stages only (no export, no long run)")
    parser.add_argument("--no-prior", action="store_true", help="skip the built-in prior's step")
    parser.add_argument("--low-res", action="store_true",
                        help="also time the guidance_resolution=256 option (bound, step, projected 10k)")
    parser.add_argument("--cpu", action="store_true",
                        help="CPU reference only: 64^2 step and export with --cpu-model")
    parser.add_argument("--cpu-model", default="builtin", help="model for --cpu (default: the built-in prior)")
    args = parser.parse_args(argv)
    ab_rows = [parse_ab(item) for item in args.ab]          # bad names fail here, before the long set-up
    if args.cpu:
        return cpu_main(args.cpu_model, Path(args.out))
    if not torch.cuda.is_available():
        print("bench speed: needs a CUDA GPU (this machine has none; --cpu gives the CPU reference)")
        return 2
    from backend.bench.sd15 import build_sd15
    from backend.engine.guidance import load_guidance, load_guidance_for
    from backend.engine.guidance.models import builtin_available

    device = torch.device("cuda")
    overrides = dict(item.split("=", 1) for item in args.overrides)
    if args.checkpoint_rays is not None:
        overrides["checkpoint_rays"] = str(args.checkpoint_rays)
    t0 = time.perf_counter()
    model = str(build_sd15(Path(args.model_dir)))
    # The guidance's own options (CUDA graphs, resolution, weighting) as the measured runs set them.
    guide_settings = GenerationSettings.from_dict({"prompt": PROMPT, "model": model, **overrides})
    guidance = load_guidance_for(guide_settings, device)
    report = {"versions": versions(), "build_and_load_s": time.perf_counter() - t0, "overrides": overrides,
              "checkpoint_rays": guide_settings.checkpoint_rays, "cuda_graphs": guidance.use_cuda_graphs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:                       # after every part: a run cut short keeps what it measured
        (out / "single.json").write_text(json.dumps(report, indent=2))

    from backend.bench.hashgrid_check import GPU_TOLERANCE, compare_with_reference
    from backend.engine.hashgrid_triton import available as fused_available

    if fused_available():
        errors = compare_with_reference("cuda", n_points=200000)
        worst = max(errors.values())
        report["kernel_check"] = {"max_rel_error": worst, "tolerance": GPU_TOLERANCE,
                                  "passed": worst <= GPU_TOLERANCE, "errors": errors}
        print("fused hash grid vs reference: max relative error", worst, flush=True)
    report["hashgrid_micro"] = hashgrid_micro(device)
    print("hash grid", report["hashgrid_micro"], flush=True)
    report["bound_variants"] = bound_variants(guidance, guide_settings, compile_vae=not args.quick)
    report["bound"] = measure_bound(guidance)          # the default levers: what the steps below use
    print("bound", report["bound"], report["bound_variants"], flush=True)
    save()
    report["steps"] = []
    stages = args.stages.split(",")
    # The first stage again (run-to-run spread), then with the other sampler (the sample-budget A/B).
    other = "budget" if resolve_sampling(guide_settings.sampling, device) == "dynamic" else "dynamic"
    runs = ([(stage, {}) for stage in stages] + [(stages[0], {}), (stages[0], {"sampling": other})]
            + [(stages[0], variant) for variant in ab_rows])
    for i, (stage, variant) in enumerate(runs):
        big = int(stage.split("x")[0]) >= 256      # slow steps: fewer repeats keep the run in one command
        try:
            if variant:                           # guidance-side settings (vae_channels_last, ...) too
                guidance.configure(guide_settings.replace(**variant))
            row = step_at_resolution(guidance, model, stage, device, warmup=8 if big else 30,
                                     repeat=12 if big else 60, profile=(i == 0 and not args.quick),
                                     profile_path=out / f"profile-{stage}.txt",
                                     **{**overrides, **variant})
        except Exception as exc:                  # noqa: BLE001 - keep the other rows
            row = {"stage": stage, "albedo_ms": None, "mixed_ms": None, "peak_gb": None, "error": repr(exc)[:300]}
        finally:
            if variant:
                guidance.configure(guide_settings)
        row["repeat"] = i == len(stages)
        row["variant"] = variant
        print({k: v for k, v in row.items() if k != "profile"}, flush=True)
        report["steps"].append(row)
        save()
    if not args.quick:
        for name, part in (("export", lambda: export_time(guidance, model, device)),
                           ("long_run", lambda: long_run(guidance, model, device, args.long_steps, **overrides))):
            try:
                report[name] = part()
            except Exception as exc:              # noqa: BLE001
                report[name] = {"error": repr(exc)[:300]}
            print(name, report[name], flush=True)
            save()
    if args.low_res:
        # The lever on the bound itself: encode at 256^2 (32^2 latents), as an option (not the default).
        low = {**overrides, "guidance_resolution": "256"}
        guidance.configure(guide_settings.replace(guidance_resolution=256))
        report["low_res_guidance"] = {"bound": measure_bound(guidance),
                                      "step": step_at_resolution(guidance, model, stages[0], device, **low),
                                      "long_run": long_run(guidance, model, device, args.long_steps // 2, **low)}
        guidance.configure(guide_settings)
        print("guidance at 256^2", report["low_res_guidance"]["bound"], report["low_res_guidance"]["long_run"],
              flush=True)
        save()
    if builtin_available() and not (args.quick or args.no_prior):
        prior = load_guidance("builtin", device)
        report["prior"] = step_at_resolution(prior, "builtin", "32x1", device, **PRIOR_PRESET_OVERRIDES())
    report["table_md"] = render_report(report)
    save()
    from backend.bench.speed_report import assemble

    assemble(out)
    print(report["table_md"])
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
