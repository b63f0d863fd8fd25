"""Estimate a generation's time and peak memory on a device, and refuse settings that do not fit.

Which profile answers for a device:

- its own (``profiles/<slug>.json``, e.g. ``nvidia-h200.json``, ``cpu.json``): calibrated;
- a GPU without a profile: the H200 profile (else any GPU profile), its times scaled by the ratio
  of memory bandwidths when both GPUs are in ``device.BANDWIDTH_GBS`` (an SDS step is bound by
  memory traffic), unscaled otherwise; peak memory unchanged (the same tensors on any GPU). The
  estimate is labelled "uncalibrated" and says what it was scaled from: a rough figure is more use
  than none, and the label keeps it from passing as a measurement.

Memory that counts: on a GPU 92% of its total (the CUDA context and the allocator's fragmentation
are not in ``max_memory_allocated``, what the profile measures), or the limit a user gave
(``--memory-limit-gb``: e.g. leave room for Blender's own GPU memory). On the CPU nothing is
refused unless a limit is given (RAM is large and swaps rather than fails).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.cost_text import duration_text as _duration
from shared.cost_text import gigabytes_text as _gb
from shared.settings import GenerationSettings, parse_resolution_schedule

from .device import DeviceFacts
from .model import (GB, SD_ARCH, Profile, architecture, available_profiles, checkpoint_features,
                    export_features, fine_features, fine_step_settings, memory_features, predict, preview_features,
                    shape_architecture, step_features)

USABLE_GPU_SHARE = 0.92
REFERENCE_GPU = "nvidia-h200"


class NoProfile(LookupError):
    """No cost profile can answer for this device / model."""


class DoesNotFit(ValueError):
    """The settings need more memory than the device has; ``field`` names the setting to change."""

    def __init__(self, field: str, message: str, estimate: dict):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.estimate = field, message, estimate


@dataclass
class ProfileChoice:
    profile: Profile
    calibrated: bool
    time_scale: float
    note: str


def choose_profile(facts: DeviceFacts, profile_path: str | None = None) -> ProfileChoice:
    if profile_path:
        p = Profile.load(profile_path)
        same = p.slug == facts.slug
        return ProfileChoice(p, same, 1.0, "" if same else f"uncalibrated: the {p.device_name} profile given "
                             f"({profile_path}) stands for this {facts.name}")
    profiles = available_profiles()
    if facts.slug in profiles:
        return ProfileChoice(Profile.load(profiles[facts.slug]), True, 1.0, "")
    if facts.kind == "cpu":
        raise NoProfile("no CPU cost profile: fit one with `python -m backend bench cost`")
    gpu = [Profile.load(p) for p in profiles.values()]
    gpu = [p for p in gpu if p.cuda]
    if not gpu:
        raise NoProfile(f"no GPU cost profile for {facts.name}: fit one with `python -m backend bench cost`")
    ref = next((p for p in gpu if p.slug == REFERENCE_GPU), gpu[0])
    mine, theirs = facts.bandwidth_gbs, ref.data["device"].get("bandwidth_gbs")
    if mine and theirs:
        scale = theirs / mine
        note = (f"uncalibrated: {facts.name} has no profile; times scaled from the {ref.device_name} profile by "
                f"memory bandwidth ({mine:g} vs {theirs:g} GB/s)")
    else:
        scale = 1.0
        note = (f"uncalibrated: {facts.name} has no profile; the {ref.device_name} profile as is "
                f"(bandwidth unknown). Fit one: python -m backend bench cost")
    return ProfileChoice(ref, False, scale, note)


def usable_memory(facts: DeviceFacts, memory_limit_bytes: int | None = None) -> int | None:
    if memory_limit_bytes is not None:
        return int(memory_limit_bytes)
    if facts.kind == "cuda" and facts.memory_total_bytes:
        return int(facts.memory_total_bytes * USABLE_GPU_SHARE)
    return None


def _stage_spans(s: GenerationSettings):
    """(stage, first step, last step + 1) of each stage of the schedule within the run."""
    stages = parse_resolution_schedule(s.resolution_schedule)
    for i, st in enumerate(stages):
        end = stages[i + 1].start_step if i + 1 < len(stages) else s.steps
        lo, hi = min(st.start_step, s.steps), min(end, s.steps)
        if hi > lo:
            yield st, lo, hi


def peak_memory(s: GenerationSettings, profile: Profile) -> float:
    """Bytes: the largest stage's peak (the model's weights included), the fine stage's renders too."""
    coef = profile.coef("memory")
    stages = [(s, st) for st in parse_resolution_schedule(s.resolution_schedule)]
    if s.has_fine_stage:
        f = fine_step_settings(s)
        stages.append((f, f.resolution_stages[0]))
    return max(predict(coef, memory_features(x, st.resolution, st.batch_size, profile.native, profile.cuda)) * GB
               for x, st in stages)


