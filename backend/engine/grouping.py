"""Which jobs may share a guidance call (``backend.engine.batching``): the same model, loaded the same
way, configured the same way. Everything else (prompt, seed, guidance scale, cameras, field, step
count, render resolution) may differ per job.

Torch-free: the server imports it to hand a GPU worker only jobs that fit the group it runs.
"""

from __future__ import annotations

import json
import uuid

from shared.settings import IMAGE_GUIDANCE_TYPES, GenerationSettings

# The model (type, weights, precision) and the guidance's per-run configuration
# (``Guidance.configure``), which one call applies to every row.
GROUP_SETTINGS = ("guidance_type", "model", "half_precision", "guidance_resolution", "sds_weighting",
                  "cuda_graphs")
_DEFAULTS = GenerationSettings()


def group_key(settings: GenerationSettings | dict) -> str:
    """Jobs with equal keys can be stepped in one group. An image job's key is its own (a fresh id at
    each call): its reference image conditions the loaded model itself (``set_reference``), so it
    runs in a group of one and nothing joins it."""
    guidance_type = (settings.get("guidance_type", _DEFAULTS.guidance_type) if isinstance(settings, dict)
                     else settings.guidance_type)
    if guidance_type in IMAGE_GUIDANCE_TYPES:
        return "solo:" + uuid.uuid4().hex
    if isinstance(settings, dict):
        values = [settings.get(name, getattr(_DEFAULTS, name)) for name in GROUP_SETTINGS]
    else:
        values = [getattr(settings, name) for name in GROUP_SETTINGS]
    return json.dumps(values)
