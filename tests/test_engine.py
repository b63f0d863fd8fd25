"""Engine parts against closed forms and brute force: hash grid, renderer, cameras, prompts."""

import math

import pytest
import torch
from torch import nn

from backend.engine.cameras import (camera_rays, orbit_cameras, sample_cameras, view_direction,
                                    view_prompt)
from backend.engine.field import BackgroundMLP, NeRFField
from backend.engine.hashgrid import CORNERS, HashGridEncoding
from backend.engine.occupancy import TorchOccGridEstimator
from backend.engine.renderer import VolumeRenderer
from shared.settings import GenerationSettings, SettingError, parse_resolution_schedule


# -- hash grid ----------------------------------------------------------------------------------
def brute_force_encoding(enc: HashGridEncoding, x: torch.Tensor) -> torch.Tensor:
    """Point by point, level by level, corner by corner: the definition of the encoding."""
    out = torch.zeros(x.shape[0], enc.output_dim, dtype=torch.float64)
    table = enc.table.detach().double()
    for i, p in enumerate(x):
        x01 = ((p + enc.bound) / (2 * enc.bound)).clamp(0, 1)
        for level, res in enumerate(enc.resolutions):
            if level >= enc.n_active:
                continue
            pos = x01 * res                    # float32, as the encoder: the same cell and fraction
            base = pos.floor().clamp(max=res - 1)
            frac = (pos - base).double()
            acc = torch.zeros(enc.n_features, dtype=torch.float64)
            for c in CORNERS:
                corner = base.long() + c
                w = torch.prod(torch.where(c.bool(), frac, 1 - frac))
                acc += w * table[enc.level_index(level, corner)]
            out[i, level * enc.n_features:(level + 1) * enc.n_features] = acc
    return out


@pytest.mark.parametrize("log2_size", [19, 10])   # 10: most levels hash (collisions), 19: dense + hashed
def test_hash_encoding_matches_brute_force(log2_size):
    torch.manual_seed(0)
    enc = HashGridEncoding(n_levels=6, n_features=2, log2_table_size=log2_size, base_resolution=4,
                           max_resolution=300)
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    x = torch.rand(64, 3) * 2 - 1
    x[0] = torch.tensor([1.0, -1.0, 1.0])        # corners of the box are valid inputs
    assert any(enc.dense) and (log2_size == 19 or not all(enc.dense))
    got = enc(x).double()
    assert torch.allclose(got, brute_force_encoding(enc, x), atol=1e-5)
    enc.set_active_levels(3)
    got = enc(x).double()
    assert torch.allclose(got, brute_force_encoding(enc, x), atol=1e-5)
    assert got[:, 6:].abs().max() == 0


def test_hash_encoding_gradients_reach_table_and_positions():
    torch.manual_seed(0)
    enc = HashGridEncoding(n_levels=4, log2_table_size=12, base_resolution=4, max_resolution=64)
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    x = (torch.rand(32, 3) * 1.8 - 0.9).requires_grad_(True)
    y = enc(x).pow(2).sum()
    gx, = torch.autograd.grad(y, x, create_graph=True)
    gx.pow(2).sum().backward()        # double backward, as analytic normals need
    assert enc.table.grad is not None and enc.table.grad.abs().sum() > 0
    # Finite-difference check of d(encoding)/dx.
    eps = 1e-3
    e = torch.zeros(3)
    e[0] = eps
    p = x.detach()[:1]
    fd = (enc(p + e).pow(2).sum() - enc(p - e).pow(2).sum()) / (2 * eps)
    assert torch.allclose(gx[0, 0], fd, rtol=5e-2, atol=1e-3)


# -- renderer -----------------------------------------------------------------------------------
class AnalyticSphere(nn.Module):
    """Constant density inside a sphere, constant colour: the closed-form test scene."""

    def __init__(self, radius=0.5, sigma=8.0, color=(0.2, 0.6, 0.9)):
        super().__init__()
        self.radius, self.sigma = radius, sigma
        self.register_buffer("color", torch.tensor(color))

    def density(self, x):
        return torch.where(x.norm(dim=-1) < self.radius, self.sigma, 0.0)

    def forward(self, x, with_normals=False):
        normals = torch.nn.functional.normalize(x, dim=-1) if with_normals else None
        return self.density(x), self.color.expand(x.shape[0], 3), normals


