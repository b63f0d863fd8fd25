"""Does a built-in prior tell an open cup from a filled one? (the hollow props' diagnosis, session 26)

SDS leaves the mug, the bowl and the bucket filled (results/quality/README.md). This measures whether the
priors would pull the other way at all: the ground truth of a prop rendered as it is (open) and with its
cavity filled (the lid keeps the cavity's colour, as SDS draws it), from 4 azimuths at each elevation, each
render through each prior's VAE, noised at 32 random diffusion times with the same noise for both, and the
prior's conditional noise-prediction error compared (lower = likelier to the prior). A prior that prefers
the open shape shows ``rel`` > 0 (the filled one's error higher).

    python tools/cavity_preference.py [--elevations 15 30 45 60 75] [--props mug bowl] [--noisings 32]

Renders: the prior's own training renderer (``backend.prior.render``), white background, canonical
proportions; the colour prior on albedo renders, the shape prior on lambertian and textureless ones (as the
preset routes them). CPU, ~1 minute an elevation and prop.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from backend.engine.cameras import camera_condition, orbit_cameras, view_direction
from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance
from backend.prior import catalogue, props
from backend.prior import render as R
from backend.prior import sdf as S
from backend.prior.grammar import VIEW_NAMING, view_suffixes

LOOKS = {"mug": "red", "bowl": "wooden", "bucket": "wooden"}
# the outer solid of each hollow prop: its cavity filled
FILLED = {"mug": lambda p, P: S.cylinder(p, P["radius"], P["half_height"]),
          "bowl": lambda p, P: S.union(torch.maximum(S.sphere(S.shift(p, z=0.15), P["radius"]), p[:, 2] - 0.15),
                                       S.cylinder(S.shift(p, z=0.15 - P["radius"] + 0.01), 0.45 * P["radius"], 0.035))}
ROUTES = (("colour", "albedo"), ("shape", "lambertian"), ("shape", "textureless"))
AZIMUTHS = (0.0, 90.0, 180.0, -90.0)


def filled(category):
    """The category with its first part's cavity filled (same materials)."""
    def build(p, P, look):
        parts = category.build(p, P, look)
        parts[0] = props.Part(FILLED[category.name](p, props._on(p, P)), parts[0].material, parts[0].frame)
        return parts
    return replace(category, build=build)


def render(k: int, look: str, elevation: float, shading: str, resolution: int, category=None) -> torch.Tensor:
    """Float[Tensor, "4 3 H W"]: the prop ``CATEGORIES[k]`` (or ``category`` in its place) from ``AZIMUTHS``."""
    cams = orbit_cameras(elevation, AZIMUTHS, 1.8, 50.0)
    n = len(AZIMUTHS)
    saved = catalogue.CATEGORIES
    if category is not None:           # the renderer reads the catalogue's tuple: swap the one entry in
        R.CATEGORIES = saved[:k] + (category,) + saved[k + 1:]
    try:
        return R.render(torch.full((n,), R.ENTRIES.index((k, look))), cams, resolution,
                        shading=torch.full((n,), R.SHADINGS.index(shading)),
                        background=torch.full((n,), R.BACKGROUNDS.index("white")), vary=False,
                        generator=torch.Generator().manual_seed(1))
    finally:
        R.CATEGORIES = saved


@torch.no_grad()
def prediction_error(prior: StableDiffusionGuidance, images: torch.Tensor, captions: list[str],
                     elevation: float, noisings: int) -> torch.Tensor:
    """Mean squared epsilon error per image (Float[Tensor, "B"]) over ``noisings`` fixed (t, noise) draws."""
    emb = prior.encode_prompts("", "", {c: c for c in captions})
    context = torch.cat([emb.by_view[c] for c in captions])
    camera = camera_condition(orbit_cameras(elevation, AZIMUTHS, 1.8, 50.0).c2w) if prior.camera_conditioned else None
    z0 = prior.vae.encode(images * 2 - 1).latent_dist.mean * prior.latent_scale
    gen = torch.Generator().manual_seed(3)
    t = torch.randint(20, 980, (noisings,), generator=gen)
    total = torch.zeros(len(images))
    for i in range(noisings):
        eps = torch.randn(z0.shape, generator=gen)
        a = prior.alphas[t[i]]
        pred = prior._unet(a.sqrt() * z0 + (1 - a).sqrt() * eps, t[i].repeat(len(images)), context, camera).float()
        total += ((pred - eps) ** 2).mean(dim=(1, 2, 3))
    return total / noisings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--elevations", type=float, nargs="+", default=[15, 30, 45, 60, 75])
    parser.add_argument("--props", nargs="+", default=["mug", "bowl"], choices=sorted(FILLED))
    parser.add_argument("--noisings", type=int, default=32)
    parser.add_argument("--colour-model", default="backend/prior/weights")
    parser.add_argument("--shape-model", default="backend/prior/weights_shape")
    args = parser.parse_args()
    priors = {"colour": StableDiffusionGuidance(args.colour_model, "cpu", half_precision=False),
              "shape": StableDiffusionGuidance(args.shape_model, "cpu", half_precision=False)}
    suffixes = view_suffixes(VIEW_NAMING)
    print("| prop | elevation | " + " | ".join(f"{s} ({p}): open / filled / rel" for p, s in ROUTES) + " |")
    print("|---|---:|" + "---:|" * len(ROUTES))
    for name in args.props:
        k = next(i for i, c in enumerate(catalogue.CATEGORIES) if c.name == name)
        look = LOOKS[name]
        for elevation in args.elevations:
            captions = [f"a {look} {name}" + suffixes[view_direction(elevation, a, naming=VIEW_NAMING)]
                        for a in AZIMUTHS]
            cells = []
            for prior_name, shading in ROUTES:
                prior = priors[prior_name]
                res = prior.native_resolution
                err_open = prediction_error(prior, render(k, look, elevation, shading, res), captions, elevation,
                                            args.noisings)
                err_filled = prediction_error(prior, render(k, look, elevation, shading, res,
                                                            filled(catalogue.CATEGORIES[k])), captions, elevation,
                                              args.noisings)
                rel = ((err_filled - err_open) / err_open).mean() * 100
                cells.append(f"{err_open.mean():.4f} / {err_filled.mean():.4f} / {rel:+.1f}%")
            print(f"| {name} | {elevation:.0f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
