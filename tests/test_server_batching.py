"""A real server whose worker runs several jobs as one group (``serve --batch-jobs``): jobs submitted
together share each guidance call, each streams and finishes with its own result, one is cancelled
without disturbing the others, and a job's mesh is the one it makes alone."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.server_fixtures import tiny

pytestmark = pytest.mark.slow
EVENT_TIMEOUT = 300.0
GLB = b"glTF"


def filled_voxels(glb: bytes, pitch: float = 0.04) -> set:
    import trimesh

    mesh = trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh")
    points = mesh.voxelized(pitch).fill().points
    return set(map(tuple, np.round(points / pitch).astype(int)))


def test_jobs_submitted_together_run_as_one_group_each_with_its_own_result(server_factory):
    from backend.engine.api import generate
    from shared.settings import GenerationSettings

    server = server_factory(args=["--devices", "cpu", "--batch-jobs", "3"])
    server.wait_workers_ready()
    c = server.client()
    # Short runs (each step of the group and of the run alone below costs seconds on a loaded CPU):
    # enough for two previews each, a checkpoint, and the sphere finishing after the cube.
    specs = {"cube": tiny("a red cube", seed=1, steps=8, preview_interval=4, checkpoint_interval=4),
             # a run with a fine stage (as the built-in preset): its coarse stage in the group, the rest alone
             "sphere": tiny("a blue sphere", seed=2, steps=10, preview_interval=5, checkpoint_interval=0,
                            stages="coarse,fine", fine_steps=2),
             "cancelled": tiny("a green cone", seed=3, steps=400, preview_interval=1, checkpoint_interval=0)}
    jobs = {name: c.submit(spec) for name, spec in specs.items()}

    # Cancel one job of the group once it runs; the others go on.
    events = {name: [] for name in jobs}
    for ev in c.events(jobs["cancelled"], timeout=EVENT_TIMEOUT):
        events["cancelled"].append(ev)
        if ev.msg_type == "progress" and ev.content["step"] == 3:
            assert c.cancel(jobs["cancelled"])["cancelled"] is True
    assert events["cancelled"][-1].msg_type == "cancelled"
    for name in ("cube", "sphere"):
        events[name] = list(c.events(jobs[name], timeout=EVENT_TIMEOUT))
        assert events[name][-1].msg_type == "finished", [e.msg_type for e in events[name]]

    results = {}
    for name in ("cube", "sphere"):
        steps = [e.content["step"] for e in events[name] if e.msg_type == "progress" and e.content["preview"]]
        total = specs[name]["steps"]
        expected = list(range(specs[name]["preview_interval"], total + 1, specs[name]["preview_interval"]))
        if name == "sphere":                  # the fine stage's last step, counted after the coarse ones
            expected.append(total + specs[name]["fine_steps"])
        assert steps == expected
        glb, metadata = c.result(jobs[name])
        assert glb.startswith(GLB) and metadata["faces"] > 0
        assert metadata["settings"]["prompt"] == specs[name]["prompt"]
        # All three were stepped together (one guidance call per step), on the one worker.
        assert metadata["batch"]["max_group_size"] == 3, metadata["batch"]
        if name == "sphere":
            assert metadata["stages"] == "coarse,fine" and metadata["timings"]["fine_s"] > 0
        assert c.status(jobs[name])["runs"] == 1
        results[name] = (glb, metadata)
    assert results["cube"][0] != results["sphere"][0]
    assert c.status(jobs["cancelled"])["state"] == "cancelled"
    info = c.info()
    assert info["workers"][0]["batch_jobs"] == 3 and info["workers"][0]["job_ids"] == []
    c.close()

    # The cube made alone in this process: the same optimisation (its final losses, which depend on
    # every random draw it made) and the same mesh.
    glb, metadata = results["cube"]
    alone = generate(GenerationSettings.from_dict(metadata["settings"]), device="cpu")
    for key, value in alone.metadata["final_losses"].items():
        assert metadata["final_losses"][key] == pytest.approx(value, rel=1e-3, abs=1e-6), key
    a, b = filled_voxels(glb), filled_voxels(alone.glb)
    iou = len(a & b) / len(a | b)
    assert iou >= 0.98, iou