def closed_form(radius, sigma, distance, offset):
    """Opacity and expected depth of a ray passing ``offset`` from the centre of a uniform sphere,
    starting ``distance`` before its closest approach to the centre."""
    if offset >= radius:
        return 0.0, 0.0
    half = math.sqrt(radius**2 - offset**2)
    t0, chord = distance - half, 2 * half
    opacity = 1 - math.exp(-sigma * chord)
    depth = t0 * opacity + (1 / sigma - math.exp(-sigma * chord) * (chord + 1 / sigma))
    return opacity, depth / opacity


@pytest.mark.parametrize("update_grid", [False, True])
def test_renderer_matches_closed_form_on_sphere(update_grid):
    torch.manual_seed(0)
    sphere = AnalyticSphere()
    estimator = TorchOccGridEstimator([-1, -1, -1, 1, 1, 1], resolution=32)
    renderer = VolumeRenderer(sphere, BackgroundMLP(), estimator, samples_per_ray=2048)
    if update_grid:
        renderer.train()
        for step in range(0, 257, 16):
            renderer.update_occupancy(step)
        renderer.eval()
        assert 0.02 < estimator.binaries.float().mean() < 0.2    # it did skip empty space
    distance = 2.0
    offsets = torch.tensor([0.0, 0.1, 0.25, 0.4, 0.49, 0.6])
    rays_o = torch.stack([torch.full_like(offsets, distance), offsets, torch.zeros_like(offsets)], -1)
    rays_d = torch.tensor([[-1.0, 0.0, 0.0]]).expand_as(rays_o).contiguous()
    bg = torch.ones_like(rays_o)
    out = renderer(rays_o, rays_d, bg_color=bg)
    for i, b in enumerate(offsets.tolist()):
        opacity, depth = closed_form(sphere.radius, sphere.sigma, distance, b)
        assert out["opacity"][i, 0].item() == pytest.approx(opacity, abs=0.01), b
        if opacity > 0.05:
            assert out["depth"][i, 0].item() / out["opacity"][i, 0].item() == pytest.approx(depth, abs=0.01), b
        expected_rgb = opacity * sphere.color + (1 - opacity) * bg[i]
        assert torch.allclose(out["rgb"][i], expected_rgb, atol=0.01)


def test_field_starts_as_centred_blob_with_outward_normals():
    torch.manual_seed(0)
    field = NeRFField(log2_table_size=12, max_resolution=256)
    centre = torch.zeros(1, 3)
    far = torch.tensor([[0.9, 0.0, 0.0]])
    assert field.density(centre).item() > 5.0 > 0.1 > field.density(far).item()
    pts = torch.tensor([[0.3, 0.0, 0.0], [0.0, -0.3, 0.0], [0.0, 0.0, 0.3]])
    for normal_type in ("analytic", "finite_difference"):
        field.normal_type = normal_type
        _, _, normals = field(pts, with_normals=True)
        assert (normals * torch.nn.functional.normalize(pts, dim=-1)).sum(-1).min() > 0.95


# -- cameras and prompts ------------------------------------------------------------------------
def test_camera_sampling_stays_inside_ranges():
    torch.manual_seed(0)
    s = GenerationSettings(prompt="x", elevation_min=5, elevation_max=30, azimuth_min=-90, azimuth_max=60,
                           distance_min=1.6, distance_max=1.9, fovy_min=35, fovy_max=50, camera_perturb=0.0,
                           center_perturb=0.0, up_perturb=0.0)
    for _ in range(50):
        cams = sample_cameras(s, 4)
        assert ((cams.elevation >= 5 - 1e-4) & (cams.elevation <= 30 + 1e-4)).all()
        assert ((cams.azimuth >= -90 - 1e-4) & (cams.azimuth <= 60 + 1e-4)).all()
        assert ((cams.distance >= 1.6) & (cams.distance <= 1.9)).all()
        fov = torch.rad2deg(cams.fovy)
        assert ((fov >= 35 - 1e-4) & (fov <= 50 + 1e-4)).all()
        assert torch.allclose(cams.positions.norm(dim=-1), cams.distance, atol=1e-5)
        # Stratified: one azimuth in each quarter of the range.
        strata = ((cams.azimuth + 90) / 150 * 4).floor().clamp(0, 3).sort().values
        assert strata.tolist() == [0, 1, 2, 3]


