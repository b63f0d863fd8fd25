"""Several jobs stepped with one guidance call (backend/engine/batching.py): a job's result is the
same alone or in a group, jobs leave when done and join at step boundaries, one failure stays alone."""

import pytest
import torch

from backend.engine.batching import GroupRunner, step_group
from backend.engine.guidance.models import load_guidance
from backend.engine.rng import JobRandom
from backend.engine.trainer import Trainer, prepare_generation
from tests.helpers import tiny_settings

# Every random path on: lit/textureless shading after 2 steps, random backgrounds, jittered cameras,
# stratified samples, the occupancy grid's update (step 0), 2 renders a step.
JOB = dict(steps=5, albedo_warmup_steps=2, shading="dreamfusion", background="random",
           resolution_schedule="32x2", samples_per_ray=32, camera_perturb=0.1)


def densities(trainer: Trainer) -> torch.Tensor:
    g = torch.linspace(-0.9, 0.9, 20)
    x = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        return trainer.field.density(x)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


@pytest.fixture(scope="module")
def guidance():
    return load_guidance("tiny-random", "cpu")


@pytest.mark.slow      # ~1 CPU-minute: lit steps with normals; the next test checks the same cheaply
def test_a_job_in_a_group_of_three_equals_the_job_alone(guidance):
    settings = tiny_settings(seed=3, **JOB)
    alone = Trainer(settings, guidance, "cpu")
    for _ in range(settings.steps):
        alone.train_step()

    # The same job between two others (other prompts, seeds and guidance scales; one stops early).
    group = [Trainer(tiny_settings(prompt="a blue sphere", seed=11, guidance_scale=20.0, **{**JOB, "steps": 3}),
                     guidance, "cpu"),
             Trainer(settings, guidance, "cpu"),
             Trainer(tiny_settings(prompt="a green cone", seed=5, **JOB), guidance, "cpu")]
    torch.manual_seed(999)          # the global RNG's state must not matter
    while group[1].step < settings.steps:
        running = [t for t in group if t.step < t.s.steps]
        for losses in step_group(running, guidance):
            assert not isinstance(losses, Exception), losses
    assert group[0].step == 3 and group[2].step == settings.steps

    grouped = relative_difference(densities(alone), densities(group[1]))
    assert grouped < 1e-3, grouped
    # The tolerance tells runs apart: the same start with other draws (cameras, shading, noise) ends
    # far away, so a job drawing from a shared RNG in the group would fail the check above.
    other_draws = Trainer(settings, guidance, "cpu")
    other_draws.rng = JobRandom(settings.seed + 1, "cpu")
    for _ in range(settings.steps):
        other_draws.train_step()
    assert relative_difference(densities(alone), densities(other_draws)) > 100 * max(grouped, 1e-5)


def test_jobs_leave_when_done_and_a_new_one_joins_at_a_step_boundary(guidance):
    short = prepare_generation(tiny_settings(seed=1, steps=3, samples_per_ray=32), device="cpu", guidance=guidance)
    long = prepare_generation(tiny_settings(seed=2, steps=6, samples_per_ray=32), device="cpu", guidance=guidance)
    runner = GroupRunner(guidance, max_size=2)
    runner.add("short", short)
    runner.add("long", long)
    late_settings = tiny_settings(prompt="a blue sphere", seed=4, steps=4, samples_per_ray=32)
    assert not runner.accepts(late_settings)                   # full
    departures = {}
    late = None
    for step in range(1, 12):
        for d in runner.step():
            departures[d.member.key] = (step, d.outcome)
        if "short" in departures and late is None:
            assert runner.accepts(late_settings)
            late = prepare_generation(late_settings, device="cpu", guidance=guidance)
            runner.add("late", late)
        if not runner.members:
            break
    assert departures == {"short": (3, "finished"), "long": (6, "finished"), "late": (7, "finished")}
    assert late.extra_metadata["batch"]["max_group_size"] == 2
    alone = Trainer(late_settings, guidance, "cpu")
    for _ in range(late_settings.steps):
        alone.train_step()
    assert relative_difference(densities(alone), densities(late.trainer)) < 1e-3


def test_a_failing_job_fails_alone_and_a_cancelled_one_leaves(guidance, monkeypatch):
    runs = [prepare_generation(tiny_settings(seed=s, steps=3), device="cpu", guidance=guidance) for s in range(3)]
    runner = GroupRunner(guidance, max_size=3)
    cancel = {"now": False}
    runner.add("ok", runs[0])
    runner.add("broken", runs[1])
    runner.add("cancelled", runs[2], should_cancel=lambda: cancel["now"])

    def broken_render():
        raise RuntimeError("this job's render failed")

    monkeypatch.setattr(runs[1].trainer, "render_step", broken_render)
    left = runner.step()
    assert [(d.member.key, d.outcome, str(d.error)) for d in left] == [
        ("broken", "failed", "this job's render failed")]
    cancel["now"] = True
    left = runner.step()
    assert [(d.member.key, d.outcome) for d in left] == [("cancelled", "cancelled")]
    left = runner.step()
    assert [(d.member.key, d.outcome) for d in left] == [("ok", "finished")]
    assert runs[0].trainer.step == 3 and runner.members == []


