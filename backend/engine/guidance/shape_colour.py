"""Two text priors, one run: ``model`` guides the albedo-shaded renders (the colour), ``shape_model`` the
lit and textureless ones (the shape).

Why: the built-in priors are each good at one of the two (backend/prior/README.md, "Session 21"). v8's
32x32 latents resolve chair legs and blades that v6's 16x16 latents blur (chair IoU 0.27 -> 0.37-0.40 over
3 GPU seeds), but with nothing pulling a colour back it lets a barrel drift to near-black (v4's drift);
v6 keeps the asked colour. DreamFusion's shading already splits the signals: a textureless render shows
only the shape, and with ``lit_albedo_gradient`` off a lit render's gradient reaches the geometry and not
the albedo, so routing those renders to the shape prior leaves the colour to the colour prior alone.
Fantasia3D splits geometry and appearance the same way, with one prior in two stages; here both priors
work in every stage, each on the renders it is good at.

Not a registry type of its own: ``load_guidance_for`` builds it from two loaded guidances of the run's
``guidance_type`` when ``shape_model`` is set, and every other part of the engine sees one ``Guidance``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch

from backend.engine.guidance.base import Guidance, GuidanceRequest, PromptEmbeddings
from shared.settings import GenerationSettings

#: the shadings whose renders the colour prior guides (every other one goes to the shape prior);
#: "" is a render of a trainer that does not say (the colour prior, as without ``shape_model``)
COLOUR_SHADINGS = ("", "albedo")


@dataclass
class PairedEmbeddings(PromptEmbeddings):
    """The colour prior's embeddings (``by_view``, ``uncond``) with the shape prior's beside them: the
    two models have their own text encoders."""

    shape: Optional[PromptEmbeddings] = None


class ShapeColourGuidance(Guidance):
    """Routes each request by its render's shading: albedo -> ``colour``, lit / textureless -> ``shape``.
    Attributes the engine reads (``resolution``, ``camera_conditioned``, ...) are the colour prior's."""

    batches_jobs = True

    def __init__(self, colour: Guidance, shape: Guidance):   # noqa: D107 - built from two loaded guidances
        self.colour, self.shape = colour, shape
        self.name = f"{colour.name} (colour) + {shape.name} (shape)"
        self.scale_setting = colour.scale_setting

    def __getattr__(self, item):
        # Only reached for attributes not set here: the colour prior's (resolution, camera_conditioned, ...).
        if item in ("colour", "shape"):
            raise AttributeError(item)
        return getattr(self.colour, item)

    @property
    def views_per_object(self) -> int:
        """Either prior's: the batch's camera groups serve both (a single-view prior takes any batch)."""
        return math.lcm(self.colour.views_per_object, self.shape.views_per_object)

    def configure(self, settings: GenerationSettings) -> None:
        self.colour.configure(settings)
        self.shape.configure(settings)

    def encode_prompts(self, prompt: str, negative_prompt: str, view_suffixes: dict[str, str],
                       avoid_prompt: str = "") -> PairedEmbeddings:
        """``avoid_prompt`` goes to the shape prior only: what it names for the built-in priors (a filled cup)
        is a shape, and the colour prior's albedo renders of an open and a filled cup are the same picture
        (results/quality/runs/2026-12-01-session26-cavity-preference-cpu.md)."""
        colour = self.colour.encode_prompts(prompt, negative_prompt, view_suffixes)
        return PairedEmbeddings(by_view=colour.by_view, uncond=colour.uncond,
                                shape=self.shape.encode_prompts(prompt, negative_prompt, view_suffixes, avoid_prompt))

    def __call__(self, rgb: torch.Tensor, embeddings: PromptEmbeddings, views: list[str], *, cameras,
                 guidance_scale: float, t_range: tuple[float, float]) -> dict:
        """A request that does not name its shading: the colour prior, as a run without ``shape_model``."""
        return self.colour(rgb, embeddings, views, cameras=cameras, guidance_scale=guidance_scale, t_range=t_range)

    def guide_many(self, requests: list[GuidanceRequest]) -> list[dict]:
        results: list[Optional[dict]] = [None] * len(requests)
        colour = [i for i, r in enumerate(requests) if r.shading in COLOUR_SHADINGS]
        shape = [i for i, r in enumerate(requests) if r.shading not in COLOUR_SHADINGS]
        if colour:
            for i, out in zip(colour, self.colour.guide_many([requests[i] for i in colour])):
                results[i] = out
        if shape:
            routed = [replace(requests[i], embeddings=requests[i].embeddings.shape,
                              guidance_scale=requests[i].shape_guidance_scale or requests[i].guidance_scale)
                      for i in shape]
            for i, out in zip(shape, self.shape.guide_many(routed)):
                results[i] = out
        return results