def test_cameras_look_at_the_object():
    cams = orbit_cameras(20.0, [0.0, 90.0, 180.0], 2.0, 50.0)
    rays_o, rays_d = camera_rays(cams, 9)
    centre_dir = rays_d[:, 4, 4]
    assert torch.allclose(centre_dir, -torch.nn.functional.normalize(cams.positions, dim=-1), atol=1e-5)
    # Azimuth 0 sits on +X (the front), and image "up" points to world +Z.
    assert cams.positions[0, 0] > 1.5
    assert (rays_d[0, 0, 4, 2] > rays_d[0, 8, 4, 2]).item()


@pytest.mark.parametrize("elevation,azimuth,expected", [
    (0, 0, "front"), (0, 44.9, "front"), (0, 45.1, "side"), (0, -45.1, "side"), (0, 134.9, "side"),
    (0, 135.1, "back"), (0, -179, "back"), (0, 180, "back"), (59.9, 0, "front"), (60.1, 0, "overhead"),
    (60.1, 180, "overhead")])
def test_view_names_at_thresholds(elevation, azimuth, expected):
    assert view_direction(elevation, azimuth, 45.0, 60.0) == expected


def test_view_thresholds_are_configurable():
    assert view_direction(0, 50, front_threshold=60) == "front"
    assert view_direction(50, 0, overhead_threshold=40) == "overhead"
    assert view_prompt("a red cube", "back") == "a red cube, back view"


@pytest.mark.parametrize("azimuth,expected", [
    (0, "front"), (22.4, "front"), (-22.4, "front"), (22.6, "front left"), (90, "left"), (-90, "right"),
    (135, "back left"), (179.9, "back"), (-179.9, "back"), (-67.6, "right"), (-67.4, "front right")])
def test_compass_view_names_are_45_degree_sectors(azimuth, expected):
    assert view_direction(0, azimuth, naming="compass") == expected
    assert view_direction(70, azimuth, naming="compass") == "overhead"
    assert view_prompt("a cube", expected, "compass") == f"a cube, {expected} view"


def test_compass_naming_is_a_setting_with_a_clear_error():
    from backend.engine.cameras import COMPASS_SUFFIXES, view_suffixes

    assert view_suffixes("compass") is COMPASS_SUFFIXES and len(COMPASS_SUFFIXES) == 9
    with pytest.raises(ValueError, match="view_naming"):
        view_suffixes("octant")
    with pytest.raises(SettingError, match="view_naming"):
        GenerationSettings(view_naming="octant").validate()


# -- settings -----------------------------------------------------------------------------------
def test_settings_reject_bad_values_naming_the_field():
    with pytest.raises(SettingError) as e:
        GenerationSettings.from_dict({"prompt": "x", "guidance_scale": 500})
    assert e.value.name == "guidance_scale" and "[1, 200]" in str(e.value)
    with pytest.raises(SettingError) as e:
        GenerationSettings.from_dict({"prompt": "x", "colour": 1})
    assert e.value.name == "colour"
    with pytest.raises(SettingError) as e:
        GenerationSettings.from_dict({"prompt": "x" * 501})
    assert e.value.name == "prompt"
    assert [s.resolution for s in parse_resolution_schedule("64x4, 128x2@200,256x1@300")] == [64, 128, 256]
    s = GenerationSettings.from_dict({"prompt": "x", "resolution_schedule": "64x4,128x2@200", "steps": 400})
    assert s.stage_at(199).batch_size == 4 and s.stage_at(200).resolution == 128


