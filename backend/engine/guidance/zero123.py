"""Zero-1-to-3 guidance: SDS from a view-conditioned diffusion model, given one reference image and
the camera of every render relative to the reference camera (threestudio's ``zero123-guidance``,
stable-dreamfusion's ``Zero123``).

The model is a folder in the diffusers layout published Zero-1-to-3 conversions use
(ashawkey/zero123-xl-diffusers, the community ``Zero1to3StableDiffusionPipeline``, the project's
own view prior ``backend/view_prior/weights``): ``vae`` (AutoencoderKL), ``image_encoder``
(CLIPVisionModelWithProjection), ``feature_extractor`` (CLIPImageProcessor: size, mean, std of
the encoder's input), ``clip_camera_projection`` or ``cc_projection`` (one Linear, see
``camera_projection``), ``unet`` (UNet2DConditionModel with 8 input channels), ``scheduler``.

Conditioning, as in all three codebases: the UNet's single cross-attention token is
``projection(cat([image embedding, camera]))`` with camera = [Δpolar (radians), sin Δazimuth,
cos Δazimuth, Δdistance] (``relative_camera``), and the reference's VAE latent (``.mode()``, not
multiplied by the scaling factor: Zero-1-to-3 was trained this way) is concatenated to the noisy
latent as 4 more channels. Classifier-free guidance nulls both: zero token, zero reference latent.
Stable Zero123's 4th camera entry (the reference's absolute polar angle) is not supported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from backend.engine.cameras import CameraBatch
from backend.engine.guidance.base import GuidanceRequest, PromptEmbeddings
from backend.engine.guidance.camera_projection import load_camera_projection, projection_folder
from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance
from backend.engine.registry import register
from backend.engine.types import ReferenceImage
from shared.settings import GenerationSettings

BUILTIN_VIEW_PRIOR = Path(__file__).resolve().parents[2] / "view_prior" / "weights"


def relative_camera(elevation, azimuth, distance, ref_elevation, ref_azimuth, ref_distance) -> torch.Tensor:
    """Zero-1-to-3's camera vector of each render relative to the reference: Float[Tensor, "B 4"] =
    [Δpolar rad, sin Δazimuth, cos Δazimuth, Δdistance]. Arguments broadcast (tensors or floats).

    Angles in degrees, engine convention (``backend.engine.cameras``). The polar angle is 90° -
    elevation, so Δpolar = ref_elevation - elevation (a render above the reference has Δpolar < 0).
    Azimuth grows counter-clockwise seen from above in the engine as in Zero-1-to-3's Objaverse
    renders (atan2(y, x) of the camera position, Z up), so Δazimuth = azimuth - ref_azimuth with no
    sign flip (stable-dreamfusion negates it because its azimuth runs the other way)."""
    el, az, dist, ref_el, ref_az, ref_dist = (torch.as_tensor(x, dtype=torch.float32) for x in
                                              (elevation, azimuth, distance, ref_elevation, ref_azimuth, ref_distance))
    d_polar = torch.deg2rad(ref_el - el)
    d_azimuth = torch.deg2rad(az - ref_az)
    d_polar, d_azimuth, d_dist = torch.broadcast_tensors(d_polar, d_azimuth, dist - ref_dist)
    return torch.stack([d_polar, torch.sin(d_azimuth), torch.cos(d_azimuth), d_dist], -1)


def reference_camera(cameras: CameraBatch, reference: ReferenceImage) -> torch.Tensor:
    """``relative_camera`` of each camera of a batch to the reference's camera."""
    return relative_camera(cameras.elevation, cameras.azimuth, cameras.distance, reference.elevation,
                           reference.azimuth, reference.distance)


