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
    runs in a group of one and nothing joins it. A text run with a fine stage groups like any other:
    its coarse stage steps with the group, its fine stage runs alone after it (``stages.finish_run``);
    a refine job runs alone whatever its key (``runs_alone``)."""
    get = settings.get if isinstance(settings, dict) else (lambda name, default: getattr(settings, name))
    if get("guidance_type", _DEFAULTS.guidance_type) in IMAGE_GUIDANCE_TYPES:
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


def runs_alone(settings: GenerationSettings, *, init_mesh_glb=None, init_checkpoint=None, checkpoint_path=None) -> bool:
    """A run that cannot fit its steps in a group: a refine job (the fine stage alone from the start) or
    a run whose checkpoint is already in its fine stage. Both go through ``stages.run_staged``."""
    if init_mesh_glb is not None or init_checkpoint:
        return True
    if settings.has_fine_stage and checkpoint_path:
        from backend.engine.fine import STAGE, checkpoint_stage   # (torch: only where a run is made)

        return checkpoint_stage(checkpoint_path) == STAGE
    return False
