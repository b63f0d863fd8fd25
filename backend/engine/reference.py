"""Image-to-3D: what a job with a reference picture adds to every SDS step.

As threestudio's stable-zero123 system (``threestudio/systems/zero123.py``) does it:

- the random views get SDS from the view-conditioned guidance (the trainer's own guidance, e.g.
  "zero123", which knows the reference through ``set_reference``), weighted by
  ``image_guidance_weight``;
- each step the **reference camera** (``reference_elevation``/``azimuth``/``distance``/``fovy``) renders
  the object, and the render is compared to the picture: colour MSE against the picture composited
  over the render's own background (so it is a colour loss on the object's mask and pushes the
  background to stay empty), weighted by ``reference_rgb_weight``, and the MSE of the opacity against
  the picture's mask (alpha > 0.5), weighted by ``reference_mask_weight``. threestudio renders the
  reference over its background model; here a random solid colour each step, so the field cannot
  paint the picture's backdrop into the object;
- **joint mode** (Magic123): when the job also has a prompt, the text prior (``text_model``, a
  Stable-Diffusion-layout guidance) adds its SDS on the same renders, weighted by
  ``text_guidance_weight``; with ``shape_model`` that text prior is a pair (``shape_colour``): the lit
  and textureless renders get the shape prior's SDS, the albedo ones the text prior's, as in a text
  job. With the built-in text prior and no prompt (``auto_prompt``), the prompt is
  read from the picture first: the caption of its vocabulary that the text prior finds likeliest
  (``backend/prior/recognise.py``), so a dropped-in picture gets joint mode too.

The picture is decoded, segmented and centred by ``reference_image`` (no torch). The trainer holds
one ``ImageTerms`` and calls ``add_losses`` once per step; everything image-specific lives here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from backend.engine.cameras import CameraBatch, camera_rays, host_to_device, orbit_cameras
from backend.engine.reference_image import ALPHA_THRESHOLD, PreparedImage, prepare_reference

if TYPE_CHECKING:
    from backend.engine.guidance.base import Guidance, PromptEmbeddings
    from backend.engine.renderer import VolumeRenderer
    from shared.settings import GenerationSettings

log = logging.getLogger(__name__)


def reference_camera_params(settings: GenerationSettings) -> dict:
    """Elevation, azimuth (degrees), distance and fovy (degrees) of the reference camera; "auto"
    distance and fovy are the middle of the training ranges (the engine's default camera)."""
    s = settings
    distance = s.reference_distance if s.reference_distance is not None else 0.5 * (s.distance_min + s.distance_max)
    fovy = s.reference_fovy if s.reference_fovy is not None else 0.5 * (s.fovy_min + s.fovy_max)
    return {"elevation": float(s.reference_elevation), "azimuth": float(s.reference_azimuth),
            "distance": float(distance), "fovy": float(fovy)}


def reference_camera(settings: GenerationSettings, device="cpu") -> CameraBatch:
    p = reference_camera_params(settings)
    return orbit_cameras(p["elevation"], [p["azimuth"]], p["distance"], p["fovy"], device)


def resize_square(image: torch.Tensor, side: int) -> torch.Tensor:
    """Float[Tensor, "H W C"] -> Float[Tensor, "side side C"] (area filter down, bilinear up)."""
    chw = image.permute(2, 0, 1)[None]
    mode = "area" if side < image.shape[0] else "bilinear"
    out = F.interpolate(chw, (side, side), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return out[0].permute(1, 2, 0)


def reference_losses(render: dict, target_rgb: torch.Tensor, target_mask: torch.Tensor,
                     bg_color: torch.Tensor) -> dict:
    """threestudio's reference losses, unweighted.

    - ``render``: the renderer's output for the reference camera's rays: ``rgb`` Float[Tensor, "R 3"],
      ``opacity`` Float[Tensor, "R 1"];
    - ``target_rgb`` Float[Tensor, "R 3"], ``target_mask`` Float[Tensor, "R 1"] in [0, 1]: the picture;
    - ``bg_color`` Float[Tensor, "R 3"]: the background the render was composited over.

    Returns {"rgb": MSE(render, picture over the render's background), "mask": MSE(opacity, mask > 0.5)}.
    """
    target = target_rgb * target_mask + bg_color * (1.0 - target_mask)
    return {"rgb": F.mse_loss(render["rgb"], target),
            "mask": F.mse_loss(render["opacity"], (target_mask > ALPHA_THRESHOLD).to(target_mask.dtype))}


class ReferenceView:
    """The picture at the reference camera's render size, and that camera's rays."""

    def __init__(self, image: PreparedImage, settings: GenerationSettings, device):
        self.device = torch.device(device)
        res = settings.reference_resolution
        self.camera = reference_camera(settings, self.device)
        rays_o, rays_d = camera_rays(self.camera, res)
        self.rays_o, self.rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        rgb = resize_square(torch.from_numpy(image.rgb), res)
        mask = resize_square(torch.from_numpy(image.mask)[..., None], res)
        self.rgb = host_to_device(rgb.reshape(-1, 3).contiguous(), self.device)
        self.mask = host_to_device(mask.reshape(-1, 1).clamp(0, 1).contiguous(), self.device)
        self.resolution = res
        self.rays_per_step = settings.reference_rays

    def losses(self, renderer: VolumeRenderer, *, stratified: bool = True) -> dict:
        """Render the reference view (albedo, over a random solid colour) and compare (unweighted); with
        ``reference_rays`` a random subset of its pixels each step (the losses are pixel means: the
        subset's are an unbiased estimate)."""
        n = self.rays_o.shape[0]
        rays_o, rays_d, rgb, mask = self.rays_o, self.rays_d, self.rgb, self.mask
        if 0 < self.rays_per_step < n:
            pick = host_to_device(torch.randperm(n)[:self.rays_per_step], self.device)
            rays_o, rays_d, rgb, mask = rays_o[pick], rays_d[pick], rgb[pick], mask[pick]
        bg = host_to_device(torch.rand(1, 3), self.device).expand(rays_o.shape[0], 3)
        out = renderer(rays_o, rays_d, shading="albedo", bg_color=bg, stratified=stratified)
        return reference_losses(out, rgb, mask, bg)


class ImageTerms:
    """The losses an image job adds to a step (the trainer calls ``add_losses`` once per step)."""

    def __init__(self, settings: GenerationSettings, view: ReferenceView, image: Optional[PreparedImage] = None,
                 text_guidance: Optional[Guidance] = None, text_embeddings: Optional[PromptEmbeddings] = None,
                 recognised=None):
        self.s, self.view, self.image = settings, view, image
        self.text_guidance, self.text_embeddings = text_guidance, text_embeddings
        self.recognised = recognised       # backend.prior.recognise.Recognised when the prompt was read

    def add_losses(self, losses: dict, *, renderer: VolumeRenderer, rgb: torch.Tensor, views: list[str],
                   cameras: CameraBatch, t_range: tuple[float, float], shading: str = "") -> None:
        """Weight the image guidance's ``losses["sds"]``; add the text prior's SDS (joint mode) on the
        same renders ``rgb`` Float[Tensor, "B H W 3"] and the reference view's colour and mask losses.
        ``shading``: the renders' (with ``shape_model`` the text prior routes lit ones to the shape prior)."""
        from backend.engine.guidance.base import GuidanceRequest

        s = self.s
        losses["sds"] = s.image_guidance_weight * losses["sds"]
        if self.text_guidance is not None:
            request = GuidanceRequest(rgb, self.text_embeddings, views, cameras, s.guidance_scale, t_range,
                                      shading=shading, shape_guidance_scale=s.shape_guidance_scale)
            text = self.text_guidance.guide_many([request])[0]
            losses["sds_text"] = s.text_guidance_weight * text["loss_sds"]
        if s.reference_rgb_weight > 0 or s.reference_mask_weight > 0:
            ref = self.view.losses(renderer)
            losses["ref_rgb"] = s.reference_rgb_weight * ref["rgb"]
            losses["ref_mask"] = s.reference_mask_weight * ref["mask"]


def to_reference_image(image: PreparedImage, settings: GenerationSettings):
    """The engine's ``ReferenceImage`` (what a view-conditioned guidance's ``set_reference`` takes)."""
    from backend.engine.types import ReferenceImage

    p = reference_camera_params(settings)
    return ReferenceImage(rgb=torch.from_numpy(image.rgb), mask=torch.from_numpy(image.mask),
                          elevation=p["elevation"], azimuth=p["azimuth"], distance=p["distance"], fovy=p["fovy"])


def prepare_image_terms(settings: GenerationSettings, guidance: Guidance, reference_image: Optional[bytes],
                        device, *, allow_download: bool = False) -> Optional[ImageTerms]:
    """For an image job (``settings.is_image_job``): frame the picture, hand it to the guidance, load the
    text prior in joint mode. None for a text job. ``ImageError`` (field "image") for a bad picture."""
    if not settings.is_image_job:
        if reference_image is not None:
            raise ValueError(f"image: guidance_type {settings.guidance_type!r} does not use a reference image "
                             f"(image guidance types: zero123)")
        return None
    if reference_image is None:
        raise ValueError(f"image: guidance_type {settings.guidance_type!r} needs a reference image "
                         "(generate --image PICTURE.png)")
    image = prepare_reference(reference_image, fill=settings.reference_fill)
    if hasattr(guidance, "set_reference"):
        guidance.set_reference(to_reference_image(image, settings))
    text_guidance = text_embeddings = recognised = None
    prompt = settings.prompt
    if settings.joint_text_guidance or settings.prompt_from_picture:
        from backend.engine.cameras import view_suffixes
        from backend.engine.guidance.models import load_text_guidance_for

        text_guidance = load_text_guidance_for(settings, device, allow_download=allow_download)
        if settings.prompt_from_picture:      # read by the text prior (with a shape prior: the colour one)
            recognised = read_prompt(image, settings, getattr(text_guidance, "colour", text_guidance))
            prompt = recognised.prompt if recognised.confident else ""
        if prompt:
            text_embeddings = text_guidance.encode_prompts(
                prompt, settings.negative_prompt,
                view_suffixes(settings.view_naming) if settings.view_dependent_prompt else {})
            fill = prior_framing(prompt, settings)
            if fill > 0:        # the picture re-framed to the size the text prior draws this object at
                image = prepare_reference(reference_image, fill=fill)
                if hasattr(guidance, "set_reference"):
                    guidance.set_reference(to_reference_image(image, settings))
        else:       # not sure what the picture shows: the picture alone, not a wrong prompt
            text_guidance = None
    return ImageTerms(settings, ReferenceView(image, settings, device), image, text_guidance, text_embeddings,
                      recognised)


def prior_framing(prompt: str, settings: GenerationSettings) -> float:
    """The framing (``reference_fill``) that a joint job's picture is scaled to: the share of the frame
    the built-in text prior draws ``prompt``'s object at, seen from the reference camera
    (``backend.prior.recognise.framing``). 0 (keep ``reference_fill``) when the picture's framing is
    the reference camera's own (``reference_fill`` 0), the text prior is not the built-in one (Stable
    Diffusion has no one size per object), or the prompt is not in its grammar."""
    if settings.reference_fill <= 0 or settings.text_model != "builtin":
        return 0.0
    from backend.prior.recognise import framing

    p = reference_camera_params(settings)
    try:
        fill = framing(prompt, p["elevation"], p["azimuth"], distance=p["distance"], fovy=p["fovy"])
    except ValueError:                  # a prompt outside the prior's grammar: no size known
        return 0.0
    # within the range reference_fill allows (a sliver of a sword seen end-on would be tiny)
    return min(1.0, max(0.2, fill)) if fill > 0 else 0.0


def read_prompt(image: PreparedImage, settings: GenerationSettings, text_guidance: Guidance):
    """The built-in text prior's reading of the picture (``backend.prior.recognise``), seen from the
    reference camera: deterministic per picture, so a resumed job reads the same prompt."""
    from backend.prior.recognise import FILLS, picture_tensor, recognise

    p = reference_camera_params(settings)
    # reference_fill 0: the picture is framed as the reference camera sees it (a render made with it):
    # read as it is; otherwise its framing says nothing of the size: read at the prior's framings
    fills = FILLS if settings.reference_fill > 0 else ()
    recognised = recognise(picture_tensor(image.rgb, image.mask, fills), p["elevation"], p["azimuth"], text_guidance,
                           fills=fills, naming=settings.view_naming, overhead_threshold=settings.overhead_threshold,
                           distance=p["distance"], fovy=p["fovy"])
    log.info("no prompt given: the picture reads as %r (margin %.2f, %s; runners-up %s)", recognised.prompt,
             recognised.margin, "used" if recognised.confident else "too unsure to use",
             ", ".join(repr(c) for c, _ in recognised.scores[1:3]))
    return recognised
