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

v4 (``ARCHITECTURES["v4"]``, ``python -m backend.prior.train --architecture v4``): the same 64 px
images, but a VAE that downsamples only 2x, to 4 x 32 x 32 latents, so one latent cell is 2 px
(0.053 scene units at the prior's camera, not v3's 0.105): the thin props' 0.02-0.05-unit
swelling becomes visible to SDS (results/quality/README.md, "Session 12 GPU runs"). The UNet
gets one more level in front, 32-64-128-192 channels: its 32x32 level at 32 channels costs about
what v3's 16x16 level at 64 channels does, and the 16x16, 8x8 and 4x4 levels are v3's, now with
cross-attention from 16x16 down (thin parts are placed at that scale). 64 px rather than 128 px
images with a 4x VAE: the same 32x32 latent grid, but a VAE encode (with its backward, every SDS
step) at 64 px instead of 128, the same training renders as v3 (one data cache for both), and the
preset's 32 px renders carry no detail a 128 px image could add (backend/prior/README.md has the
CPU step costs).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from backend.engine.cameras import CAMERA_CONDITION_DIM

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




@dataclass(frozen=True)
class Architecture:
    """One prior's image and latent sizes and its VAE and UNet configs (the text encoder and the
    scheduler are the same for every version). ``shading_captions``: its training captions name the
    shading of lit and textureless renders (``grammar.caption``), its tokenizer has those words, and
    generation with it wants the ``shading_prompt`` setting; ``max_tokens``: the text length;
    ``camera_condition``: its UNet adds a projection of the camera (``cameras.camera_condition``) to
    the timestep embedding, as MVDream does (diffusers' ``class_embed_type="projection"``)."""

    name: str
    image_size: int
    latent_size: int
    vae: dict
    unet: dict
    shading_captions: bool = False
    max_tokens: int = MAX_TOKENS
    camera_condition: bool = False       # the UNet also reads each image's camera (class_labels)
    # The shadings (``render.SHADINGS``) of the images its UNet learns from; None: all. A prior made only
    # for the ``shape_model`` setting (v9) never sees an albedo render in SDS, so it learns none.
    shadings: tuple[str, ...] | None = None
    # Hollow props are also drawn filled (``render.sample_batch(p_filled=)``) under their own caption
    # (``grammar.caption(filled=True)``), so the prior knows what a filled cup looks like (v10).
    filled_captions: bool = False
    # Views of one object its UNet denoises together (``engine/guidance/multiview.py``; 1: each image alone).
    # Its training images come in groups of this many views of one object at one elevation, 360/num_views
    # degrees apart, and SDS renders a run's batches so (v11).
    num_views: int = 1
    # Its training renders are drawn in ``shadings`` only (a fresh render), not drawn in every shading and filtered
    # (the earlier priors shared one data cache): v12 learns from the albedo renders alone, 45% of a mixed render.
    render_own_shadings: bool = False


V4_VAE_CONFIG = dict(VAE_CONFIG, block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                     up_block_types=("UpDecoderBlock2D",) * 2)
V4_UNET_CONFIG = dict(UNET_CONFIG, sample_size=32, block_out_channels=(32, 64, 128, 192),
                      down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
                      up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
                      norm_num_groups=16)      # 2 channels a group at the 32-channel level, not 1 (instance norm)
# v3 that also sees the camera (session 17): the text's view words do not tell the v3-v5 priors a
# cube's face from its corner (their samples of "a red cube, front view" and "..., front left view" from
# one seed are the same picture), so SDS sees every yaw and makes a cube the solid of revolution of its
# diagonal (backend/prior/README.md, "Session 17"). A camera projection added to the timestep embedding
# is how MVDream makes a text prior camera-aware; diffusers' UNet has it as a "projection" class embedding.
V6_UNET_CONFIG = dict(UNET_CONFIG, class_embed_type="projection",
                      projection_class_embeddings_input_dim=CAMERA_CONDITION_DIM)