def clip_pixels(rgb_bchw: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """Float[Tensor, "B 3 H W"] in [0, 1] -> the image encoder's input (bicubic resize to ``size``,
    normalised): the feature extractor's preprocessing in torch, as the community pipeline does it
    with kornia, so training and guidance share it and it runs on the GPU."""
    x = F.interpolate(rgb_bchw, (size, size), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x.clamp(0.0, 1.0) - mean) / std


def processor_geometry(processor) -> tuple[int, list, list]:
    """(input size, mean, std) of a CLIPImageProcessor."""
    crop = processor.crop_size      # a dict or transformers' SizeDict, by version
    size = int(crop["height"] if isinstance(crop, dict) else getattr(crop, "height", crop))
    return size, list(processor.image_mean), list(processor.image_std)


@register("guidance", "zero123")
class Zero123Guidance(StableDiffusionGuidance):
    """SDS with a view-conditioned UNet. The prompt is not used: call ``set_reference`` before the
    first step. Shares the SDS machinery (VAE encoding of renders, time sampling, weighting, CUDA
    graphs of the UNet) with ``StableDiffusionGuidance``; only loading and conditioning differ."""

    builtin_model = BUILTIN_VIEW_PRIOR
    scale_setting = "image_guidance_scale"

    def __init__(self, model_path: str, device: torch.device | str, *, half_precision: bool = True):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        projection_folder(model_path)   # a clear error for a folder of another layout, before loading
        self.device = torch.device(device)
        self.dtype = torch.float16 if (half_precision and self.device.type == "cuda") else torch.float32
        load = dict(torch_dtype=self.dtype, local_files_only=True)
        self.vae = AutoencoderKL.from_pretrained(model_path, subfolder="vae", **load)
        self.unet = UNet2DConditionModel.from_pretrained(model_path, subfolder="unet", **load)
        self.image_encoder = CLIPVisionModelWithProjection.from_pretrained(model_path, subfolder="image_encoder", **load)
        self.projection = load_camera_projection(model_path, **load)
        self.feature_extractor = CLIPImageProcessor.from_pretrained(model_path, subfolder="feature_extractor",
                                                                    local_files_only=True)
        self.scheduler = DDPMScheduler.from_pretrained(model_path, subfolder="scheduler", local_files_only=True)
        if self.unet.config.in_channels != 2 * self.vae.config.latent_channels:
            raise ValueError(f"model: {model_path} is not a Zero-1-to-3 model: its UNet takes "
                             f"{self.unet.config.in_channels} channels, not noisy + reference latents "
                             f"({2 * self.vae.config.latent_channels})")
        for module in (self.vae, self.unet, self.image_encoder, self.projection):
            module.to(self.device).eval().requires_grad_(False)
        if self.device.type == "cuda":
            self.unet.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True

        self._init_model_geometry(model_path)
        self.clip_size, self.clip_mean, self.clip_std = processor_geometry(self.feature_extractor)
        self._graphs: dict[tuple, tuple] = {}
        self._graph_capture_failed = False
        self.reference: Optional[ReferenceImage] = None
        self._init_vae_encoder_levers()
        self.configure(GenerationSettings())

    # -- conditioning ----------------------------------------------------------------------------
    @torch.no_grad()
    def set_reference(self, reference: ReferenceImage) -> None:
        """Encode the reference once: its image embedding Float[Tensor, "1 1 D"] and its VAE latent
        Float[Tensor, "1 4 h w"], from the image composited on white at the model's resolution."""
        image = reference.composited(1.0).permute(2, 0, 1)[None].float().to(self.device)
        pixels = clip_pixels(image, self.clip_size, self.clip_mean, self.clip_std)
        self.ref_embedding = self.image_encoder(pixels.to(self.dtype)).image_embeds[:, None, :]
        image = F.interpolate(image, (self.native_resolution,) * 2, mode="bilinear", align_corners=False,
                              antialias=True)
        self.ref_latent = self.vae.encode(image.to(self.dtype) * 2.0 - 1.0).latent_dist.mode()
        self.reference = reference

    def encode_prompts(self, prompt: str, negative_prompt: str, view_suffixes: dict[str, str],
                       avoid_prompt: str = "") -> PromptEmbeddings:
        """The prompt does not condition this model: empty embeddings for every view (no avoid term)."""
        empty = torch.zeros(1, 0, self.unet.config.cross_attention_dim, device=self.device)
        return PromptEmbeddings(by_view={"": empty, **{v: empty for v in view_suffixes}}, uncond=empty)

    def camera_token(self, camera: torch.Tensor) -> torch.Tensor:
        """Float[Tensor, "B 4"] relative cameras -> the cross-attention token Float[Tensor, "B 1 D"]."""
        embedding = self.ref_embedding.expand(camera.shape[0], -1, -1)
        return self.projection(torch.cat([embedding, camera[:, None, :].to(embedding)], -1))

    @torch.no_grad()
    def predict_noise_image(self, latents_noisy: torch.Tensor, t: torch.Tensor, camera: torch.Tensor,
                            guidance_scale: float) -> torch.Tensor:
        """CFG epsilon for noisy latents Float[Tensor, "B 4 h w"] seen from ``camera`` (``relative_camera``),
        one UNet call on [conditioned; unconditioned] where the unconditioned half has a zero token and
        a zero reference latent."""
        if self.reference is None:
            raise RuntimeError("zero123 guidance: no reference image (call set_reference first)")
        batch = latents_noisy.shape[0]
        noisy = latents_noisy.to(self.dtype)
        ref = self.ref_latent.expand(batch, -1, -1, -1)
        latent_in = torch.cat([torch.cat([noisy, ref], 1), torch.cat([noisy, torch.zeros_like(ref)], 1)])
        token = self.camera_token(camera.to(self.device))
        context = torch.cat([token, torch.zeros_like(token)])
        t_in = torch.cat([t] * 2)
        if self.device.type == "cuda":
            latent_in = latent_in.contiguous(memory_format=torch.channels_last)
        out = self._unet(latent_in, t_in, context).float()
        if self.prediction_type == "v_prediction":
            a = self.alphas[t_in].view(-1, 1, 1, 1)
            out = a.sqrt() * out + (1 - a).sqrt() * torch.cat([latents_noisy.float()] * 2)
        cond, uncond = out.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    # -- SDS -------------------------------------------------------------------------------------
    # One reference per loaded model (``set_reference``), so two image jobs never share a call: the
    # engine's grouping (``grouping.group_key``) runs each image job alone, and a group of one is
    # evaluated request by request.
    batches_jobs = False

    def guide_many(self, requests: list[GuidanceRequest]) -> list[dict]:
        return [self(r.rgb, r.embeddings, r.views, cameras=r.cameras, guidance_scale=r.guidance_scale,
                     t_range=r.t_range, generator=r.generator) for r in requests]

    def __call__(self, rgb: torch.Tensor, embeddings: PromptEmbeddings, views: list[str], *,
                 cameras: Optional[CameraBatch] = None, guidance_scale: float,
                 t_range: tuple[float, float], generator: Optional[torch.Generator] = None) -> dict:
        """SDS on ``rgb`` Float[Tensor, "B H W 3"] seen from ``cameras`` (required here); ``embeddings``
        and ``views`` are not used. Returns ``loss_sds``, ``grad_norm``, ``timesteps``. ``generator``:
        the job's random stream on the guidance's device (None: the global RNG)."""
        if cameras is None:
            raise ValueError("zero123 guidance needs the cameras of the renders")
        if self.reference is None:
            raise RuntimeError("zero123 guidance: no reference image (call set_reference first)")
        batch = rgb.shape[0]
        rgb_bchw = rgb.permute(0, 3, 1, 2)
        if rgb_bchw.shape[-1] != self.resolution:
            rgb_bchw = F.interpolate(rgb_bchw, (self.resolution, self.resolution), mode="bilinear",
                                     align_corners=False)
        t, noise, posterior_noise = self.draw(batch, t_range, generator)
        latents = self.encode_images(rgb_bchw, posterior_noise).float()
        camera = reference_camera(cameras, self.reference)
        with torch.no_grad():
            noisy = self.scheduler.add_noise(latents.detach(), noise, t)
            noise_pred = self.predict_noise_image(noisy, t, camera, guidance_scale)
        grad = torch.nan_to_num(self.weight(t) * (noise_pred - noise))
        target = (latents - grad).detach()
        loss = 0.5 * F.mse_loss(latents, target, reduction="sum") / batch
        return {"loss_sds": loss, "grad_norm": grad.norm(), "timesteps": t}

