"""Training renders replayed from CUDA graphs (``backend.engine.graphed_render``, setting ``graph_render``).

The graphs themselves need CUDA (``-m gpu`` on the device machine); on the CPU the two things the
renderer changed for them are checked: the occupancy update keeps the storage a graph reads, and
the sample budget's counts can be taken out of a render (a replayed graph returns them).
"""

import pytest
import torch

from backend.engine.field import BackgroundMLP, NeRFField
from backend.engine.occupancy import SampleBudget, TorchOccGridEstimator
from backend.engine.renderer import VolumeRenderer


def _renderer(**kwargs) -> VolumeRenderer:
    torch.manual_seed(0)
    field = NeRFField(log2_table_size=12, max_resolution=128, blob_density=30.0)
    estimator = TorchOccGridEstimator([-1, -1, -1, 1, 1, 1], resolution=16)
    return VolumeRenderer(field, BackgroundMLP(), estimator, samples_per_ray=64, **kwargs)


def test_occupancy_update_writes_into_the_storage_a_graph_reads():
    """The estimator assigns a new ``binaries`` tensor on every update; a captured render would keep
    reading the old memory. The renderer copies the new grid into the old storage."""
    renderer = _renderer()
    estimator = renderer.estimator
    estimator.train()
    storage = estimator.binaries.data_ptr()
    assert bool(estimator.binaries.all())                   # starts all occupied
    renderer.update_occupancy(step=0)
    assert estimator.binaries.data_ptr() == storage
    occupied = estimator.binaries.clone()
    assert 0 < int(occupied.sum()) < occupied.numel()       # the blob: the update really changed it
    # Same values as the threshold the estimator applies to its occupancy values.
    expected = estimator.occs > torch.clamp(estimator.occs.mean(), max=0.01)
    assert torch.equal(occupied.reshape(-1), expected)
    with torch.no_grad():
        renderer.field.blob_density = 0.0                   # the field empties: the next update clears cells
        for net in renderer.field.modules():
            if isinstance(net, torch.nn.Linear):
                net.weight.zero_(), net.bias.fill_(-10.0)
    for step in (16, 32, 48):
        renderer.update_occupancy(step=step, warmup_steps=1000)
    assert estimator.binaries.data_ptr() == storage
    assert int(estimator.binaries.sum()) < int(occupied.sum())


def test_budget_counts_can_be_taken_out_of_a_render():
    """The counts recorded inside a captured render are taken out (a replay would not record them) and
    recorded again from the graph's output: only the latter reach the budget's sizes."""
    budget = SampleBudget()
    captured = torch.tensor([50, 40])                         # recorded while the graph was captured
    budget.record(64, torch.tensor([10, 4]))
    budget.record(64, captured)
    assert budget.take_last(64) is captured
    budget.record(64, torch.tensor([30, 20]))                # what the replayed graph's output records
    budget.refresh()
    assert budget._windows[64][-1] == [30, 20]               # the peak of [10, 4] and [30, 20]: not [50, 40]


def test_graph_render_is_a_speed_setting(tiny_model_path, tmp_path):
    """It changes how a render runs, not what it computes: a checkpoint made without it resumes with it
    (on by default since session 37; on the CPU the renderer ignores it)."""
    from backend.engine.trainer import prepare_generation
    from tests.helpers import tiny_settings

    assert tiny_settings().graph_render is True
    path = str(tmp_path / "run.pt")
    run = prepare_generation(tiny_settings(steps=4, graph_render=False), device="cpu").trainer
    run.train_step()
    run.save_checkpoint(path)
    resumed = prepare_generation(tiny_settings(steps=4), device="cpu").trainer
    resumed.load_checkpoint(path)
    assert resumed.step == 1 and resumed.renderer.graphed is None      # CPU: eager


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_training_renders_match_eager_ones_on_cuda():
    """Same field, same random stream: renders replayed from graphs give the eager image and hash-grid
    gradient, step after step, and the graphs were really captured and used."""
    results = {}
    for graphs in (False, True):
        renderer = _renderer(sampling="budget", graphs=graphs).cuda()
        field = renderer.field
        rays_o = torch.randn(1024, 3, device="cuda") * 0.1 + torch.tensor([0.0, 0.0, 2.0], device="cuda")
        rays_d = torch.nn.functional.normalize(-rays_o + torch.randn_like(rays_o) * 0.2, dim=-1)
        images, grads = [], []
        torch.manual_seed(7)
        for step in range(6):
            field.zero_grad()
            out = renderer(rays_o, rays_d, shading="lambertian", light_positions=rays_o * 1.2, stratified=True,
                           bg_color=torch.ones_like(rays_o), need_normals=True)
            (out["rgb"].square().sum() + out["orient_sum"]).backward()
            images.append(out["rgb"].detach().clone())
            grads.append(field.encoding.table.grad.clone())
            del out              # as the trainer: no step's autograd graph alive at the next render
        results[graphs] = (images, grads, renderer)
    renderer = results[True][2]
    assert not renderer.graphed.failed and len(renderer.graphed.graphs) == 1
    for step in range(6):
        assert torch.allclose(results[True][0][step], results[False][0][step], atol=1e-5), step
        assert torch.allclose(results[True][1][step], results[False][1][step], rtol=1e-3, atol=1e-6), step


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_failed_capture_falls_back_to_eager_renders_that_still_draw_random_samples(caplog):
    """A render that waits for the GPU cannot be captured: the capture fails, the warning says so,
    and the same render and the ones after it run eagerly, jitter included (a failed capture used to
    leave the random stream unusable: every later ``torch.rand`` raised)."""
    renderer = _renderer(sampling="budget", graphs=True).cuda()
    take_last = renderer.budget.take_last

    def take_last_with_a_host_read(n_rays):
        counts = take_last(n_rays)
        int(counts[0])                    # a host read: illegal while a graph is being captured
        return counts

    renderer.budget.take_last = take_last_with_a_host_read
    rays_o = torch.randn(512, 3, device="cuda") * 0.1 + torch.tensor([0.0, 0.0, 2.0], device="cuda")
    rays_d = torch.nn.functional.normalize(-rays_o + torch.randn_like(rays_o) * 0.2, dim=-1)
    images = []
    for step in range(5):
        out = renderer(rays_o, rays_d, shading="albedo", stratified=True, bg_color=torch.ones_like(rays_o))
        out["rgb"].square().sum().backward()
        images.append(out["rgb"].detach().clone())
        del out
    assert renderer.graphed.failed and not renderer.graphed.graphs
    assert "capture of the training render failed" in caplog.text
    assert torch.isfinite(torch.stack(images)).all()
    assert not torch.equal(images[3], images[4])          # the stratified jitter still changes per step