ARCHITECTURES = {
    "v3": Architecture("v3", IMAGE_SIZE, LATENT_SIZE, VAE_CONFIG, UNET_CONFIG),
    "v4": Architecture("v4", IMAGE_SIZE, 32, V4_VAE_CONFIG, V4_UNET_CONFIG),
    # v4 with captions that name the shading (backend/prior/README.md, "Session 16": v4's dark drift);
    # 20 tokens: "a shaded stone tower, front right view" is 18 with this tokenizer (v3's 16 already
    # cut "view" from the five longest captions).
    "v5": Architecture("v5", IMAGE_SIZE, 32, V4_VAE_CONFIG, V4_UNET_CONFIG, shading_captions=True, max_tokens=20),
    "v6": Architecture("v6", IMAGE_SIZE, LATENT_SIZE, VAE_CONFIG, V6_UNET_CONFIG, camera_condition=True),
    # v5 (32x32 latents for thin parts, shading captions for colour) that also sees the camera, as v6 does
    # v3: trained in session 19, lost to v6 except on the sword (backend/prior/README.md, "Session 19").
    "v7": Architecture("v7", IMAGE_SIZE, 32, V4_VAE_CONFIG,
                       dict(V4_UNET_CONFIG, class_embed_type="projection",
                            projection_class_embeddings_input_dim=CAMERA_CONDITION_DIM),
                       shading_captions=True, max_tokens=20, camera_condition=True),
    # v7 without the shading captions, i.e. v4 (32x32 latents) that also sees the camera (session 21). The
    # captions that name the shading cost the thin props most (chair / table IoU, v3 -> v5: 0.23 -> 0.16 /
    # 0.23 -> 0.17; v3 -> v4: 0.21 -> 0.28 / 0.23 -> 0.37), so v7 measured the camera with that loss in it.
    "v8": Architecture("v8", IMAGE_SIZE, 32, V4_VAE_CONFIG,
                       dict(V4_UNET_CONFIG, class_embed_type="projection",
                            projection_class_embeddings_input_dim=CAMERA_CONDITION_DIM),
                       camera_condition=True),
    # v8 made for the ``shape_model`` setting only (session 22): as a shape prior v8 lifted the props' mean IoU
    # (2 seeds, GPU: 0.560 -> 0.588, the stone well 0.27 -> 0.52, the lamp post 0.32 -> 0.47) but v6 + v8 is
    # 52 MB against the prior's 50 MB. v9's top level has 160 channels, not 192 (UNet 11.0 -> 8.8 M parameters,
    # v6 + v9 about 48 MB), and its UNet learns only the lit and textureless renders, the only ones a shape
    # prior is shown, so no capacity goes to albedo it never draws.
    "v9": Architecture("v9", IMAGE_SIZE, 32, V4_VAE_CONFIG,
                       dict(V4_UNET_CONFIG, block_out_channels=(32, 64, 128, 160), class_embed_type="projection",
                            projection_class_embeddings_input_dim=CAMERA_CONDITION_DIM),
                       camera_condition=True, shadings=("lambertian", "textureless")),
}
# v9 that has also seen the hollow props filled, captioned "... filled" (session 27): SDS draws the mug, the bowl
# and the bucket filled to the rim, and v9 itself prefers a filled cup where the cavity is in view
# (results/quality/runs/2026-12-01-session26-cavity-preference-cpu.md). Knowing the filled look by name lets
# generation push away from it (``avoid_prompt``). Same layout and tokenizer as v9: fine-tuned from it. Trained
# in session 27, not shipped: it tells the two apart by 0.1-0.7% of its error and the cups stay filled
# (results/quality/runs/2026-12-01-session27-filled-captions-avoid-gpu.md).
ARCHITECTURES["v10"] = replace(ARCHITECTURES["v9"], name="v10", filled_captions=True)
# v9 whose UNet sees four views of an object at 90 degrees at once (session 32), MVDream's multi-view attention:
# every prop the preset fails (bucket, shield, mug, bowl, fence) comes out swollen 1.8-4x, with each of its renders
# plausible to a prior that judges it alone (sessions 26-29: SDS keeps the proportions it starts from). A joint
# score sees the one shape all four views show. Same weights and layout as v9 (the attention processor has none):
# fine-tuned from it on renders of its two shadings in groups of four views.
ARCHITECTURES["v11"] = replace(ARCHITECTURES["v9"], name="v11", num_views=4)
# v9's layout as a colour prior (session 49): its UNet learns only the albedo renders, the only ones a colour prior
# is shown since the shape prior takes the lit and textureless renders (``engine/guidance/shape_colour.py``). Why:
# v6's 4x VAE (16x16 latents) turns a barrel's 4-5 px staves and hoops into faint bands already in its round
# trip, so SDS has no plank to draw (results/quality/README.md, "Session 49"); a 2x VAE keeps them. The 32x32
# colour priors before it (v4, v8) drifted dark because their caption meant a mixture of albedo, lit and grey
# textureless renders (backend/prior/README.md, "Session 14-15"); here the caption means an albedo render alone.
# Fine-tuned from the shape prior (its VAE, tokenizer and text encoder's start kept): 20 MB, so both fit in 50 MB.
ARCHITECTURES["v12"] = replace(ARCHITECTURES["v9"], name="v12", shadings=("albedo",), render_own_shadings=True)
# The shipped weights (v3: report_v3/, weights in git history; v4, v5, v7, v8: trained, not shipped; v8 in
# history, backend/prior/README.md "Session 21"; v9: the shipped shape prior, weights_shape/, trained 75% longer in session 41; v10: not shipped).
DEFAULT_ARCHITECTURE = "v6"


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {name!r}")
    return ARCHITECTURES[name]


