"""Which jobs may share a guidance call (``backend.engine.batching``): the same model, loaded the same
way, configured the same way. Everything else (prompt, seed, guidance scale, cameras, field, step
count, render resolution) may differ per job.

Torch-free: the server imports it to hand a GPU worker only jobs that fit the group it runs.
"""

from __future__ import annotations

import json

from shared.settings import GenerationSettings

# The model (type, weights, precision) and the guidance's per-run configuration
# (``Guidance.configure``), which one call applies to every row.
GROUP_SETTINGS = ("guidance_type", "model", "half_precision", "guidance_resolution", "sds_weighting",
                  "cuda_graphs")
_DEFAULTS = GenerationSettings()


def group_key(settings: GenerationSettings | dict) -> str:
    """Jobs with equal keys can be stepped in one group."""
    if isinstance(settings, dict):
        values = [settings.get(name, getattr(_DEFAULTS, name)) for name in GROUP_SETTINGS]
    else:
        values = [getattr(settings, name) for name in GROUP_SETTINGS]
    return json.dumps(values)
