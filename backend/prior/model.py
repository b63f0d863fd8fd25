"""The built-in prior's architecture: a small Stable-Diffusion-layout latent diffusion model.

Same classes and on-disk layout as SD 1.x (``AutoencoderKL``, ``UNet2DConditionModel``,
``CLIPTextModel``, ``CLIPTokenizer``, a DDIM scheduler with SD's scaled-linear betas), so the
engine loads it through the very code path it uses for real Stable Diffusion.

Sizes (v3, the props prior), chosen for SDS on a 2-core CPU within the 3-minute budget while
still resolving the props' thin parts and textures:
- 64 px images: at the prior's camera (distance 1.8, fov 50) an object of height 1.1 spans about
  42 px, a chair leg or a sword blade 2-4 px, a barrel stave 4-5 px. 96 px would resolve them
  better but makes every SDS step's VAE encode and UNet 2.25x dearer on the CPU.
- a VAE that downsamples 4x to 4 x 16 x 16 latents (not SD's 8x: at 64 px an 8 x 8 latent cannot
  hold a plank pattern), with twice the channels of the shapes-only prior (32-64-128) for
  textures;
- a UNet of 64-128-192 channels (11 M parameters, 2.6x the shapes-only prior) for 34 categories
  with up to 5 looks each and their proportions;
- a 3-layer text encoder trained from scratch on the grammar (each word one token).
Weights are stored in half precision (the guidance loads them as float32 on the CPU), about
half the size in the repository.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

IMAGE_SIZE = 64
LATENT_SIZE = 16
MAX_TOKENS = 16          # "<bos> a wooden treasure chest , front left view <eos>" is 10 tokens

VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 128),
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  layers_per_block=1, norm_num_groups=8, sample_size=IMAGE_SIZE, mid_block_add_attention=False)
UNET_CONFIG = dict(sample_size=LATENT_SIZE, in_channels=4, out_channels=4, layers_per_block=1,
                   block_out_channels=(64, 128, 192),
                   down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                   cross_attention_dim=128, attention_head_dim=8, norm_num_groups=32)
TEXT_CONFIG = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_hidden_layers=3,
                   max_position_embeddings=MAX_TOKENS, hidden_act="quick_gelu")
# SD 1.x's noise schedule, so SDS weights and time ranges mean what they mean for real SD.
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                        steps_offset=1, prediction_type="epsilon")


def build_tokenizer(path: Path):
    from backend.engine.guidance.models import build_clip_tokenizer
    from backend.prior.grammar import vocabulary

    return build_clip_tokenizer(Path(path), vocabulary(), model_max_length=MAX_TOKENS)


def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **TEXT_CONFIG))


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids exactly as the guidance makes them (padded to the maximum length)."""
    return tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_pipeline(path: Path, *, vae, unet, text_encoder, tokenizer, scheduler=None,
                  dtype: torch.dtype = torch.float16) -> Path:
    """Save the parts as a diffusers StableDiffusionPipeline folder (safetensors, ``dtype``), atomically."""
    from diffusers import StableDiffusionPipeline

    vae, unet, text_encoder = (m.to(dtype) for m in (vae, unet, text_encoder))
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler or build_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    if path.exists():
        keep = [p for p in path.iterdir() if p.name in ("README.md", "report")]
        for p in keep:
            shutil.move(str(p), str(tmp / p.name))
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def build_random(path: Path, seed: int = 0) -> Path:
    """The architecture with random weights (tests, timing)."""
    torch.manual_seed(seed)
    tok_dir = Path(str(path) + ".tok")
    tokenizer = build_tokenizer(tok_dir)
    out = save_pipeline(path, vae=build_vae(), unet=build_unet(), text_encoder=build_text_encoder(tokenizer),
                        tokenizer=tokenizer)
    shutil.rmtree(tok_dir, ignore_errors=True)
    return out
