"""Guidance: what turns a rendered image into a gradient. ``load_guidance`` picks and caches one."""

from backend.engine.guidance.base import Guidance, PromptEmbeddings
from backend.engine.guidance.models import load_guidance, resolve_model

__all__ = ["Guidance", "PromptEmbeddings", "load_guidance", "resolve_model"]