def build_tokenizer(path: Path, arch: str = DEFAULT_ARCHITECTURE):
    from backend.engine.guidance.models import build_clip_tokenizer
    from backend.prior.grammar import vocabulary

    a = architecture(arch)
    return build_clip_tokenizer(Path(path), vocabulary(a.shading_captions), model_max_length=a.max_tokens)


def build_vae(arch: str = DEFAULT_ARCHITECTURE):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**architecture(arch).vae)


def build_unet(arch: str = DEFAULT_ARCHITECTURE):
    """The architecture's UNet, with multi-view attention over its ``num_views`` (weights alike either way)."""
    from diffusers import UNet2DConditionModel

    from backend.engine.guidance.multiview import set_multiview_attention

    unet = UNet2DConditionModel(**architecture(arch).unet)
    if architecture(arch).num_views > 1:
        set_multiview_attention(unet, architecture(arch).num_views)
    return unet


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **{**TEXT_CONFIG, "max_position_embeddings": tokenizer.model_max_length}))


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
                  dtype: torch.dtype = torch.float16, num_views: int = 1) -> Path:
    """Save the parts as a diffusers StableDiffusionPipeline folder (safetensors, ``dtype``), atomically;
    ``num_views`` > 1: a multi-view UNet's ``multiview.json`` beside them."""
    from diffusers import StableDiffusionPipeline

    from backend.engine.guidance.multiview import write_num_views

    vae, unet, text_encoder = (m.to(dtype) for m in (vae, unet, text_encoder))
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler or build_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    if num_views > 1:
        write_num_views(tmp, num_views)
    if path.exists():
        keep = [p for p in path.iterdir() if p.name in ("README.md", "report")]
        for p in keep:
            shutil.move(str(p), str(tmp / p.name))
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def build_random(path: Path, seed: int = 0, arch: str = DEFAULT_ARCHITECTURE) -> Path:
    """The architecture with random weights (tests, timing)."""
    torch.manual_seed(seed)
    tok_dir = Path(str(path) + ".tok")
    tokenizer = build_tokenizer(tok_dir, arch)
    out = save_pipeline(path, vae=build_vae(arch), unet=build_unet(arch),
                        text_encoder=build_text_encoder(tokenizer), tokenizer=tokenizer,
                        num_views=architecture(arch).num_views)
    shutil.rmtree(tok_dir, ignore_errors=True)
    return out
