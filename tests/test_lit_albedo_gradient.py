"""The ``lit_albedo_gradient`` setting: with it off, a lit (lambertian) render's gradient shapes the
geometry and leaves the colour alone (the colour is learnt from the albedo-shaded renders).

Why it exists: prior v4 darkened a wooden barrel to near-black through the lit renders (SDS takes a
darker albedo for shadow); with the colour kept out of them the barrel stayed wood-brown
(``backend/prior/README.md``, "Session 16").
"""

import pytest
import torch

from backend.engine.field import BackgroundMLP, NeRFField
from backend.engine.occupancy import TorchOccGridEstimator
from backend.engine.renderer import VolumeRenderer


def _renderer(**kwargs) -> VolumeRenderer:
    torch.manual_seed(0)
    field = NeRFField(log2_table_size=12, max_resolution=128, blob_density=30.0)
    estimator = TorchOccGridEstimator([-1, -1, -1, 1, 1, 1], resolution=16)
    return VolumeRenderer(field, BackgroundMLP(), estimator, samples_per_ray=64, **kwargs)


def _rays(n: int = 256):
    g = torch.Generator().manual_seed(1)
    rays_o = torch.randn(n, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, 2.0])
    rays_d = torch.nn.functional.normalize(-rays_o + torch.randn(n, 3, generator=g) * 0.2, dim=-1)
    return rays_o, rays_d


def _head_gradients(renderer: VolumeRenderer, albedo_gradient: bool):
    """The lit image, and the gradient of its brightness on the MLP's last layer: row 0 makes the
    density, rows 1-3 the albedo."""
    rays_o, rays_d = _rays()
    renderer.field.zero_grad()
    torch.manual_seed(3)
    out = renderer(rays_o, rays_d, shading="lambertian", light_positions=rays_o * 1.2,
                   bg_color=torch.ones_like(rays_o), stratified=True, need_normals=True,
                   albedo_gradient=albedo_gradient)
    (out["rgb"].sum() + out["orient_sum"]).backward()
    grad = renderer.field.mlp[-1].weight.grad
    return out["rgb"].detach(), grad[0].abs().sum().item(), grad[1:4].abs().sum().item()


@pytest.mark.parametrize("checkpoint_rays", [0, 64])
def test_a_lit_render_without_albedo_gradient_moves_the_geometry_only(checkpoint_rays):
    """Same image; the density row still gets its gradient, the albedo rows get none (also through
    the checkpointed chunks a large render takes)."""
    renderer = _renderer(checkpoint_rays=checkpoint_rays)
    image_on, density_on, albedo_on = _head_gradients(renderer, albedo_gradient=True)
    image_off, density_off, albedo_off = _head_gradients(renderer, albedo_gradient=False)
    assert torch.allclose(image_on, image_off)
    assert albedo_on > 1e-4 and density_on > 1e-4
    assert albedo_off == 0.0
    assert density_off > 1e-4


def test_the_setting_keeps_the_colour_out_of_lit_training_steps_only():
    """In training: a lit step with the setting off gives the albedo rows no gradient; an
    albedo-shaded step still does (that is where the colour is learnt)."""
    from backend.engine.trainer import prepare_generation
    from tests.helpers import tiny_settings

    def albedo_rows_gradient(shading: str, lit_albedo_gradient: bool) -> float:
        run = prepare_generation(tiny_settings(albedo_warmup_steps=0, shading=shading,
                                               lit_albedo_gradient=lit_albedo_gradient), device="cpu").trainer
        render = run.render_step()
        assert render.shading == shading
        guide = run.guidance.guide_many([run.guidance_request(render)])[0]
        losses = run.step_losses(render, guide)
        run.zero_grad()
        sum(losses.values()).backward()
        return run.field.mlp[-1].weight.grad[1:4].abs().sum().item()

    assert albedo_rows_gradient("lambertian", True) > 0.0
    assert albedo_rows_gradient("lambertian", False) == 0.0
    assert albedo_rows_gradient("albedo", False) > 0.0
