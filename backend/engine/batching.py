"""Several jobs on one device share each guidance call (issue 13 point 2).

A diffusion model's forward on a few 64^2 latents leaves most of a big GPU idle, and one job at a
time per GPU pays that call (and its kernel launches) once per job per step. Here a group of runs
(one ``Trainer`` each: its own field, optimiser, prompt embeddings, settings and random streams) is
stepped in lockstep:

1. each trainer renders (``Trainer.render_step``): the fields are separate, so are their renders;
2. ONE ``Guidance.guide_many`` call over all the renders: the rows are stacked with their own prompt
   embeddings, guidance scale, timestep and noise (each job's drawn from its own generator), so the
   VAE encode and the UNet run once for the group;
3. each trainer's losses (``Trainer.step_losses``), ONE backward of their sum (the fields are
   disjoint, so each job's parameters get exactly the gradient of its own loss), and each job's
   optimiser step (``Trainer.optimizer_step``).

A job gets the same result alone or in a group (to floating-point summation order: batched kernels
may add in another order) because none of its draws comes from a shared RNG (``rng.JobRandom``).
Jobs with different step counts leave the group when done; a new job joins at a step boundary;
which jobs may share a group is ``grouping.group_key`` (a run with a fine stage steps its coarse stage
in the group and the rest alone: ``stages.finish_run``). ``GroupRunner`` adds what runs around each
step of each job (cancel, checkpoints, progress: ``trainer.FitLoop``) and keeps one job's failure
from ending the others.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional

from backend.engine.grouping import GROUP_SETTINGS, group_key
from backend.engine.guidance.base import Guidance
from backend.engine.stages import coarse_stage_callback, finish_run
from backend.engine.trainer import FitLoop, Generation, Trainer, prepare_generation
from backend.engine.types import Cancelled, GenerationResult
from shared.settings import GenerationSettings

log = logging.getLogger(__name__)


def step_group(trainers: list[Trainer], guidance: Guidance) -> list[dict | Exception]:
    """One SDS step of every trainer with one guidance call; per trainer its losses (as
    ``Trainer.train_step`` returns them) or the exception that stopped its step.

    A failure in a job's own phases (render, losses, optimiser) fails that job only. When a shared
    phase fails (the guidance call, the backward), each job retries this step alone, so only a job
    that also fails alone fails (a retried step draws new random numbers: that job is then no longer
    the same as an uninterrupted run)."""
    results: dict[int, dict | Exception] = {}
    renders = {}
    for i, trainer in enumerate(trainers):
        try:
            renders[i] = trainer.render_step()
        except Exception as e:  # noqa: BLE001 - this job fails, the others go on
            results[i] = e
    active = list(renders)
    if active:
        try:
            guides = guidance.guide_many([trainers[i].guidance_request(renders[i]) for i in active])
            pending = []
            for i, guide in zip(active, guides):
                try:
                    losses = trainers[i].step_losses(renders[i], guide)
                    pending.append((i, losses, sum(losses.values())))
                except Exception as e:  # noqa: BLE001
                    results[i] = e
            for i, _, _ in pending:
                trainers[i].zero_grad()
            if pending:
                sum(total for _, _, total in pending).backward()
            for i, losses, total in pending:
                try:
                    results[i] = trainers[i].optimizer_step(losses, total)
                except Exception as e:  # noqa: BLE001
                    results[i] = e
        except Exception as shared:  # noqa: BLE001 - the guidance call or the backward failed
            del renders
            if len(active) == 1:
                results[active[0]] = shared
            else:
                log.warning("a shared step of %d jobs failed (%s); stepping each alone", len(active), shared)
                for i in active:
                    try:
                        results[i] = trainers[i].train_step()
                    except Exception as e:  # noqa: BLE001
                        results[i] = e
    return [results[i] for i in range(len(trainers))]


@dataclass
class GroupMember:
    """One job in a group: its run, the loop around its steps, and how it is known to the caller."""

    key: Hashable
    run: Generation
    loop: FitLoop
    group_sizes: list[int] = field(default_factory=list)

    @property
    def trainer(self) -> Trainer:
        return self.run.trainer


@dataclass
class Departure:
    """A member that left the group: ``outcome`` finished | cancelled | failed."""

    member: GroupMember
    outcome: str
    error: Optional[BaseException] = None
    final_losses: dict = field(default_factory=dict)
    t_fit: float = 0.0


class GroupRunner:
    """Steps the runs of a group in lockstep (``step_group``) with what each run needs around its
    steps; members join (``add``) and leave (``step`` returns them) at step boundaries."""

    def __init__(self, guidance: Guidance, max_size: int):
        if max_size < 1:
            raise ValueError(f"batch_jobs: must be at least 1, got {max_size}")
        self.guidance, self.max_size = guidance, max_size
        self.members: list[GroupMember] = []
        self.key: Optional[str] = None

    def accepts(self, settings: GenerationSettings) -> bool:
        return len(self.members) < self.max_size and (self.key is None or group_key(settings) == self.key)

    def add(self, key: Hashable, run: Generation, *, callback=None, should_cancel=None,
            checkpoint_path: Optional[str] = None) -> GroupMember:
        if run.guidance is not self.guidance:
            raise ValueError("a group's runs share one loaded guidance")
        if not self.accepts(run.settings):
            raise ValueError(f"job {key!r} does not fit this group (up to {self.max_size} jobs with the same "
                             f"{', '.join(GROUP_SETTINGS)})")
        if not self.members:
            self.key = group_key(run.settings)
            self.guidance.configure(run.settings)     # the shared per-run options are equal in a group
        if run.settings.has_fine_stage:     # its coarse stage steps here: report steps of the whole run
            callback = coarse_stage_callback(callback, run.settings)
        member = GroupMember(key, run, FitLoop(run.trainer, callback, should_cancel, checkpoint_path))
        self.members.append(member)
        return member

    def step(self) -> list[Departure]:
        """One step of every member; returns the members that left (finished, cancelled, failed)."""
        left: list[Departure] = []
        stepping = []
        for m in self.members:
            if m.loop.done:
                stepping.append(m)          # (a resumed run may have no step left: leaves below)
                continue
            try:
                m.loop.before_step()
                stepping.append(m)
            except Cancelled as c:
                left.append(Departure(m, "cancelled", c))
            except Exception as e:  # noqa: BLE001 - e.g. its checkpoint could not be written
                left.append(Departure(m, "failed", e))
        to_step = [m for m in stepping if not m.loop.done]
        outcomes = step_group([m.trainer for m in to_step], self.guidance) if to_step else []
        for m, outcome in zip(to_step, outcomes):
            m.group_sizes.append(len(to_step))
            if isinstance(outcome, Exception):
                left.append(Departure(m, "failed", outcome))
                continue
            try:
                m.loop.after_step(outcome)
            except Exception as e:  # noqa: BLE001 - its preview, checkpoint or callback failed
                left.append(Departure(m, "failed", e))
        gone = {id(d.member) for d in left}
        for m in stepping:
            if id(m) not in gone and m.loop.done:
                try:
                    left.append(Departure(m, "finished", final_losses=m.loop.finish(), t_fit=time.perf_counter()))
                except Exception as e:  # noqa: BLE001
                    left.append(Departure(m, "failed", e))
        gone = {id(d.member) for d in left}
        self.members = [m for m in self.members if id(m) not in gone]
        if not self.members:
            self.key = None
        for d in left:
            sizes = d.member.group_sizes
            d.member.run.extra_metadata["batch"] = {
                "max_group_size": max(sizes, default=1),
                "mean_group_size": sum(sizes) / len(sizes) if sizes else 1.0, "grouped_steps": len(sizes)}
        return left


def generate_group(settings_list: list[GenerationSettings], *, device: str = "auto", max_size: Optional[int] = None,
                   guidance: Optional[Guidance] = None) -> list[GenerationResult | Exception]:
    """Generate several props in one group (``api.generate`` for many): all settings must share a
    ``group_key``. Returns a result, or the exception that ended it, per settings, in order."""
    from backend.engine.guidance.models import load_guidance_for

    if not settings_list:
        return []
    keys = {group_key(s) for s in settings_list}
    if len(keys) > 1:
        raise ValueError("settings: the jobs of one group must share " + ", ".join(GROUP_SETTINGS))
    if guidance is None:
        guidance = load_guidance_for(settings_list[0], device)
    runner = GroupRunner(guidance, max_size or len(settings_list))
    results: list[GenerationResult | Exception | None] = [None] * len(settings_list)
    waiting = list(enumerate(settings_list))
    while waiting or runner.members:
        while waiting and runner.accepts(waiting[0][1]):
            index, settings = waiting.pop(0)
            try:
                runner.add(index, prepare_generation(settings, device=device, guidance=guidance))
            except Exception as e:  # noqa: BLE001
                results[index] = e
        for d in runner.step():
            if d.outcome == "finished":
                try:
                    results[d.member.key] = finish_run(d.member.run, d.final_losses, t_fit=d.t_fit,
                                                       should_cancel=d.member.loop.should_cancel,
                                                       checkpoint_path=d.member.loop.checkpoint_path)
                except Exception as e:  # noqa: BLE001
                    results[d.member.key] = e
            else:
                results[d.member.key] = d.error
    return results
