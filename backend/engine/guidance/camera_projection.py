"""The camera-conditioning projection of Zero-1-to-3: one Linear from [image embedding, 4 camera
numbers] to the UNet's single cross-attention token.

Published diffusers conversions store it under two folder names with two classes, and both load
here with diffusers' ``from_pretrained`` (``ModelMixin``/``ConfigMixin``), so their weights and
config files are read as they are on disk:

- ``clip_camera_projection/``: ``CLIPCameraProjection(embedding_dim, additional_embeddings)`` with
  the layer ``proj`` (ashawkey/zero123-xl-diffusers, ashawkey/stable-zero123-diffusers, the
  project's own view prior);
- ``cc_projection/``: ``CCProjection(in_channel, out_channel)`` with the layer ``projection``
  (diffusers' community ``Zero1to3StableDiffusionPipeline``, kxic/zero123-xl).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

# folder name -> class name, in the order they are looked for
FOLDERS = {"clip_camera_projection": "CLIPCameraProjection", "cc_projection": "CCProjection"}


class CLIPCameraProjection(ModelMixin, ConfigMixin):
    """cat([image embedding (.., D), camera (.., 4)]) -> (.., D)."""

    @register_to_config
    def __init__(self, embedding_dim: int = 768, additional_embeddings: int = 4):
        super().__init__()
        self.proj = torch.nn.Linear(embedding_dim + additional_embeddings, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class CCProjection(ModelMixin, ConfigMixin):
    """The community pipeline's name for the same layer: (.., in_channel) -> (.., out_channel)."""

    @register_to_config
    def __init__(self, in_channel: int = 772, out_channel: int = 768):
        super().__init__()
        self.projection = torch.nn.Linear(in_channel, out_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


CLASSES = {"CLIPCameraProjection": CLIPCameraProjection, "CCProjection": CCProjection}


def projection_folder(model_path: str | Path) -> str:
    """The projection's folder name in ``model_path`` (either published name)."""
    for folder in FOLDERS:
        if (Path(model_path) / folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(f"model: {model_path} has no camera projection "
                            f"(looked for {' or '.join(f + '/config.json' for f in FOLDERS)})")


def load_camera_projection(model_path: str | Path, **kwargs) -> torch.nn.Module:
    """Load the projection with ``from_pretrained``; the class is the one its config names (the
    folder's usual class when the config names neither)."""
    folder = projection_folder(model_path)
    config = json.loads((Path(model_path) / folder / "config.json").read_text())
    cls = CLASSES.get(config.get("_class_name"), CLASSES[FOLDERS[folder]])
    return cls.from_pretrained(str(model_path), subfolder=folder, **kwargs)
