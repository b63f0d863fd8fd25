"""Does a built-in prior tell an open cup from a filled one? (the hollow props' diagnosis, session 26)

SDS leaves the mug, the bowl and the bucket filled (results/quality/README.md). This measures whether the
priors would pull the other way at all: the ground truth of a prop rendered as it is (open) and with its
cavity filled (the lid keeps the cavity's colour, as SDS draws it), from 4 azimuths at each elevation, each
render through each prior's VAE, noised at 32 random diffusion times with the same noise for both, and the
prior's conditional noise-prediction error compared (lower = likelier to the prior). A prior that prefers
the open shape shows ``rel`` > 0 (the filled one's error higher).

    python tools/cavity_preference.py [--elevations 15 30 45 60 75] [--props mug bowl] [--noisings 32]
    python tools/cavity_preference.py --avoid --shape-model DIR     # a prior with filled captions (v10)

``--avoid`` (session 27): for a shape prior that learned filled cups under their own caption ("a red mug
filled"), also the error of each render under that caption against the plain one, ``(avoid - plain) / plain``:
positive on the open render and negative on the filled one means the prior tells them apart by name, so the
``avoid_prompt`` term (plain minus filled) points from a filled cup towards an open one.

Renders: the prior's own training renderer (``backend.prior.render``), white background, canonical
proportions; the colour prior on albedo renders, the shape prior on lambertian and textureless ones (as the
preset routes them). CPU, ~1 minute an elevation and prop.
"""

from __future__ import annotations

import argparse
import torch

from backend.engine.cameras import camera_condition, orbit_cameras, view_direction
from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance
from backend.prior import catalogue
from backend.prior import render as R
from backend.prior.grammar import FILLED_WORD, VIEW_NAMING, view_suffixes

LOOKS = {"mug": "red", "bowl": "wooden", "bucket": "wooden"}
ROUTES = (("colour", "albedo"), ("shape", "lambertian"), ("shape", "textureless"))
AZIMUTHS = (0.0, 90.0, 180.0, -90.0)


def render(k: int, look: str, elevation: float, shading: str, resolution: int, filled: bool = False) -> torch.Tensor:
    """Float[Tensor, "4 3 H W"]: the prop ``CATEGORIES[k]`` from ``AZIMUTHS``, open or with its cavity filled
    (``props.FILLED``: the lid in the cavity's colour, as SDS draws it)."""
    cams = orbit_cameras(elevation, AZIMUTHS, 1.8, 50.0)
    n = len(AZIMUTHS)
    return R.render(torch.full((n,), R.ENTRIES.index((k, look))), cams, resolution,
                    shading=torch.full((n,), R.SHADINGS.index(shading)),
                    background=torch.full((n,), R.BACKGROUNDS.index("white")), vary=False,
                    generator=torch.Generator().manual_seed(1), filled=torch.full((n,), filled))


@torch.no_grad()
def prediction_error(prior: StableDiffusionGuidance, images: torch.Tensor, captions: list[str],
                     elevation: float, noisings: int) -> torch.Tensor:
    """Mean squared epsilon error per image (Float[Tensor, "B"]) over ``noisings`` fixed (t, noise) draws."""
    emb = prior.encode_prompts("", "", {c: c for c in captions})
    context = torch.cat([emb.by_view[c] for c in captions])
    camera = camera_condition(orbit_cameras(elevation, AZIMUTHS, 1.8, 50.0).c2w) if prior.camera_conditioned else None
    if camera is not None:
        camera = camera.to(prior.device, prior.dtype)
    z0 = prior.vae.encode(images.to(prior.device, prior.dtype) * 2 - 1).latent_dist.mean * prior.latent_scale
    gen = torch.Generator().manual_seed(3)
    t = torch.randint(20, 980, (noisings,), generator=gen)
    total = torch.zeros(len(images))
    for i in range(noisings):
        eps = torch.randn(z0.shape, generator=gen).to(prior.device, prior.dtype)
        a = prior.alphas[t[i]].to(prior.dtype)
        pred = prior._unet(a.sqrt() * z0 + (1 - a).sqrt() * eps, t[i].repeat(len(images)).to(prior.device),
                           context.to(prior.dtype), camera).float()
        total += ((pred - eps.float()) ** 2).mean(dim=(1, 2, 3)).cpu()
    return total / noisings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--elevations", type=float, nargs="+", default=[15, 30, 45, 60, 75])
    parser.add_argument("--props", nargs="+", default=["mug", "bowl"], choices=sorted(LOOKS))
    parser.add_argument("--noisings", type=int, default=32)
    parser.add_argument("--colour-model", default="backend/prior/weights")
    parser.add_argument("--shape-model", default="backend/prior/weights_shape")
    parser.add_argument("--avoid", action="store_true",
                        help=f"also the shape prior's error under the \"... {FILLED_WORD}\" caption against the plain one")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    priors = {"colour": StableDiffusionGuidance(args.colour_model, args.device, half_precision=False),
              "shape": StableDiffusionGuidance(args.shape_model, args.device, half_precision=False)}
    suffixes = view_suffixes(VIEW_NAMING)
    avoid_cols = [s for p, s in ROUTES if p == "shape"] if args.avoid else []
    print("| prop | elevation | " + " | ".join(f"{s} ({p}): open / filled / rel" for p, s in ROUTES)
          + "".join(f" | {s}: avoid vs plain, open / filled" for s in avoid_cols) + " |")
    print("|---|---:|" + "---:|" * (len(ROUTES) + len(avoid_cols)))
    for name in args.props:
        k = next(i for i, c in enumerate(catalogue.CATEGORIES) if c.name == name)
        look = LOOKS[name]
        for elevation in args.elevations:
            captions = [f"a {look} {name}" + suffixes[view_direction(elevation, a, naming=VIEW_NAMING)]
                        for a in AZIMUTHS]
            avoided = [f"a {look} {name} {FILLED_WORD}" + suffixes[view_direction(elevation, a, naming=VIEW_NAMING)]
                       for a in AZIMUTHS]
            cells, avoid_cells = [], []
            for prior_name, shading in ROUTES:
                prior = priors[prior_name]
                res = prior.native_resolution
                images = {f: render(k, look, elevation, shading, res, filled=f) for f in (False, True)}
                err = {f: prediction_error(prior, images[f], captions, elevation, args.noisings) for f in images}
                rel = ((err[True] - err[False]) / err[False]).mean() * 100
                cells.append(f"{err[False].mean():.4f} / {err[True].mean():.4f} / {rel:+.1f}%")
                if shading in avoid_cols:
                    by_name = [((prediction_error(prior, images[f], avoided, elevation, args.noisings) - err[f])
                                / err[f]).mean() * 100 for f in (False, True)]
                    avoid_cells.append(" / ".join(f"{v:+.1f}%" for v in by_name))
            cells += avoid_cells
            print(f"| {name} | {elevation:.0f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
