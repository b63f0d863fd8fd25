"""``python -m backend generate "a red cube" -o out/red_cube.glb``: one generation on this machine.

``python -m backend generate --image concept.png [PROMPT] -o out.glb``: image-to-3D. The picture's
alpha channel is the object's mask (else a simple border-colour segmentation,
``backend/engine/reference_image.py``); ``guidance_type`` becomes zero123 with the project's view
prior (``--model builtin``) unless given, and a prompt, when given too, adds the text prior (joint mode).

Every generation setting in ``shared.settings.GenerationSettings`` is a flag with the same name
(underscores become dashes), default and range check as in the server and the Blender add-on.
A setting not given on the command line comes from ``shared.layering``: the model's recommended
settings (the built-in prior's own budget and camera), then ``--preset``, then the flags.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from shared.layering import resolve
from shared.settings import GenerationSettings, SettingError, groups, setting_help

GROUP_TITLES = {"prompt": "what to make", "camera": "cameras", "optim": "optimisation", "guidance": "guidance",
                "reference": "image to 3D (with --image)", "field": "field", "render": "renderer", "export": "export"}
IMAGE_GUIDANCE = "zero123"      # what --image uses unless --guidance-type says otherwise
from shared.presets import PRESETS


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # The full usage is ~80 lines of flags: point at -h instead of burying the message.
        self.exit(2, f"error: {message}\n(see: {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m backend generate",
                     description="Optimise a NeRF with Score Distillation Sampling and export a textured GLB. "
                                 "With the built-in prior (--model builtin, the default) every setting you do "
                                 "not give comes from the prior's recommended settings (a few minutes on a "
                                 "CPU), not from the defaults listed below; --preset and explicit flags win. "
                                 "--show-settings prints what a command would run.")
    parser.add_argument("prompt", nargs="?", default=None,
                        help="what to generate, e.g. 'a red cube' (--list-prompts: what the built-in prior knows)")
    parser.add_argument("--image", default=None, metavar="PICTURE",
                        help="image to 3D: a PNG/JPEG/WebP picture of one object (alpha = its mask; without alpha "
                             "the backdrop must be plain); the prompt becomes optional and, when given, adds the "
                             f"text prior (joint mode); guidance_type defaults to {IMAGE_GUIDANCE}")
    parser.add_argument("-o", "--output", default=None, help="GLB path (default: out/<prompt or picture name>.glb)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--allow-download", action="store_true",
                        help="allow fetching --model from the Hugging Face Hub (off: local folders and cache only)")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint file: saved every --checkpoint-interval steps, resumed if it exists")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="named budgets (draft, standard, high for GPUs; builtin: the built-in prior's own "
                             "settings; cpu-demo: make demo's, builtin with two views a step), over the model's "
                             "recommended settings (explicit flags still win)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--list-prompts", action="store_true",
                        help="print the built-in prior's vocabulary (every prompt it knows), one a line, and exit")
    parser.add_argument("--show-settings", action="store_true",
                        help="print the settings this command would run with (JSON) and exit, without generating")
    parser.add_argument("--estimate", action="store_true",
                        help="print the estimated time and peak memory of this command on --device and exit, "
                             "without generating (exit status 1 when it would not fit the device's memory)")
    parser.add_argument("--memory-limit-gb", type=float, default=None, metavar="GB",
                        help="memory the run may use on its device (default: 92%% of the GPU's; CPU: no limit); "
                             "settings whose estimated peak is larger are refused before anything loads")
    for group, fields in groups().items():
        if group == "prompt":
            fields = [f for f in fields if f.name != "prompt"]
        g = parser.add_argument_group(GROUP_TITLES.get(group, group))
        for f in fields:
            if f.type in ("bool", bool):
                g.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=setting_help(f))
            else:
                # Values stay strings here: shared.settings does the typing and the range check.
                g.add_argument(flag(f.name), dest=f.name, default=None, metavar=f.name.split("_")[-1].upper(),
                               help=setting_help(f))
    return parser


def explicit_settings(args: argparse.Namespace) -> dict:
    """The settings given as flags (and the prompt): only these override the preset and the model's."""
    values = {"prompt": args.prompt if args.prompt is not None else ""}
    for f in GenerationSettings.spec():
        value = getattr(args, f.name, None)
        if f.name != "prompt" and value is not None:
            values[f.name] = value
    if getattr(args, "image", None) and "guidance_type" not in values:
        values["guidance_type"] = IMAGE_GUIDANCE
    return values


