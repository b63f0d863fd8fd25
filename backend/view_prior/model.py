"""The view prior's architecture and its on-disk layout: a small Zero-1-to-3 in the diffusers
layout published conversions use (see ``backend.engine.guidance.zero123``).

Sizes, within the 12 MB the committed weights may take (fp16; the whole repository travels to the
GPU machine with a 64 MiB limit):
- VAE: the text prior's trained ``AutoencoderKL`` (``backend.prior.model.VAE_CONFIG``), copied and
  frozen (5.2 MB). Same 64 px images and 4 x 16 x 16 latents: the engine renders the prior's
  objects at 64 px, and an 8 x 8 latent cannot hold a plank or stave pattern (the text prior's
  finding); reusing the trained VAE also spends the whole GPU allowance on the UNet.
- image encoder: a ``CLIPVisionModelWithProjection`` of 3 layers, width 128, 8 px patches on the
  64 px reference (0.45 M parameters), trained from scratch with the UNet;
- camera projection: ``CLIPCameraProjection(128, 4)``;
- UNet: 8 input channels (noisy latent + reference latent), 32-64-96 channels, cross-attention to
  the one projected token at the two lower levels and the middle (2.8 M parameters, 5.6 MB).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from backend.prior import model as text_prior

IMAGE_SIZE = text_prior.IMAGE_SIZE
LATENT_SIZE = text_prior.LATENT_SIZE
EMBED_DIM = 128
# OpenAI CLIP's normalisation, as published Zero-1-to-3 feature extractors use.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

UNET_CONFIG = dict(sample_size=LATENT_SIZE, in_channels=8, out_channels=4, layers_per_block=1,
                   block_out_channels=(32, 64, 96),
                   down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                   cross_attention_dim=EMBED_DIM, attention_head_dim=8, norm_num_groups=16)
ENCODER_CONFIG = dict(image_size=IMAGE_SIZE, patch_size=8, hidden_size=128, intermediate_size=256,
                      num_hidden_layers=3, num_attention_heads=4, projection_dim=EMBED_DIM)

# Published Zero-1-to-3 conversions name their pipeline class "Zero123Pipeline" (ashawkey) and the
# projection's library "zero123"; the engine loads each component by folder, not through this file.
PROJECTION_LIBRARY = {"clip_camera_projection": ["zero123", "CLIPCameraProjection"],
                      "cc_projection": ["zero123", "CCProjection"]}


def build_unet(**overrides):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**{**UNET_CONFIG, **overrides})


def build_image_encoder(**overrides):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(**{**ENCODER_CONFIG, **overrides}))


def build_projection(embed_dim: int = EMBED_DIM, folder: str = "clip_camera_projection"):
    from backend.engine.guidance.camera_projection import CCProjection, CLIPCameraProjection

    if folder == "cc_projection":
        return CCProjection(in_channel=embed_dim + 4, out_channel=embed_dim)
    return CLIPCameraProjection(embedding_dim=embed_dim, additional_embeddings=4)


def build_feature_extractor(size: int = IMAGE_SIZE):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)


def load_frozen_vae():
    """The VAE the view prior is trained on (float32): prior v6's 4x VAE (16x16 latents), the built-in text
    prior's until session 50, kept in the view prior's own weights (the same bytes). The text prior since then
    (v12) has a 2x VAE with 32x32 latents that this UNet (``sample_size`` LATENT_SIZE) was not made for."""
    from diffusers import AutoencoderKL

    from backend.view_prior import WEIGHTS_DIR

    return AutoencoderKL.from_pretrained(str(WEIGHTS_DIR / "vae"), torch_dtype=torch.float32)


def save_layout(path: Path, *, vae, unet, image_encoder, projection, scheduler=None, feature_extractor=None,
                projection_folder: str = "clip_camera_projection", dtype: torch.dtype = torch.float16) -> Path:
    """Write the components as a Zero-1-to-3 diffusers folder (safetensors in ``dtype``), atomically;
    a README.md or report/ already in ``path`` is kept."""
    import diffusers

    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    scheduler = scheduler or text_prior.build_scheduler()
    feature_extractor = feature_extractor or build_feature_extractor(image_encoder.config.image_size)
    for name, module in (("vae", vae), ("unet", unet), ("image_encoder", image_encoder),
                         (projection_folder, projection)):
        module.to(dtype).save_pretrained(str(tmp / name), safe_serialization=True)
    scheduler.save_pretrained(str(tmp / "scheduler"))
    feature_extractor.save_pretrained(str(tmp / "feature_extractor"))
    index = {"_class_name": "Zero123Pipeline", "_diffusers_version": diffusers.__version__,
             "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DConditionModel"],
             "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
             projection_folder: PROJECTION_LIBRARY[projection_folder],
             "scheduler": ["diffusers", type(scheduler).__name__],
             "feature_extractor": ["transformers", "CLIPImageProcessor"],
             "safety_checker": [None, None], "requires_safety_checker": False}
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    if path.exists():
        for p in path.iterdir():
            if p.name in ("README.md", "report"):
                shutil.move(str(p), str(tmp / p.name))
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def build_tiny(path: Path, *, projection_folder: str = "clip_camera_projection", seed: int = 0) -> Path:
    """A randomly initialised Zero-1-to-3 folder sized like diffusers' test models (32 px images,
    16 x 16 latents), saved in float32: tests load it in milliseconds."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=32)
    unet = build_unet(block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                      attention_head_dim=4, norm_num_groups=8)
    encoder = build_image_encoder(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                                  num_hidden_layers=1, num_attention_heads=2, projection_dim=16)
    return save_layout(path, vae=vae, unet=unet, image_encoder=encoder, projection=build_projection(16, projection_folder),
                       projection_folder=projection_folder, dtype=torch.float32)