def test_groups_only_take_jobs_that_can_share_the_guidance_call(guidance):
    runner = GroupRunner(guidance, max_size=4)
    runner.add("a", prepare_generation(tiny_settings(seed=1), device="cpu", guidance=guidance))
    assert runner.accepts(tiny_settings(prompt="a blue sphere", seed=9, guidance_scale=50.0, steps=3))
    assert not runner.accepts(tiny_settings(sds_weighting="uniform"))
    assert not runner.accepts(tiny_settings(guidance_resolution=64))
    with pytest.raises(ValueError, match="batch_jobs"):
        GroupRunner(guidance, max_size=0)


def test_an_image_job_never_shares_a_group():
    """An image job's reference conditions the loaded model itself (zero123 ``set_reference``): two image
    jobs in one group would guide each other's views with the wrong picture. Break: drop the image
    branch in ``group_key`` -> two equal image jobs get one key."""
    from backend.engine.grouping import group_key
    from shared.settings import GenerationSettings

    text = GenerationSettings(prompt="a red cube")
    assert group_key(text) == group_key(GenerationSettings(prompt="a blue sphere", seed=3))
    image = GenerationSettings(guidance_type="zero123")
    assert group_key(image) != group_key(image)
    assert group_key(image.to_dict()) != group_key(image.to_dict())
    assert group_key(image) != group_key(text)


def test_runs_with_a_fine_stage_share_their_coarse_stage_and_end_as_alone(guidance):
    """The built-in preset has a fine stage: its jobs step their coarse stage in one group, then each
    its fine stage and export alone (``stages.finish_run``), with the result of a run alone and progress
    counted over the whole run. Break: ``finish_run`` exporting the coarse field (``finish_generation``),
    or the group's progress counting the coarse steps only."""
    import io

    import numpy as np
    import trimesh

    from backend.engine.api import finish_run, generate
    from backend.engine.grouping import group_key

    staged = dict(stages="coarse,fine", steps=3, fine_steps=3, resolution_schedule="16x1", fine_resolution=24,
                  samples_per_ray=48, preview_interval=1, mesh_resolution=48, texture_size=64)
    first, second = tiny_settings(seed=1, **staged), tiny_settings(prompt="a blue sphere", seed=2, **staged)
    assert group_key(first) == group_key(second)
    runs = [prepare_generation(s, device="cpu", guidance=guidance) for s in (first, second)]
    runner = GroupRunner(guidance, max_size=2)
    events = {0: [], 1: []}
    for i, run in enumerate(runs):
        runner.add(i, run, callback=events[i].append)
    results = {}
    while runner.members:
        for d in runner.step():
            assert d.outcome == "finished", d.error
            results[d.member.key] = finish_run(d.member.run, d.final_losses, callback=events[d.member.key].append,
                                               t_fit=d.t_fit)
    alone = generate(first, device="cpu", guidance=guidance)

    grouped = results[0]
    assert grouped.metadata["stages"] == "coarse,fine" and grouped.metadata["timings"]["fine_s"] > 0
    assert grouped.metadata["batch"]["max_group_size"] == 2
    assert set(grouped.metadata["final_losses"]) == set(alone.metadata["final_losses"])   # the fine stage's
    assert {ev.stage for ev in events[0]} >= {"optimise", "init", "fine", "export"}
    assert all(ev.total == first.steps + first.fine_steps for ev in events[0])
    assert [ev.step for ev in events[0] if ev.stage == "optimise"] == [1, 2, 3]

    def mesh(glb: bytes) -> trimesh.Trimesh:
        scene = trimesh.load(io.BytesIO(glb), file_type="glb")
        return list(scene.geometry.values())[0] if isinstance(scene, trimesh.Scene) else scene

    def chamfer(x: trimesh.Trimesh, y: trimesh.Trimesh) -> float:
        px, py = x.sample(3000, seed=0), y.sample(3000, seed=0)
        d = np.linalg.norm(px[:, None, :] - py[None, :, :], axis=-1)
        return float(d.min(1).mean() + d.min(0).mean())

    a, b, other = mesh(alone.glb), mesh(grouped.glb), mesh(results[1].glb)
    assert np.allclose(a.bounds, b.bounds, atol=0.03), (a.bounds, b.bounds)
    assert chamfer(a, b) < 0.25 * chamfer(a, other)


def test_refine_jobs_and_runs_resumed_in_their_fine_stage_run_alone(tmp_path):
    """What a worker may put in a group (``grouping.runs_alone``): a text run with a fine stage, fresh or
    resumed in its coarse stage, yes; a refine job, or a run whose checkpoint is in its fine stage, no
    (its coarse stage is over). Break: ``runs_alone`` ignoring the checkpoint's stage."""
    from backend.engine.grouping import runs_alone

    staged = tiny_settings(stages="coarse,fine")
    coarse_ckpt, fine_ckpt = tmp_path / "coarse.pt", tmp_path / "fine.pt"
    torch.save({"step": 3}, coarse_ckpt)                       # a coarse checkpoint has no stage mark
    torch.save({"stage": "fine", "step": 1}, fine_ckpt)
    assert not runs_alone(staged)
    assert not runs_alone(staged, checkpoint_path=str(tmp_path / "none-yet.pt"))
    assert not runs_alone(staged, checkpoint_path=str(coarse_ckpt))
    assert runs_alone(staged, checkpoint_path=str(fine_ckpt))
    assert runs_alone(tiny_settings(), init_mesh_glb=b"glTF")
    assert runs_alone(tiny_settings(), init_checkpoint=str(coarse_ckpt))
