"""The engine's public API: one call from settings to a textured GLB.

The CLI and the server's GPU workers use only what is in this module:

    from backend.engine.api import generate, load_guidance_for, pick_device, ProgressEvent, Cancelled
    guidance = load_guidance_for(settings, device)          # optional: keep a model loaded between runs
    result = generate(settings, device="auto", callback=on_progress, guidance=guidance,
                      checkpoint_path="job/ckpt.pt", should_cancel=lambda: False)
    open("out.glb", "wb").write(result.glb)

Several jobs on one device sharing each guidance call (``backend.engine.batching``):
``generate_group([settings, ...])``, or step by step as a worker does: ``prepare_generation`` per
job, a ``GroupRunner`` that the jobs join and leave, ``finish_run`` per finished job (the fine stage, when
the run has one, and the export; ``finish_generation`` is the export alone).

The types live in ``backend.engine.types`` (re-exported here) so that the trainer, which makes
them, does not import this module back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from backend.engine.batching import GroupRunner, generate_group
from backend.engine.grouping import needs_stages
from backend.engine.guidance.models import available_models, load_guidance_for
from backend.engine.reference_image import ImageError
from backend.engine.stages import finish_run, run_staged
from backend.engine.trainer import fast_path, finish_generation, pick_device, prepare_generation, run_generation
from backend.engine.types import Cancelled, GenerationResult, ModelNotFoundError, ProgressCallback, ProgressEvent

if TYPE_CHECKING:
    from backend.engine.guidance.base import Guidance
    from shared.settings import GenerationSettings

__all__ = ["generate", "load_guidance_for", "pick_device", "fast_path", "available_models", "Cancelled",
           "GenerationResult", "ImageError", "ModelNotFoundError", "ProgressCallback", "ProgressEvent",
           "generate_group", "GroupRunner", "prepare_generation", "finish_generation", "finish_run"]


def generate(settings: GenerationSettings, *, device: str = "auto", callback: Optional[ProgressCallback] = None,
             checkpoint_path: Optional[str] = None, should_cancel: Optional[Callable[[], bool]] = None,
             init_mesh_glb: Optional[bytes] = None, init_checkpoint: Optional[str] = None,
             guidance: Optional[Guidance] = None, reference_image: Optional[bytes] = None,
             allow_download: bool = False) -> GenerationResult:
    """Optimise a field for ``settings`` (a validated ``shared.settings.GenerationSettings``) and export it.

    - ``device``: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
    - ``checkpoint_path``: where the resumable optimisation state is saved every
      ``settings.checkpoint_interval`` steps; if the file exists (same settings), the run resumes from it.
    - ``should_cancel``: polled every step; when it returns True a checkpoint is saved and ``Cancelled``
      is raised.
    - ``settings.stages``: "coarse,fine" adds the fine stage (``backend.engine.stages``) after the
      coarse NeRF: a signed distance field started on the coarse surface, for sharp, clean surfaces.
    - ``init_mesh_glb``: refine mode: the fine stage alone (``fine_steps``), started on this mesh (its
      signed distance -> the SDF, its texture / vertex colours -> albedo), so its shape is kept.
    - ``init_checkpoint``: refine a result this backend made: the fine stage alone, started from the
      field stored in another run's checkpoint (fresh optimiser, step 0, this run's settings).
    - ``guidance``: an already-loaded ``Guidance`` to reuse (workers keep models loaded between jobs);
      default: ``load_guidance_for(settings, device)``.
    - ``reference_image``: image-to-3D (``settings.guidance_type`` "zero123"): the picture's bytes (PNG,
      JPEG, ...; alpha = the object's mask, else a simple border-colour segmentation, see
      ``backend.engine.reference_image``). A bad picture raises ``ImageError`` (a ValueError) naming
      the field "image". With a prompt too, the text prior joins in (``text_model``, joint mode).
    - ``allow_download``: let joint mode fetch ``text_model`` from the Hugging Face Hub.
    """
    if needs_stages(settings, init_mesh_glb=init_mesh_glb, init_checkpoint=init_checkpoint):
        return run_staged(settings, device=device, callback=callback, checkpoint_path=checkpoint_path,
                          should_cancel=should_cancel, init_mesh_glb=init_mesh_glb, init_checkpoint=init_checkpoint,
                          guidance=guidance, reference_image=reference_image, allow_download=allow_download)
    return run_generation(settings, device=device, callback=callback, checkpoint_path=checkpoint_path,
                          should_cancel=should_cancel, init_mesh_glb=init_mesh_glb,
                          init_checkpoint=init_checkpoint, guidance=guidance, reference_image=reference_image,
                          allow_download=allow_download)