@pytest.mark.parametrize("shading", ["albedo", "lambertian"])
def test_checkpointed_chunks_give_the_same_image_and_gradients(shading):
    """512^2 renders run in checkpointed chunks on the GPU: same values, same gradients."""
    torch.manual_seed(0)
    field = NeRFField(log2_table_size=12, max_resolution=128)
    field.normal_type = "analytic"
    estimator = TorchOccGridEstimator([-1, -1, -1, 1, 1, 1], resolution=16)
    cams = orbit_cameras(20.0, [0.0, 120.0], 1.8, 50.0)
    rays_o, rays_d = (t.reshape(-1, 3) for t in camera_rays(cams, 12))
    light = rays_o * 1.2
    grads, outs = [], []
    for chunk in (0, 37):
        renderer = VolumeRenderer(field, BackgroundMLP(), estimator, samples_per_ray=64, checkpoint_rays=chunk)
        field.zero_grad()
        torch.manual_seed(1)
        out = renderer(rays_o, rays_d, shading=shading, light_positions=light, bg_color=torch.ones_like(rays_o),
                       need_normals=shading != "albedo")
        loss = out["rgb"].square().sum() + out.get("orient_sum", torch.zeros(()))
        loss.backward()
        grads.append(field.encoding.table.grad.clone())
        outs.append(out)
    assert torch.allclose(outs[0]["rgb"], outs[1]["rgb"], atol=1e-5)
    assert int(outs[0]["n_samples"]) == int(outs[1]["n_samples"]) > 0
    if shading == "lambertian":
        assert torch.allclose(outs[0]["orient_sum"], outs[1]["orient_sum"], rtol=1e-4, atol=1e-6)
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)


# -- closed-form Jacobian and normals (no double backward) ------------------------------------------
@pytest.mark.parametrize("n_active", [6, 4])
def test_hash_encoding_jacobian_matches_autograd(n_active):
    torch.manual_seed(3)
    enc = HashGridEncoding(n_levels=6, n_features=2, log2_table_size=10, base_resolution=4, max_resolution=200)
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    enc.set_active_levels(n_active)
    x = torch.rand(40, 3, dtype=torch.float32) * 2.2 - 1.1           # some points outside the box
    feats, jac = enc.forward_with_jacobian(x)
    assert torch.equal(feats, enc(x))
    xg = x.clone().requires_grad_(True)
    out = enc(xg)
    rows = [torch.autograd.grad(out[:, k].sum(), xg, retain_graph=True)[0] for k in range(out.shape[1])]
    expected = torch.stack(rows, dim=1)                                 # (N, E, 3)
    assert torch.allclose(jac, expected, atol=1e-4)
    assert jac[:, 2 * n_active:].abs().sum() == 0
    # The Jacobian is differentiable in the table: its gradient equals autograd's second derivative.
    w = torch.randn_like(jac)
    g_closed, = torch.autograd.grad((jac * w).sum(), enc.table)
    xg = x.clone().requires_grad_(True)
    out = enc(xg)
    g_x = torch.stack([torch.autograd.grad(out[:, k].sum(), xg, create_graph=True)[0]
                       for k in range(out.shape[1])], dim=1)
    g_auto, = torch.autograd.grad((g_x * w).sum(), enc.table)
    assert torch.allclose(g_closed, g_auto, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("activation", ["softplus", "exp"])
def test_closed_form_normals_match_double_backward(activation):
    """The field's analytic normals (encoder Jacobian pushed through the MLP by hand) equal
    -normalize(d density / dx) from autograd, and so do the parameter gradients of a loss on them."""
    torch.manual_seed(1)
    field = NeRFField(n_levels=6, log2_table_size=12, base_resolution=4, max_resolution=128,
                      density_activation=activation)
    with torch.no_grad():
        field.encoding.table.uniform_(-0.5, 0.5)
    x = torch.rand(300, 3) * 1.6 - 0.8
    density, albedo, normals = field(x, with_normals=True)
    weights = torch.randn(300, 3)
    loss = (normals * weights).sum() + density.sum() * 1e-2 + albedo.sum()
    params = [field.encoding.table, *field.mlp.parameters()]
    closed = torch.autograd.grad(loss, params)

    xg = x.clone().requires_grad_(True)
    h = field.mlp(field.encoding(xg))
    ref_density = field._activate(h[:, 0], xg)
    grad, = torch.autograd.grad(ref_density.sum(), xg, create_graph=True)
    ref_normals = torch.nn.functional.normalize(-grad, dim=-1, eps=1e-8)
    assert torch.allclose(density, ref_density, atol=1e-5)
    assert torch.allclose(normals, ref_normals, atol=1e-4)
    ref_loss = (ref_normals * weights).sum() + ref_density.sum() * 1e-2 + torch.sigmoid(h[:, 1:4]).sum()
    reference = torch.autograd.grad(ref_loss, params)
    for got, want in zip(closed, reference):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-3), (got - want).abs().max()