def settings_from_args(args: argparse.Namespace) -> GenerationSettings:
    """The four layers of settings, the model's recommendation for the device the run will use."""
    return resolve(explicit_settings(args), preset=args.preset, device=device_kind(args.device))


def device_kind(flag: str) -> str:
    """"cpu" or "cuda..." for --device; auto decided as the run will decide it (``pick_device``)."""
    if flag != "auto":
        return flag
    import torch   # (the run imports it anyway; only bad flags, caught before this, exit sooner)

    return "cuda" if torch.cuda.is_available() else "cpu"


def list_prompts() -> int:
    from backend.prior.vocabulary import known_prompts

    print("\n".join(known_prompts()))
    return 0


def read_image(path: str, settings: GenerationSettings) -> bytes:
    """The picture's bytes, checked (decodable, size, a foreground object) before any model loads.
    Raises ImageError (field "image") or OSError."""
    from backend.engine.reference_image import prepare_reference

    data = Path(path).read_bytes()
    prepare_reference(data, fill=settings.reference_fill)
    return data


def default_output(prompt: str) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in prompt.lower()).strip("_")[:60] or "result"
    return Path("out") / f"{slug}.glb"


def generate_main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_prompts:
        return list_prompts()
    if args.prompt is None and args.image is None:
        parser.error("PROMPT: say what to generate, e.g. 'a red cube' (--list-prompts: what the built-in prior knows), "
                     "or give --image PICTURE")
    if args.device not in ("auto", "cpu", "cuda") and not args.device.startswith("cuda:"):
        parser.error(f"--device: must be auto, cpu, cuda or cuda:N, got {args.device!r}")
    try:
        settings = settings_from_args(args)
    except SettingError as e:
        name = {"prompt": "PROMPT", "settings": ""}.get(e.name, flag(e.name))
        parser.error(f"{name}: {e.message}" if name else e.message)
    image = None
    if args.image is not None:
        if not settings.is_image_job:
            parser.error(f"--image: guidance_type {settings.guidance_type!r} does not use a picture "
                         f"(--guidance-type {IMAGE_GUIDANCE})")
        from backend.engine.reference_image import ImageError

        try:
            image = read_image(args.image, settings)
        except ImageError as e:
            parser.error(f"--image: {e.message}")
        except OSError as e:
            parser.error(f"--image: cannot read {args.image!r} ({e.strerror or e})")
    elif settings.is_image_job:
        parser.error(f"--image: guidance_type {settings.guidance_type!r} needs a picture (--image PICTURE)")
    output = Path(args.output) if args.output else default_output(settings.prompt or Path(args.image).stem)
    if output.suffix.lower() != ".glb":
        parser.error(f"-o/--output: must end in .glb, got {str(output)!r}")
    text_prior = settings.text_model if settings.is_image_job else settings.model
    if text_prior == "builtin" and (not settings.is_image_job or settings.joint_text_guidance):
        from backend.prior.vocabulary import oov_warning

        warning = oov_warning(settings.prompt)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    if args.show_settings:
        print(json.dumps(settings.to_dict(), indent=2))
        return 0
    if args.memory_limit_gb is not None and not 0 < args.memory_limit_gb <= 1e5:
        parser.error(f"--memory-limit-gb: must be a number in (0, 100000], got {args.memory_limit_gb:g}")
    estimated = cost_estimate(settings, args)
    if args.estimate:
        if isinstance(estimated, str):
            print(f"error: {estimated}", file=sys.stderr)
            return 2
        from backend.cost.estimate import summary_lines

        print("\n".join(summary_lines(estimated, settings.prompt)))
        return 0 if estimated["fits"] else 1
    if isinstance(estimated, dict) and not estimated["fits"]:
        problem = estimated["problem"]
        print(f"error: {flag(problem['field'])}: {problem['message']}", file=sys.stderr)
        return 2

    # Heavy imports only after the arguments are known to be good.
    from backend.engine.api import Cancelled, ModelNotFoundError, fast_path, generate, load_guidance_for, pick_device

    try:
        device = pick_device(args.device)
        guidance = load_guidance_for(settings, device, allow_download=args.allow_download)
    except (ModelNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = fast_path(settings, device)
    what = repr(settings.prompt) if image is None else (
        f"from {args.image}" + (f" and {settings.prompt!r}" if settings.joint_text_guidance else
                                " (no prompt: the built-in prior reads one from the picture)"
                                if settings.prompt_from_picture else ""))
    print(f"generating {what}: {settings.steps} steps on {device} with {guidance.name} "
          f"(sampler: {path['sampler']}, {path['sampling']} sampling"
          f"{', render replayed from CUDA graphs' if path['render_graphs'] else ''}, hash grid: {path['hashgrid']})",
          file=sys.stderr)
    if not path["complete"]:
        print("note: the GPU fast path is not complete: install the gpu extra (pip install -e \".[gpu]\", "
              "or make setup on a machine with an NVIDIA driver)", file=sys.stderr)
    bar = _ProgressBar(settings.steps, enabled=not args.quiet)
    t0 = time.perf_counter()
    try:
        result = generate(settings, device=str(device), callback=bar, checkpoint_path=args.checkpoint,
                          guidance=guidance, reference_image=image, allow_download=args.allow_download)
    except KeyboardInterrupt:
        bar.close()
        print("\ninterrupted" + (f"; resume with the same command (checkpoint {args.checkpoint})"
                                 if args.checkpoint else ""), file=sys.stderr)
        return 130
    except Cancelled as e:
        bar.close()
        print(f"cancelled: {e}", file=sys.stderr)
        return 1
    except ValueError as e:     # e.g. an empty mesh: the message says which setting to change
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 1
    bar.close()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(result.glb)
    strip = output.with_suffix(".turntable.png")
    strip.write_bytes(result.turntable_png)
    m = result.metadata
    read = (m.get("reference") or {}).get("prompt_from_picture")
    if read and read.get("used"):
        print(f"the picture read as {read['prompt']!r} (runners-up: {', '.join(map(repr, read['runners_up']))}); "
              f"type a prompt to choose another", file=sys.stderr)
    elif read:
        print(f"the picture was too unsure to read (best guess {read['prompt']!r}): it ran on the picture alone; "
              f"type a prompt (--list-prompts) to add the text prior", file=sys.stderr)
    fill = (m.get("reference") or {}).get("fill")
    if fill and abs(fill - settings.reference_fill) > 1e-6:
        print(f"the picture was framed at {fill:.2f} of the frame, the size the built-in prior draws that object "
              f"at (instead of --reference-fill {settings.reference_fill:g})", file=sys.stderr)
    print(f"wrote {output} ({m['faces']} faces, {len(result.glb) / 1e6:.1f} MB) and {strip} "
          f"in {time.perf_counter() - t0:.0f} s ({m['timings']['s_per_step'] * 1000:.0f} ms/step, "
          f"export {m['timings']['export_s']:.1f} s)")
    return 0


def cost_estimate(settings: GenerationSettings, args: argparse.Namespace) -> dict | str:
    """The estimate on --device, or why there is none (no profile for this device or model). Pure
    Python: answers before torch or the model load."""
    from backend.cost import NoProfile, estimate, local_device

    try:
        facts = local_device(args.device)
        return estimate(settings, facts, checkpoints=bool(args.checkpoint),
                        memory_limit_bytes=None if args.memory_limit_gb is None else int(args.memory_limit_gb * 2**30))
    except (NoProfile, ValueError) as e:
        return str(e)


class _ProgressBar:
    """tqdm bar driven by the engine's progress events: step / total, losses, ETA."""

    def __init__(self, total: int, enabled: bool = True):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", disable=not enabled, dynamic_ncols=True, file=sys.stderr)

    def __call__(self, event) -> None:
        if event.stage == "export":
            self.bar.set_description(f"export: {event.message}")
            return
        if event.stage == "init":       # seconds of work between steps: opening a hollow object, the hand-over
            self.bar.set_description(event.message)
            return
        if getattr(self.bar, "desc", ""):       # a disabled bar (--quiet) has no description at all
            self.bar.set_description("")
        self.bar.update(event.step - self.bar.n)
        if event.losses:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in event.losses.items() if k != "total"}, refresh=False)

    def close(self) -> None:
        self.bar.close()
