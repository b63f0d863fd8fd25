"""A run with a fine stage (``stages = coarse,fine``) or a refine job: coarse -> fine -> export.

``api.generate`` sends here every run that has a fine stage, and every refine job (``init_mesh_glb`` or
``init_checkpoint``): Refine Selected *is* the fine stage, started on the selected mesh (or the parent
job's field), so the artist's shape is kept and sharpened, for ``fine_steps`` steps. A coarse-only run
stays in ``trainer.run_generation``.

One checkpoint file holds whichever stage is running: the coarse Trainer's until its last step, then,
right after the hand-over, the fine stage's (marked ``"stage": "fine"``). Resuming reads the mark: a
run killed in the fine stage resumes in the fine stage, one killed in the coarse stage finishes the
coarse stage first. Steps count through the whole run (coarse ``steps``, then ``fine_steps``); progress
events of the fine stage say ``stage="fine"`` (the coarse stage keeps "optimise", as in a coarse-only
run, and says "coarse stage" in its message), and the hand-over reports ``stage="init"``.
"""

from __future__ import annotations

import time
from typing import Optional

from backend.engine.fine import STAGE, FineTrainer, checkpoint_stage
from backend.engine.guidance.base import Guidance
from backend.engine.trainer import Trainer, guidance_for_run, pick_device, reference_metadata
from backend.engine.types import Cancelled, GenerationResult, ProgressEvent
from shared.settings import GenerationSettings


def _relabel(callback, *, offset: int, total: int, stage: str, message: str):
    """A progress callback that reports a stage's events as steps of the whole run."""
    if callback is None:
        return None

    def relabelled(ev: ProgressEvent) -> None:
        ev.step, ev.total = ev.step + offset, total
        if ev.stage == "optimise":
            ev.stage, ev.message = stage, ev.message or message
        callback(ev)

    return relabelled


def run_staged(settings: GenerationSettings, *, device: str = "auto", callback=None, checkpoint_path=None,
               should_cancel=None, init_mesh_glb=None, init_checkpoint=None,
               guidance: Optional[Guidance] = None, reference_image: Optional[bytes] = None,
               allow_download: bool = False) -> GenerationResult:
    """``api.generate`` for runs with a fine stage and for refine jobs (arguments as there). An image job's
    reference-view losses (``reference_image``) apply in both stages: the fine stage sharpens the surface
    the picture shows, it does not drift from it."""
    from backend.engine.reference import prepare_image_terms
    from backend.export.turntable import turntable_png

    settings.validate()
    dev = pick_device(device)
    t_start = time.perf_counter()
    guidance = guidance_for_run(settings, dev, guidance)
    image_terms = prepare_image_terms(settings, guidance, reference_image, dev, allow_download=allow_download)
    t_loaded = time.perf_counter()
    refine = init_mesh_glb is not None or init_checkpoint is not None
    total = settings.run_steps(refine=refine)
    offset = total - settings.fine_steps                # the whole run's step at the fine stage's step 0

    def init_event(message: str) -> None:
        if callback is not None:
            callback(ProgressEvent(step=offset, total=total, losses={}, elapsed_s=0.0, eta_s=0.0, stage="init",
                                   message=message))

    saved_stage = checkpoint_stage(checkpoint_path)
    resumed_from, init_transform, coarse_losses, t_coarse = 0, None, {}, t_loaded
    if saved_stage == STAGE:
        fine = FineTrainer(settings, guidance, dev, image_terms=image_terms)
        fine.load_checkpoint(checkpoint_path)
        resumed_from = offset + fine.step
    else:
        if refine:
            fine = FineTrainer(settings, guidance, dev, image_terms=image_terms)
            if init_checkpoint:
                init_event("fine stage: starting from the parent job's field")
                fine.init_from_checkpoint(init_checkpoint)
            else:
                init_event("fine stage: signed distance of the mesh")
                init_transform = fine.init_from_mesh(
                    init_mesh_glb, progress=lambda f: init_event(f"fine stage: fitting the mesh's colours {f:.0%}"))
        else:
            coarse = Trainer(settings, guidance, dev, image_terms=image_terms)
            if saved_stage is not None:
                coarse.load_checkpoint(checkpoint_path)
                resumed_from = coarse.step
            coarse_losses = coarse.fit(_relabel(callback, offset=0, total=total, stage="optimise",
                                                message="coarse stage"), should_cancel, checkpoint_path)
            t_coarse = time.perf_counter()
            init_event("fine stage: signed distance of the coarse surface")
            fine = FineTrainer(settings, guidance, dev, image_terms=image_terms)
            fine.init_from_coarse(coarse)
            del coarse
        if checkpoint_path:
            fine.save_checkpoint(checkpoint_path)    # from here on a resume starts in the fine stage
    try:
        final_losses = fine.fit(_relabel(callback, offset=offset, total=total, stage=STAGE,
                                         message="fine stage: sharpening the surface"),
                                should_cancel, checkpoint_path)
    except Cancelled as c:
        raise Cancelled(offset + c.step) from None
    t_fit = time.perf_counter()

    def export_progress(stage: str, fraction: float) -> None:
        if callback is not None:
            callback(ProgressEvent(step=total, total=total, losses={}, elapsed_s=0.0, eta_s=0.0,
                                   stage="export", message=f"{stage} {fraction:.0%}"))

    exported = fine.export(export_progress)
    strip = turntable_png(exported.vertices, exported.faces, uvs=exported.uvs, texture=exported.texture,
                          vertex_colors=exported.vertex_colors)
    t_end = time.perf_counter()
    metadata = {
        "settings": settings.to_dict(), "device": str(dev), "guidance": guidance.name,
        "resumed_from_step": resumed_from, "final_losses": final_losses, "coarse_final_losses": coarse_losses,
        "stages": "fine" if refine else settings.stages,
        "init_transform": init_transform,
        "reference": reference_metadata(image_terms),
        "faces": int(exported.n_faces), "vertices": int(exported.n_vertices),
        "mesh_threshold": float(exported.threshold),
        "timings": {"load_s": t_loaded - t_start, "optimise_s": t_fit - t_loaded,
                    "coarse_s": t_coarse - t_loaded, "fine_s": t_fit - t_coarse,
                    "s_per_step": (t_fit - t_loaded) / max(1, total - resumed_from), "export_s": t_end - t_fit,
                    "export_stages": exported.timings},
    }
    return GenerationResult(glb=exported.glb, turntable_png=strip, metadata=metadata)