def estimate(settings: GenerationSettings, facts: DeviceFacts, *, profile_path: str | None = None,
             memory_limit_bytes: int | None = None, checkpoints: bool = True, include_load: bool = True) -> dict:
    """Time (s) and peak memory (bytes) of ``settings`` on ``facts``'s device, with the parts of each,
    whether it fits, and how good the profile is (its error on held-out settings).

    ``checkpoints``: the run saves a checkpoint every ``checkpoint_interval`` steps (server jobs do;
    the CLI only with --checkpoint). ``include_load``: count loading the model and the first step's
    set-up (a server worker that has it loaded already skips both)."""
    s = settings
    choice = choose_profile(facts, profile_path)
    p = choice.profile
    arch = architecture(s.model)
    if not p.knows(arch):
        raise NoProfile(f"the {p.device_name} cost profile has no measurements of the {arch} architecture")
    shape = shape_architecture(s)
    if shape is not None and not p.knows(shape):
        raise NoProfile(f"the {p.device_name} cost profile has no measurements of the {shape} architecture "
                        f"(shape_model)")
    notes = [choice.note] if choice.note else []
    if arch == SD_ARCH and s.model not in ("sd15",):
        notes.append(f"model {s.model!r} costed as the Stable Diffusion 1.5 architecture")
    if shape is not None:
        notes.append(f"shape_model {s.shape_model.strip()!r} costed as the "
                     f"{'built-in prior' if shape != SD_ARCH else 'Stable Diffusion 1.5'} architecture, "
                     f"loaded beside the model")
    step_coef = p.coef("step")
    stages, steps_s = [], 0.0
    for st, lo, hi in _stage_spans(s):
        warm_end = min(max(s.albedo_warmup_steps, lo), hi)
        ms = {phase: predict(step_coef, step_features(s, st.resolution, st.batch_size, phase, p.native, cuda=p.cuda))
              * choice.time_scale for phase in (False, True)}
        secs = (warm_end - lo) * ms[False] + (hi - warm_end) * ms[True]
        steps_s += secs
        stages.append({"resolution": st.resolution, "batch": st.batch_size, "steps": hi - lo,
                       "step_ms_albedo": ms[False] * 1000, "step_ms_after_warmup": ms[True] * 1000, "seconds": secs})
    fine_s = 0.0
    if s.has_fine_stage:
        if "fine" in p.data["coefficients"]:
            fine_s = predict(p.coef("fine"), fine_features(s, step_coef, p.native, p.cuda)) * choice.time_scale
        else:
            notes.append(f"the fine stage is not in the {p.device_name} cost profile (measured since session 27: "
                         "`python -m backend bench cost --fine-only`): its time is not counted")
    if s.shape_init == "prior-hull":
        # The start's own work (DDIM samples of the prompt at 8 views, the hull, a density fit: about 15 s on a
        # 2-core CPU, seconds on a GPU; backend/engine/prior_hull.py) is in no profile's measurements yet.
        notes.append("shape_init 'prior-hull': the start from the prior's visual hull (about 15 s on a 2-core CPU, "
                     "a few seconds on a GPU) is not in the cost profile: its time is not counted")
    previews = s.total_steps // s.preview_interval if s.preview_interval else 0
    previews_s = previews * predict(p.coef("preview"), preview_features(s)) * choice.time_scale
    saves = (s.steps // s.checkpoint_interval if s.checkpoint_interval else 0) + 1 if checkpoints else 0
    checkpoints_s = saves * predict(p.coef("checkpoint"), checkpoint_features(s, cuda=p.cuda)) * choice.time_scale
    export_s = predict(p.coef("export"), export_features(s)) * choice.time_scale
    loaded = [arch] + ([shape] if shape is not None else [])
    # The load and the first step's one-off set-up (compiles, graph captures: ``bench cost``'s ``measure_setup``),
    # both paid once by a fresh process and neither by a server worker that holds the model already.
    load_s = sum(p.data["architectures"][a].get("load_s", 0.0) + p.data["architectures"][a].get("setup_s", 0.0)
                 for a in loaded) if include_load else 0.0
    if include_load and p.cuda and any("setup_s" not in p.data["architectures"][a] for a in loaded):
        notes.append(f"the first step's set-up (compiles, CUDA graph captures) is not in the {p.device_name} cost "
                     "profile (measured since session 60: `python -m backend bench cost`): its time is not counted")
    total = load_s + steps_s + fine_s + previews_s + checkpoints_s + export_s
    peak = peak_memory(s, p)
    usable = usable_memory(facts, memory_limit_bytes)
    out = {
        "device": facts.to_dict(), "profile": p.slug, "calibrated": choice.calibrated, "notes": notes,
        "architecture": arch, "time_s": total, "peak_memory_bytes": int(peak), "memory_usable_bytes": usable,
        "fits": usable is None or peak <= usable, "problem": None,
        "parts_s": {"load": load_s, "steps": steps_s, "fine": fine_s, "previews": previews_s,
                    "checkpoints": checkpoints_s, "export": export_s},
        "stages": stages, "held_out_error": p.data.get("held_out_error", {}),
    }
    if not out["fits"]:
        field, message = _remedy(s, p, peak, usable, facts)
        out["problem"] = {"field": field, "message": message}
    return out


def check_fits(settings: GenerationSettings, facts: DeviceFacts, **kw) -> dict:
    """The estimate, or DoesNotFit naming the setting to change and the value that fits."""
    est = estimate(settings, facts, **kw)
    if not est["fits"]:
        raise DoesNotFit(est["problem"]["field"], est["problem"]["message"], est)
    return est


def _remedy(s: GenerationSettings, p: Profile, peak: float, usable: int, facts: DeviceFacts) -> tuple[str, str]:
    """The first setting (render resolution, batch, samples per ray, guidance resolution) whose
    lower value fits, with the largest value that does; else the model itself."""
    where = "this GPU" if facts.kind == "cuda" else "this device"
    has = f"{where} has {_gb(usable)} GB usable"
    memory = "GPU memory" if facts.kind == "cuda" else "memory"
    stages = parse_resolution_schedule(s.resolution_schedule)
    top = max(st.resolution for st in stages)

    def fits(**changes) -> bool:
        try:
            return peak_memory(s.replace(**changes), p) <= usable
        except ValueError:
            return False

    def capped(res: int = 10**9, batch: int = 10**9) -> str:
        parts = [f"{min(st.resolution, res)}x{min(st.batch_size, batch)}" + (f"@{st.start_step}" if i else "")
                 for i, st in enumerate(stages)]
        return ",".join(parts)

    for res in [r for r in range(top - top % 32, 31, -32) if r < top] + [16]:
        if fits(resolution_schedule=capped(res=res)):
            return ("resolution_schedule", f"render resolution {top} needs ~{_gb(peak)} GB of {memory}, {has}; "
                                           f"use {res} or lower")
    top_batch = max(st.batch_size for st in stages)
    for batch in range(top_batch - 1, 0, -1):
        if fits(resolution_schedule=capped(batch=batch)):
            return ("resolution_schedule", f"batch {top_batch} needs ~{_gb(peak)} GB of {memory}, {has}; "
                                           f"use batch {batch} or lower")
    for spr in (256, 128, 64, 32, 16, 8):
        if spr < s.samples_per_ray and fits(samples_per_ray=spr):
            return ("samples_per_ray", f"{s.samples_per_ray} samples per ray need ~{_gb(peak)} GB of {memory}, "
                                       f"{has}; use {spr} or lower")
    g = s.guidance_resolution or p.native.get(architecture(s.model), 512)
    for res in (384, 256, 128, 64):
        if res < g and fits(guidance_resolution=res):
            return ("guidance_resolution", f"guidance at {g} needs ~{_gb(peak)} GB of {memory}, {has}; "
                                           f"use {res} or lower")
    return ("model", f"{s.model!r} needs ~{_gb(peak)} GB of {memory} even at the smallest settings, {has}; "
                     "use a smaller model or a larger GPU")


def summary_lines(est: dict, prompt: str = "") -> list[str]:
    """The estimate as a few lines of text (the CLI's ``--estimate``)."""
    d = est["device"]
    mem = "GPU memory" if d["kind"] == "cuda" else "memory (resident)"
    usable = est["memory_usable_bytes"]
    lines = [f"estimate{f' for {prompt!r}' if prompt else ''} on {d['name']} (cost profile {est['profile']}"
             f"{'' if est['calibrated'] else ', UNCALIBRATED'}): {_duration(est['time_s'])}, peak {mem} "
             f"~{_gb(est['peak_memory_bytes'])} GB" + (f" of {_gb(usable)} GB usable" if usable else "")]
    parts = est["parts_s"]
    stages = ", ".join(f"{s['resolution']}x{s['batch']}: {s['steps']} steps at {s['step_ms_albedo']:.0f} / "
                       f"{s['step_ms_after_warmup']:.0f} ms" for s in est["stages"])
    fine = f", fine stage {_duration(parts['fine'])}" if parts.get("fine") else ""
    lines.append(f"  load and set-up {_duration(parts['load'])}, optimisation {_duration(parts['steps'])} ({stages}; warm-up / "
                 f"after){fine}, previews {_duration(parts['previews'])}, checkpoints {_duration(parts['checkpoints'])}, "
                 f"export {_duration(parts['export'])}")
    err = est.get("held_out_error") or {}
    if err.get("step") and err.get("memory"):
        lines.append(f"  cost model error on held-out settings: step time median {err['step']['median_pct']:.0f}% "
                     f"(max {err['step']['max_pct']:.0f}%), peak memory median {err['memory']['median_pct']:.0f}% "
                     f"(max {err['memory']['max_pct']:.0f}%)")
    lines += [f"  note: {n}" for n in est["notes"]]
    if not est["fits"]:
        lines.append(f"  DOES NOT FIT: {est['problem']['field']}: {est['problem']['message']}")
    return lines
