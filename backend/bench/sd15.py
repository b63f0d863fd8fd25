"""Stable Diffusion 1.5's architecture, built from its published configuration values.

Random weights, same shapes and FLOPs as the real model: the speed benchmark measures the real
cost of SDS without downloading anything. Values are those of the ``model_index.json`` /
``*/config.json`` files published with runwayml/stable-diffusion-v1-5.
"""

from __future__ import annotations

from pathlib import Path

import torch

UNET_CONFIG = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0,
    mid_block_scale_factor=1.0)
VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), act_fn="silu", sample_size=512, scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, layer_norm_eps=1e-5,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
SCHEDULER_CONFIG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                        skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)


def build_sd15(path: Path, dtype=torch.float16) -> Path:
    """Save a randomly initialised SD-1.5-architecture pipeline in diffusers layout at ``path``."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from backend.engine.guidance.models import build_clip_tokenizer

    path = Path(path)
    if (path / "model_index.json").is_file():
        return path
    torch.manual_seed(0)
    # CLIP's 49k-token vocabulary cannot be downloaded here; a byte-level BPE vocabulary gives the
    # same sequence length (77) and embedding cost, which is all that matters for speed.
    tokenizer = build_clip_tokenizer(path / "_tokenizer", model_max_length=77)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**VAE_CONFIG), text_encoder=CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG)),
        tokenizer=tokenizer, unet=UNet2DConditionModel(**UNET_CONFIG), scheduler=PNDMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(dtype=dtype)
    pipe.save_pretrained(str(path), safe_serialization=True)
    import shutil

    shutil.rmtree(path / "_tokenizer", ignore_errors=True)
    return path
