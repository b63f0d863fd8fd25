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

A text run with a fine stage may fit its coarse stage in a group (``batching.GroupRunner``: one guidance
call per step for several jobs); ``finish_run`` then does its hand-over, fine stage and export alone,
as ``run_staged`` would have.
"""

from __future__ import annotations

import time
from typing import Optional

from backend.engine.fine import STAGE, FineTrainer, checkpoint_stage
from backend.engine.guidance.base import Guidance
from backend.engine.trainer import (Generation, Trainer, finish_generation, guidance_for_run, pick_device,
                                    reference_metadata, start_coarse_field)
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

    settings.validate()
    dev = pick_device(device)
    t_start = time.perf_counter()
    guidance = guidance_for_run(settings, dev, guidance)
    image_terms = prepare_image_terms(settings, guidance, reference_image, dev, allow_download=allow_download)
    refine = init_mesh_glb is not None or init_checkpoint is not None
    staged = StagedRun(settings, guidance, dev, image_terms, callback=callback, should_cancel=should_cancel,
                       checkpoint_path=checkpoint_path, refine=refine, t_start=t_start,
                       t_loaded=time.perf_counter())
    saved_stage = checkpoint_stage(checkpoint_path)
    if saved_stage == STAGE:
        fine = FineTrainer(settings, guidance, dev, image_terms=image_terms)
        fine.load_checkpoint(checkpoint_path)
        staged.resumed_from = staged.offset + fine.step
        return staged.fit_and_export(fine)
    if refine:
        fine = FineTrainer(settings, guidance, dev, image_terms=image_terms)
        if init_checkpoint:
            staged.init_event("fine stage: starting from the parent job's field")
            fine.init_from_checkpoint(init_checkpoint)
        else:
            staged.init_event("fine stage: signed distance of the mesh")
            staged.init_transform = fine.init_from_mesh(
                init_mesh_glb, progress=lambda f: staged.init_event(f"fine stage: fitting the mesh's colours {f:.0%}"))
        if checkpoint_path:
            fine.save_checkpoint(checkpoint_path)    # from here on a resume starts in the fine stage
        return staged.fit_and_export(fine)
    coarse = Trainer(settings, guidance, dev, image_terms=image_terms)
    if saved_stage is not None:
        coarse.load_checkpoint(checkpoint_path)
        staged.resumed_from = coarse.step
    else:
        start_coarse_field(coarse, callback)
    staged.coarse_losses = coarse.fit(coarse_stage_callback(callback, settings), should_cancel, checkpoint_path)
    staged.t_coarse = time.perf_counter()
    fine = staged.hand_over(coarse)
    del coarse
    return staged.fit_and_export(fine)


def coarse_stage_callback(callback, settings: GenerationSettings):
    """The progress callback for the coarse stage of a run with a fine stage: steps of the whole run."""
    return _relabel(callback, offset=0, total=settings.run_steps(), stage="optimise", message="coarse stage")


def finish_staged(run: Generation, coarse_losses: dict, *, callback=None, should_cancel=None, checkpoint_path=None,
                  t_fit: Optional[float] = None) -> GenerationResult:
    """The rest of a run with a fine stage whose coarse stage was fitted elsewhere (a group's member,
    ``batching``): the hand-over, the fine stage (alone) and the export, as ``run_staged`` does them."""
    staged = StagedRun(run.settings, run.guidance, run.device, run.trainer.image_terms, callback=callback,
                       should_cancel=should_cancel, checkpoint_path=checkpoint_path, refine=False,
                       t_start=run.t_start, t_loaded=run.t_loaded)
    staged.resumed_from, staged.coarse_losses = run.resumed_from, coarse_losses
    staged.t_coarse = time.perf_counter() if t_fit is None else t_fit
    staged.extra_metadata = dict(run.extra_metadata)
    fine = staged.hand_over(run.trainer)
    run.trainer = None                      # the coarse field's memory goes before the fine stage steps
    return staged.fit_and_export(fine)


def finish_run(run: Generation, final_losses: dict, *, callback=None, should_cancel=None, checkpoint_path=None,
               t_fit: Optional[float] = None) -> GenerationResult:
    """A run whose (coarse) optimisation is done, to its result: the fine stage first when it has one."""
    if run.settings.has_fine_stage:
        return finish_staged(run, final_losses, callback=callback, should_cancel=should_cancel,
                             checkpoint_path=checkpoint_path, t_fit=t_fit)
    return finish_generation(run, final_losses, callback=callback, t_fit=t_fit)


class StagedRun:
    """What a run with a fine stage carries from its start to its result: the steps' numbering (coarse
    steps, then fine ones), its progress and cancel hooks, its checkpoint and its timings."""

    def __init__(self, settings: GenerationSettings, guidance: Guidance, device, image_terms, *, callback,
                 should_cancel, checkpoint_path, refine: bool, t_start: float, t_loaded: float):
        self.settings, self.guidance, self.device, self.image_terms = settings, guidance, device, image_terms
        self.callback, self.should_cancel, self.checkpoint_path = callback, should_cancel, checkpoint_path
        self.refine = refine
        self.total = settings.run_steps(refine=refine)
        self.offset = self.total - settings.fine_steps     # the whole run's step at the fine stage's step 0
        self.t_start, self.t_loaded, self.t_coarse = t_start, t_loaded, t_loaded
        self.resumed_from, self.init_transform, self.coarse_losses = 0, None, {}
        self.extra_metadata: dict = {}

    def init_event(self, message: str) -> None:
        if self.callback is not None:
            self.callback(ProgressEvent(step=self.offset, total=self.total, losses={}, elapsed_s=0.0, eta_s=0.0,
                                        stage="init", message=message))

    def hand_over(self, coarse: Trainer) -> FineTrainer:
        """The fine stage started on the fitted coarse field; its checkpoint replaces the coarse one."""
        self.init_event("fine stage: signed distance of the coarse surface")
        fine = FineTrainer(self.settings, self.guidance, self.device, image_terms=self.image_terms)
        fine.init_from_coarse(coarse)
        if self.checkpoint_path:
            fine.save_checkpoint(self.checkpoint_path)    # from here on a resume starts in the fine stage
        return fine

    def fit_and_export(self, fine: FineTrainer) -> GenerationResult:
        from backend.export.turntable import turntable_png

        callback, total, settings = self.callback, self.total, self.settings
        try:
            final_losses = fine.fit(_relabel(callback, offset=self.offset, total=total, stage=STAGE,
                                             message="fine stage: sharpening the surface"),
                                    self.should_cancel, self.checkpoint_path)
        except Cancelled as c:
            raise Cancelled(self.offset + c.step) from None
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
            "settings": settings.to_dict(), "device": str(self.device), "guidance": self.guidance.name,
            "resumed_from_step": self.resumed_from, "final_losses": final_losses,
            "coarse_final_losses": self.coarse_losses,
            "stages": "fine" if self.refine else settings.stages,
            "init_transform": self.init_transform,
            "reference": reference_metadata(self.image_terms),
            "faces": int(exported.n_faces), "vertices": int(exported.n_vertices),
            "mesh_threshold": float(exported.threshold),
            "timings": {"load_s": self.t_loaded - self.t_start, "optimise_s": t_fit - self.t_loaded,
                        "coarse_s": self.t_coarse - self.t_loaded, "fine_s": t_fit - self.t_coarse,
                        "s_per_step": (t_fit - self.t_loaded) / max(1, total - self.resumed_from),
                        "export_s": t_end - t_fit, "export_stages": exported.timings},
            **self.extra_metadata,
        }
        return GenerationResult(glb=exported.glb, turntable_png=strip, metadata=metadata)