# -- fixed sample budget (no host sync in a training step) ------------------------------------------
def _budget_scene():
    torch.manual_seed(0)
    # A dense blob: central rays become opaque, so the early-stop culling has work to do.
    field = NeRFField(log2_table_size=12, max_resolution=128, blob_density=30.0)
    estimator = TorchOccGridEstimator([-1, -1, -1, 1, 1, 1], resolution=16)
    estimator.binaries[0, :, :, :8] = False        # part of the box empty: the grid must be read
    cams = orbit_cameras(20.0, [0.0, 120.0], 1.8, 50.0)
    rays_o, rays_d = (t.reshape(-1, 3) for t in camera_rays(cams, 12))
    return field, estimator, rays_o, rays_d


def _render_with(renderer, field, rays_o, rays_d, shading="lambertian", seed=1):
    field.zero_grad()
    torch.manual_seed(seed)
    out = renderer(rays_o, rays_d, shading=shading, light_positions=rays_o * 1.2, stratified=True,
                   bg_color=torch.ones_like(rays_o), need_normals=shading != "albedo")
    (out["rgb"].square().sum() + out.get("orient_sum", torch.zeros(()))).backward()
    return out, field.encoding.table.grad.clone()


@pytest.mark.parametrize("shading", ["albedo", "lambertian"])
def test_fixed_sample_budget_render_equals_the_dynamic_one(shading):
    """Where the budget holds every sample, the fixed-size buffers give the dynamic sampler's image,
    opacity, orientation term and hash-grid gradient (padding carries no weight and no gradient)."""
    field, estimator, rays_o, rays_d = _budget_scene()
    dynamic = VolumeRenderer(field, BackgroundMLP(), estimator, samples_per_ray=64)
    budget = VolumeRenderer(field, dynamic.background, estimator, samples_per_ray=64, sampling="budget")
    out_d, grad_d = _render_with(dynamic, field, rays_o, rays_d, shading)
    out_b, grad_b = _render_with(budget, field, rays_o, rays_d, shading)
    candidates, visible = budget.budget.sizes_for(rays_o.shape[0])
    assert int(out_b["n_samples"]) == int(out_d["n_samples"]) > 0
    assert visible > int(out_b["n_samples"])                 # padding really was there
    for key in ("rgb", "opacity", "depth"):
        assert torch.allclose(out_b[key], out_d[key], atol=1e-6), key
    if shading == "lambertian":
        assert torch.allclose(out_b["orient_sum"], out_d["orient_sum"], rtol=1e-5, atol=1e-7)
        assert torch.allclose(out_b["normal_map"], out_d["normal_map"], atol=1e-6)
    assert grad_d.abs().sum() > 0 and torch.allclose(grad_b, grad_d, rtol=1e-5, atol=1e-8)


