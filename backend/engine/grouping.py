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
    runs in a group of one and nothing joins it. So is a run with a fine stage (``needs_stages``)."""
    get = settings.get if isinstance(settings, dict) else (lambda name, default: getattr(settings, name))
    if get("guidance_type", _DEFAULTS.guidance_type) in IMAGE_GUIDANCE_TYPES or get("stages", "coarse") != "coarse":
        return "solo:" + uuid.uuid4().hex
    if isinstance(settings, dict):
        values = [settings.get(name, getattr(_DEFAULTS, name)) for name in GROUP_SETTINGS]
    else:
        values = [getattr(settings, name) for name in GROUP_SETTINGS]
    return json.dumps(values)


def needs_stages(settings: GenerationSettings, *, init_mesh_glb=None, init_checkpoint=None) -> bool:
    """A run that ``backend.engine.stages.run_staged`` makes (a fine stage, or a refine job: the fine
    stage alone, started on the artist's mesh or the parent job's field), alone, not in a group."""
    return settings.has_fine_stage or init_mesh_glb is not None or bool(init_checkpoint)
