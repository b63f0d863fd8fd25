"""The small interface every guidance implements (threestudio's ``BaseObject`` guidance, reduced)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass
class PromptEmbeddings:
    """Conditional embeddings per view name ("front", "side", ... of the view naming; "" = no suffix)
    and the unconditional (negative prompt) embedding, all already on the guidance's device."""

    by_view: dict
    uncond: torch.Tensor

    def for_views(self, views: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        cond = torch.cat([self.by_view[v] for v in views], dim=0)
        return cond, self.uncond.expand(len(views), *self.uncond.shape[1:])


class Guidance(ABC):
    """Turns renders into a loss whose gradient is the guidance signal."""

    #: image side the guidance model works at (renders are resized to it)
    resolution: int
    #: a short name for logs and metadata
    name: str

    @abstractmethod
    def encode_prompts(self, prompt: str, negative_prompt: str, view_suffixes: dict[str, str]) -> PromptEmbeddings:
        """Embeddings of ``prompt`` alone ("") and with each view's suffix (view name -> suffix,
        ``backend.engine.cameras.view_suffixes``; empty when prompts are not view-dependent)."""
        ...

    @abstractmethod
    def __call__(self, rgb: torch.Tensor, embeddings: PromptEmbeddings, views: list[str], *,
                 guidance_scale: float, t_range: tuple[float, float]) -> dict:
        """``rgb``: (B, H, W, 3) in [0, 1] with gradient. Returns {"loss_sds": scalar tensor, ...}."""