def test_fixed_sample_budget_grows_after_an_overflow():
    """A budget too small for the scene drops samples for that step (the image differs), reads the
    counts back afterwards and grows, after which the render equals the dynamic one again."""
    field, estimator, rays_o, rays_d = _budget_scene()
    dynamic = VolumeRenderer(field, BackgroundMLP(), estimator, samples_per_ray=64)
    budget = VolumeRenderer(field, dynamic.background, estimator, samples_per_ray=64, sampling="budget")
    n_rays = rays_o.shape[0]
    budget.budget.sizes[n_rays] = [budget.budget.sizes_for(n_rays)[0], 256]     # visible samples: too few
    out_d, _ = _render_with(dynamic, field, rays_o, rays_d, "albedo")
    assert int(out_d["n_samples"]) > 256                     # the scene needs more than the budget
    small, _ = _render_with(budget, field, rays_o, rays_d, "albedo")
    assert int(small["n_samples"]) == 256 and not torch.allclose(small["rgb"], out_d["rgb"], atol=1e-4)
    grown, _ = _render_with(budget, field, rays_o, rays_d, "albedo")   # refresh() adopts the counts
    assert budget.budget.overflowed >= 1 and budget.budget.sizes[n_rays][1] > 256
    assert torch.allclose(grown["rgb"], out_d["rgb"], atol=1e-6)


def test_packed_segment_start_is_the_first_sample_of_each_ray():
    from backend.engine.occupancy import packed_segment_start

    counts = torch.randint(0, 5, (50,), generator=torch.Generator().manual_seed(3))
    ray_indices = torch.repeat_interleave(torch.arange(50), counts)
    expected = [ray_indices.tolist().index(r) for r in ray_indices.tolist()]
    assert packed_segment_start(ray_indices).tolist() == expected
    assert packed_segment_start(ray_indices[:0]).numel() == 0


def test_distortion_sum_is_the_double_sum_and_prefers_a_surface_to_haze():
    from backend.engine.occupancy import distortion_sum

    g = torch.Generator().manual_seed(5)
    counts = torch.randint(1, 7, (20,), generator=g)
    ray_indices = torch.repeat_interleave(torch.arange(20), counts)
    t_starts = torch.cat([torch.sort(torch.rand(int(c), generator=g) * 3.0).values for c in counts])
    t_ends = t_starts + 0.05
    weights = torch.rand(ray_indices.shape[0], generator=g) * 0.3
    mid = 0.5 * (t_starts + t_ends)
    expected = 0.0
    for r in range(20):
        m = ray_indices == r
        w, x = weights[m], mid[m]
        expected += float((w[:, None] * w[None] * (x[:, None] - x[None]).abs()).sum()
                          + (w**2 * (t_ends - t_starts)[m]).sum() / 3)
    assert float(distortion_sum(weights, t_starts, t_ends, ray_indices)) == pytest.approx(expected, rel=1e-5)
    # One ray, the same total weight 0.8: on two neighbouring samples vs spread over 1.6 units.
    t = torch.arange(0.0, 1.6, 0.2)
    one_ray = torch.zeros(len(t), dtype=torch.long)
    surface = torch.zeros(len(t)).index_fill(0, torch.tensor([3, 4]), 0.4)
    haze = torch.full((len(t),), 0.1)
    assert distortion_sum(surface, t, t + 0.2, one_ray) < 0.5 * distortion_sum(haze, t, t + 0.2, one_ray)


def test_distortion_weight_adds_a_loss_that_reaches_the_field(tiny_model_path):
    from backend.engine.trainer import prepare_generation
    from tests.helpers import tiny_settings

    off = prepare_generation(tiny_settings(steps=2), device="cpu").trainer
    assert "distortion" not in off.train_step()
    trainer = prepare_generation(tiny_settings(steps=2, distortion_weight=10.0), device="cpu").trainer
    render = trainer.render_step()
    losses = trainer.step_losses(render, {"loss_sds": torch.zeros(())})
    assert float(losses["distortion"]) == pytest.approx(10.0 * float(render.out["distortion_sum"]) / (32 * 32))
    trainer.zero_grad()
    losses["distortion"].backward()
    grads = [p.grad for p in trainer.field.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
