"""Guidance: what turns a rendered image into a gradient. ``load_guidance_for`` picks (by the
``guidance_type`` setting) and caches one."""

from backend.engine.guidance.base import Guidance, PromptEmbeddings
from backend.engine.guidance.models import load_guidance, load_guidance_for, resolve_model

__all__ = ["Guidance", "PromptEmbeddings", "load_guidance", "load_guidance_for", "resolve_model"]
