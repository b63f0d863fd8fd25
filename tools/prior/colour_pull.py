"""Does a prior pull a render's colours towards the prompt's? (backend/prior/README.md, "Session 14-15")

Renders the prompt's true object (the prior's camera, 16 views, albedo shading), optionally with its
colour changed (``--alter dark``: x 0.25; ``grey``: 0.5), noises the VAE latents at several t, takes the
prior's CFG prediction of x0, decodes it and prints the object's mean colour next to the input's.
A prior whose SDS keeps colours stable brings a darkened render back towards the truth at mid t.

    python tools/prior/colour_pull.py "a wooden barrel" backend/prior/weights .dev-v4/weights --alter dark
"""
import argparse

import torch
import torch.nn.functional as F

from backend.engine.cameras import sample_cameras, view_direction, view_suffixes
from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance
from backend.prior.catalogue import parse_prompt
from backend.prior.render import BACKGROUNDS, SHADINGS, default_settings, entry_index, render
from shared.presets import PRESETS
from shared.settings import GenerationSettings


def object_colour(x: torch.Tensor, mask: torch.Tensor) -> list[float]:
    m = mask[:, None].float()
    return ((x * m).sum((0, 2, 3)) / m.sum((0, 2, 3))).tolist()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("prompt")
    p.add_argument("models", nargs="+", help="prior folders (diffusers layout)")
    p.add_argument("--alter", choices=("none", "dark", "grey"), default="none")
    p.add_argument("--views", type=int, default=16)
    args = p.parse_args()
    torch.manual_seed(0)
    name, look = parse_prompt(args.prompt)
    n = args.views
    cams = sample_cameras(default_settings(), n, device="cpu")
    entry, shading = torch.full((n,), entry_index(name, look)), torch.full((n,), SHADINGS.index("albedo"))

    def draw(bg: str) -> torch.Tensor:
        return render(entry, cams, 64, shading=shading, background=torch.full((n,), BACKGROUNDS.index(bg)),
                      vary=False, generator=torch.Generator().manual_seed(2))
    mask = (draw("white") - draw("black")).abs().amax(1) < 1e-3        # object pixels
    image = draw("gradient")
    if args.alter != "none":
        changed = image * 0.25 if args.alter == "dark" else torch.full_like(image, 0.5)
        image = torch.where(mask[:, None], changed, image)
    preset = GenerationSettings.from_dict({**PRESETS["builtin"], "prompt": args.prompt})
    views = [view_direction(float(e), float(a), preset.front_threshold, preset.overhead_threshold, preset.view_naming)
             for e, a in zip(cams.elevation, cams.azimuth)]
    for path in args.models:
        g = StableDiffusionGuidance(path, "cpu")
        g.configure(preset)
        cond, uncond = g.encode_prompts(args.prompt, "", view_suffixes(preset.view_naming)).for_views(views)
        x = F.interpolate(image, (g.resolution, g.resolution), mode="bilinear", align_corners=False)
        m = F.interpolate(mask[:, None].float(), (g.resolution, g.resolution))[:, 0] > 0.5
        cells = [f"input {' '.join(f'{c:.2f}' for c in object_colour(x, m))}"]
        with torch.no_grad():
            latents = g.encode_images(x, torch.zeros(g.latent_shape(n)))
            for t_frac in (0.3, 0.5, 0.7, 0.9, 0.98):
                t = torch.full((n,), int(t_frac * 1000))
                a = g.alphas[t].view(-1, 1, 1, 1)
                row = []
                for cfg in (3.0, 7.5):
                    torch.manual_seed(3)
                    noise = torch.randn_like(latents)
                    noisy = g.scheduler.add_noise(latents, noise, t)
                    x0 = (noisy - (1 - a).sqrt() * g.predict_noise(noisy, t, cond, uncond, cfg)) / a.sqrt()
                    decoded = (g.vae.decode(x0 / g.latent_scale).sample.clamp(-1, 1) + 1) / 2
                    row.append(" ".join(f"{c:.2f}" for c in object_colour(decoded, m)))
                cells.append(f"t {t_frac}: cfg 3 {row[0]} / cfg 7.5 {row[1]}")
        print(f"{path}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
