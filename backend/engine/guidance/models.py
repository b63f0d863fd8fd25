"""Where guidance models come from: the built-in prior, a tiny random test model, a local folder
or the user's Hugging Face cache. Nothing is downloaded unless the caller allows it."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from backend.engine import builtin_types  # noqa: F401  registers the built-in guidance types
from backend.engine.registry import find
from backend.engine.types import ModelNotFoundError
from shared.settings import GenerationSettings

if TYPE_CHECKING:
    from backend.engine.guidance.base import Guidance

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "prior" / "weights"
# The built-in shape prior (prior v9, session 23): the built-in preset's ``shape_model``, which guides the
# lit and textureless renders while BUILTIN_DIR's prior guides the albedo ones (``shape_colour.py``).
BUILTIN_SHAPE = "builtin-shape"
BUILTIN_SHAPE_DIR = Path(__file__).resolve().parents[2] / "prior" / "weights_shape"
# An image job's built-in text prior (``text_model`` "builtin": joint mode and reading a picture's prompt): colour
# prior v6, trained on lit, textureless and albedo renders alike. The text jobs' prior since session 50 (v12,
# BUILTIN_DIR) has seen albedo renders only and leaves the lit ones to the shape prior; beside the view prior, which
# renders all three, it took the image benchmark's joint mode from 0.71-0.75 to 0.48-0.54 mean IoU (one H200, 3
# seeds; at guidance 7.5 x weight 0.25 / 1 / 3: 0.51 / 0.57 / 0.60 on seed 0), and read fewer pictures
# (results/image/README.md, session 51).
BUILTIN_IMAGE_TEXT_DIR = Path(__file__).resolve().parents[2] / "prior" / "weights_v6"
TINY_RANDOM = "tiny-random"


def cache_dir() -> Path:
    """Models we build ourselves live here (``DREAMPROP_CACHE_DIR`` overrides)."""
    env = os.environ.get("DREAMPROP_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("dreamprop"))


def builtin_available() -> bool:
    return (BUILTIN_DIR / "model_index.json").is_file()


def available_models() -> list[str]:
    """Names a client may pick (local folders and HF ids work too)."""
    return ["builtin", TINY_RANDOM]


def resolve_model(name: str, *, allow_download: bool = False, builtin: Path | None = None) -> Path:
    """Turn a model name into a local diffusers folder. ``builtin``: the folder "builtin" means (a
    guidance type's own built-in model; default the text prior)."""
    if name == "builtin" and builtin is not None:
        if not (Path(builtin) / "model_index.json").is_file():
            raise ModelNotFoundError(f"model: the built-in model {builtin} is not installed")
        return Path(builtin)
    if name == "builtin":
        if builtin_available():
            return BUILTIN_DIR
        print("\n" + "!" * 78 + "\n!! WARNING: the built-in prior is not installed: using a TINY RANDOMLY\n"
              "!! INITIALISED model instead. The result will be a blob, not your prompt.\n"
              "!! Point --model at real Stable Diffusion weights for real results.\n" + "!" * 78 + "\n",
              file=sys.stderr)
        name = TINY_RANDOM
    if name == BUILTIN_SHAPE:
        if not (BUILTIN_SHAPE_DIR / "model_index.json").is_file():
            raise ModelNotFoundError(f"model: the built-in shape prior {BUILTIN_SHAPE_DIR} is not installed")
        return BUILTIN_SHAPE_DIR
    if name == TINY_RANDOM:
        path = cache_dir() / "models" / TINY_RANDOM
        if not (path / "model_index.json").is_file():
            build_tiny_sd(path)
        return path
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "unet").is_dir():
            raise ModelNotFoundError(f"model: {path} is not a diffusers folder (no model_index.json)")
        return path
    if "/" in name and not name.startswith((".", "/")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(name, local_files_only=not allow_download,
                                          allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"]))
        except LocalEntryNotFoundError:
            raise ModelNotFoundError(
                f"model: {name!r} is not in your Hugging Face cache and downloading is off "
                "(pass --allow-download, or point --model at a local diffusers folder)") from None
    raise ModelNotFoundError(f"model: {name!r} is neither 'builtin', '{TINY_RANDOM}', a local folder "
                             "nor a Hugging Face id (owner/name)")


_loaded: dict = {}
_lock = threading.Lock()


def load_guidance_for(settings: GenerationSettings, device="cpu", *, allow_download: bool = False) -> Guidance:
    """The guidance ``settings`` ask for (``guidance_type``, ``model``, ``half_precision``), loaded once
    per process, configured for this run (``Guidance.configure``). With ``shape_model``: both priors,
    routed by shading (``shape_colour.ShapeColourGuidance``), kept as one. An image job's text prior
    (joint mode) is ``load_text_guidance_for``'s."""
    if settings.has_shape_model and not settings.is_image_job:
        return _load_shape_colour(settings, settings.guidance_type, settings.model, device, allow_download)
    return load_guidance(settings.model, device, guidance_type=settings.guidance_type,
                         half_precision=settings.half_precision, allow_download=allow_download,
                         settings=settings)


def load_text_guidance_for(settings: GenerationSettings, device="cpu", *, allow_download: bool = False) -> Guidance:
    """An image job's text prior (joint mode, ``backend.engine.reference``): ``text_model`` with
    stable-diffusion guidance, paired with ``shape_model`` for the lit and textureless renders when set,
    as a text job's ``model`` is. "builtin" is BUILTIN_IMAGE_TEXT_DIR's prior (v6), not a text job's."""
    model = image_text_model(settings.text_model)
    if settings.has_shape_model:
        return _load_shape_colour(settings, "stable-diffusion", model, device, allow_download)
    return load_guidance(model, device, guidance_type="stable-diffusion",
                         half_precision=settings.half_precision, allow_download=allow_download, settings=settings)


def image_text_model(name: str) -> str:
    """An image job's ``text_model`` as a model name or folder: "builtin" -> BUILTIN_IMAGE_TEXT_DIR (a missing
    one is named), anything else as given."""
    if name.strip() != "builtin":
        return name
    if not (BUILTIN_IMAGE_TEXT_DIR / "model_index.json").is_file():
        raise ModelNotFoundError(f"text_model: the built-in text prior of image jobs {BUILTIN_IMAGE_TEXT_DIR} "
                                 "is not installed")
    return str(BUILTIN_IMAGE_TEXT_DIR)


def resolve_shape_model(settings: GenerationSettings, guidance_type: str = "stable-diffusion", *,
                        allow_download: bool = False) -> Path:
    """The folder of ``settings.shape_model`` (a missing one named as the field ``shape_model``)."""
    cls = find("guidance", guidance_type)
    try:
        return resolve_model(settings.shape_model.strip(), allow_download=allow_download, builtin=cls.builtin_model)
    except ModelNotFoundError as e:
        raise ModelNotFoundError(str(e).replace("model:", "shape_model:", 1)) from None


def _load_shape_colour(settings: GenerationSettings, guidance_type: str, model: str, device,
                       allow_download: bool) -> Guidance:
    from backend.engine.guidance.shape_colour import ShapeColourGuidance

    cls = find("guidance", guidance_type)
    colour = resolve_model(model, allow_download=allow_download, builtin=cls.builtin_model)
    shape = resolve_shape_model(settings, guidance_type, allow_download=allow_download)
    key = ("shape-colour", guidance_type, str(colour), str(shape), str(torch.device(device)),
           settings.half_precision)
    with _lock:
        guidance = _loaded.get(key)
        if guidance is None:
            _loaded.clear()           # one resident entry, as load_guidance keeps (here: the pair)
            guidance = ShapeColourGuidance(cls(str(colour), device, half_precision=settings.half_precision),
                                           cls(str(shape), device, half_precision=settings.half_precision))
            _loaded[key] = guidance
    guidance.configure(settings)
    return guidance


def load_guidance(model: str = "builtin", device="cpu", *, guidance_type: str = "stable-diffusion",
                  half_precision: bool = True, allow_download: bool = False,
                  settings: GenerationSettings | None = None) -> Guidance:
    """Load (once per process) the guidance type ``guidance_type`` with ``model``; workers reuse it
    between jobs. ``settings``: the run's options (default: the defaults)."""
    cls = find("guidance", guidance_type)
    path = resolve_model(model, allow_download=allow_download, builtin=cls.builtin_model)
    key = (guidance_type, str(path), str(torch.device(device)), half_precision)
    with _lock:
        guidance = _loaded.get(key)
        if guidance is None:
            guidance = cls(str(path), device, half_precision=half_precision)
            _loaded.clear()           # keep one model resident: a second would double GPU memory
            _loaded[key] = guidance
    guidance.configure(settings if settings is not None else GenerationSettings())
    return guidance


# -- tiny models built from configuration ----------------------------------------------------------
def build_clip_tokenizer(path: Path, words: list[str] = (), model_max_length: int = 77):
    """A CLIP BPE tokenizer with a byte-level alphabet plus one merged token per word in ``words``.

    We cannot download CLIP's 49k-token vocabulary here; this one tokenises any text (bytes) and
    gives the words of a known grammar single tokens, which is all a small prior needs.
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    path.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges: list[str] = []
    for word in dict.fromkeys(w.lower() for w in words):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            rule = f"{pieces[0]} {pieces[1]}"
            if rule not in merges:
                merges.append(rule)
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + ("\n" if merges else ""))
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"),
                              model_max_length=model_max_length)
    tokenizer.save_pretrained(str(path))
    return tokenizer


def build_tiny_sd(path: Path, *, seed: int = 0, sample_size: int = 16) -> Path:
    """A tiny randomly initialised SD-1.x-layout pipeline, saved with ``save_pretrained``.

    Same classes and file layout as Stable Diffusion (UNet2DConditionModel, AutoencoderKL,
    CLIPTextModel, CLIPTokenizer, a scheduler), so it exercises the real loading path; sized like
    diffusers' own test models so SDS steps take milliseconds on a CPU.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(tmp / "_tokenizer", model_max_length=16)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        sample_size=sample_size * 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1,
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(tokenizer), max_position_embeddings=16))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    import shutil

    shutil.rmtree(tmp / "_tokenizer", ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, path)         # atomic: concurrent builders never see half a model
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)   # another process won the race
    return path
