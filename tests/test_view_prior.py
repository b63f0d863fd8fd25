"""Image-conditioned guidance (``zero123``) and the project's view prior: loading the Zero-1-to-3
diffusers layout under both projection names, the relative camera and its sign convention, the
direction of the SDS gradient and the image CFG, the shipped prior, and its training data."""

import json
import math

import pytest
import torch

from backend.engine.cameras import orbit_cameras, wrap_azimuth
from backend.engine.guidance.models import load_guidance
from backend.engine.guidance.zero123 import Zero123Guidance, reference_camera, relative_camera
from backend.engine.types import ReferenceImage
from backend.view_prior.model import build_tiny


@pytest.fixture(scope="module")
def tiny_layouts(tmp_path_factory):
    """A random tiny Zero-1-to-3 folder per published projection folder name."""
    root = tmp_path_factory.mktemp("zero123")
    return {f: build_tiny(root / f, projection_folder=f, seed=1) for f in ("clip_camera_projection", "cc_projection")}


def reference(elevation=10.0, azimuth=20.0, distance=1.8, size=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(size, size)
    mask[8:32, 10:30] = 1.0
    return ReferenceImage(torch.rand(size, size, 3, generator=g), mask, elevation, azimuth, distance)


# -- loading ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder,cls,layer", [("clip_camera_projection", "CLIPCameraProjection", "proj"),
                                              ("cc_projection", "CCProjection", "projection")])
def test_both_published_layouts_load_with_from_pretrained(tiny_layouts, folder, cls, layer):
    from safetensors.torch import load_file

    path = tiny_layouts[folder]
    index = json.loads((path / "model_index.json").read_text())
    assert folder in index and index["unet"] == ["diffusers", "UNet2DConditionModel"]
    g = load_guidance(str(path), "cpu", guidance_type="zero123")
    assert isinstance(g, Zero123Guidance) and type(g.projection).__name__ == cls
    assert g.unet.config.in_channels == 8 and g.resolution == 32 and g.clip_size == 32
    # The projection's weights are the file's (not a fresh initialisation), under the class's own key.
    saved = load_file(str(path / folder / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(getattr(g.projection, layer).weight, saved[f"{layer}.weight"])
    # And the token is that Linear applied to [image embedding, camera].
    g.set_reference(reference())
    camera = torch.tensor([[0.1, 0.5, math.sqrt(0.75), 0.0]])
    expected = torch.cat([g.ref_embedding[0, 0], camera[0]]) @ saved[f"{layer}.weight"].T + saved[f"{layer}.bias"]
    assert torch.allclose(g.camera_token(camera)[0, 0], expected, atol=1e-5)


def test_a_text_model_is_refused_with_a_clear_error(tmp_path):
    from backend.engine.guidance.models import build_tiny_sd

    path = build_tiny_sd(tmp_path / "sd")
    with pytest.raises(FileNotFoundError, match="camera projection"):
        Zero123Guidance(str(path), "cpu")


def test_reference_image_validation_names_the_field():
    with pytest.raises(ValueError, match="mask must be H x W"):
        ReferenceImage(torch.rand(8, 8, 3), torch.ones(8, 9))
    with pytest.raises(ValueError, match="elevation must be in"):
        ReferenceImage(torch.rand(8, 8, 3), torch.ones(8, 8), elevation=95.0)


# -- the relative camera ----------------------------------------------------------------------------
def test_relative_camera_is_zero_at_the_reference_and_follows_the_engine_azimuth():
    ref = reference(elevation=10.0, azimuth=20.0, distance=1.8)
    cams = orbit_cameras(10.0, [20.0, 50.0, -10.0], 1.8, 50.0)
    delta = reference_camera(cams, ref)
    assert torch.allclose(delta[0], torch.tensor([0.0, 0.0, 1.0, 0.0]), atol=1e-6)
    # +30 degrees of engine azimuth: sin +0.5; -30: sin -0.5.
    assert torch.allclose(delta[1], torch.tensor([0.0, 0.5, math.sqrt(0.75), 0.0]), atol=1e-6)
    assert torch.allclose(delta[2], torch.tensor([0.0, -0.5, math.sqrt(0.75), 0.0]), atol=1e-6)
    # Zero-1-to-3 measures azimuth as atan2(y, x) of the camera position (Z up): the engine's +30
    # camera really is 30 degrees counter-clockwise from the reference's.
    pos = cams.c2w[:, :3, 3]
    atan = torch.rad2deg(torch.atan2(pos[:, 1], pos[:, 0]))
    assert torch.allclose(wrap_azimuth(atan[1] - atan[0]), torch.tensor(30.0), atol=1e-3)
    # A camera above the reference has a smaller polar angle: Δpolar < 0; farther: Δdistance > 0.
    up = reference_camera(orbit_cameras(40.0, [20.0], 2.3, 50.0), ref)[0]
    assert math.isclose(float(up[0]), math.radians(-30.0), rel_tol=1e-5) and math.isclose(float(up[3]), 0.5, rel_tol=1e-5)


def test_relative_camera_broadcasts_over_batches_of_references():
    out = relative_camera(torch.tensor([0.0, 30.0]), torch.tensor([90.0, 0.0]), 1.8,
                          torch.tensor([0.0, 0.0]), torch.tensor([0.0, 90.0]), 1.8)
    assert torch.allclose(out[:, 1], torch.tensor([1.0, -1.0]), atol=1e-6)
    assert torch.allclose(out[:, 0], torch.tensor([0.0, math.radians(-30.0)]), atol=1e-6)


# -- SDS and CFG ------------------------------------------------------------------------------------
def test_sds_gradient_moves_the_render_towards_the_denoisers_prediction(tiny_layouts):
    """With t and noise fixed, -grad(loss_sds) on the render moves its latent towards the denoiser's
    x0 estimate (SDS's gradient is w * sqrt(a)/sqrt(1-a) * (z - x0_hat) in latent space)."""
    g = load_guidance(str(tiny_layouts["clip_camera_projection"]), "cpu", guidance_type="zero123")
    g.set_reference(reference())
    cams = orbit_cameras(10.0, [80.0, -60.0], 1.8, 50.0)
    rgb = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    t_range = (0.5, 0.5)

    torch.manual_seed(7)
    out = g(rgb, g.encode_prompts("", "", {}), ["", ""], cameras=cams, guidance_scale=3.0, t_range=t_range)
    out["loss_sds"].backward()
    assert rgb.grad.abs().sum() > 0

    # The same draws as the call above (posterior sample, t, noise), in its order.
    torch.manual_seed(7)
    with torch.no_grad():
        z = g.encode_images(rgb.permute(0, 3, 1, 2)).float()
        t = torch.randint(500, 501, (2,))
        noise = torch.randn(z.shape)
        a = g.alphas[t].view(-1, 1, 1, 1)
        noisy = g.scheduler.add_noise(z, noise, t)
        eps = g.predict_noise_image(noisy, t, reference_camera(cams, g.reference), 3.0)
        x0_hat = (noisy - (1 - a).sqrt() * eps) / a.sqrt()

    def distance(image):
        torch.manual_seed(7)          # the same posterior sample
        with torch.no_grad():
            return float((g.encode_images(image.permute(0, 3, 1, 2)).float() - x0_hat).norm())

    step = 1e-3 / rgb.grad.abs().max()
    d0 = distance(rgb.detach())
    assert distance(rgb.detach() - step * rgb.grad) < d0 < distance(rgb.detach() + step * rgb.grad)


def test_image_cfg_nulls_both_the_token_and_the_reference_latent(tiny_layouts):
    g = load_guidance(str(tiny_layouts["cc_projection"]), "cpu", guidance_type="zero123")
    g.set_reference(reference())
    noisy = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([300, 700])
    camera = reference_camera(orbit_cameras(0.0, [45.0, 180.0], 1.8, 50.0), g.reference)
    with torch.no_grad():
        token = g.camera_token(camera)
        ref = g.ref_latent.expand(2, -1, -1, -1)
        cond = g.unet(torch.cat([noisy, ref], 1), t, encoder_hidden_states=token).sample
        uncond = g.unet(torch.cat([noisy, torch.zeros_like(ref)], 1), t,
                        encoder_hidden_states=torch.zeros_like(token)).sample
    assert torch.allclose(g.predict_noise_image(noisy, t, camera, 1.0), cond, atol=1e-5)
    assert torch.allclose(g.predict_noise_image(noisy, t, camera, 0.0), uncond, atol=1e-5)
    assert torch.allclose(g.predict_noise_image(noisy, t, camera, 3.0), uncond + 3.0 * (cond - uncond), atol=1e-4)


def test_guidance_without_a_reference_says_so(tiny_layouts):
    g = Zero123Guidance(str(tiny_layouts["clip_camera_projection"]), "cpu")
    with pytest.raises(RuntimeError, match="set_reference"):
        g(torch.rand(1, 32, 32, 3), g.encode_prompts("", "", {}), [""], cameras=orbit_cameras(0.0, [0.0], 1.8, 50.0),
          guidance_scale=3.0, t_range=(0.2, 0.8))


# -- the shipped view prior -------------------------------------------------------------------------
def test_shipped_view_prior_loads_as_builtin_and_uses_its_reference():
    """``model="builtin"`` with ``guidance_type="zero123"`` is the committed view prior (12 MB at most,
    fp16), and it has learnt to use the reference: a noised latent of the reference is denoised
    better with the image condition than without."""
    from backend.prior.render import BACKGROUNDS, entry_index, render
    from backend.view_prior import WEIGHTS_DIR

    files = [f for f in WEIGHTS_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 12_000_000
    g = load_guidance("builtin", "cpu", guidance_type="zero123")
    assert g.name == str(WEIGHTS_DIR) and g.unet.config.in_channels == 8 and g.resolution == 64
    from safetensors import safe_open

    with safe_open(str(WEIGHTS_DIR / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16

    cams = orbit_cameras(15.0, [30.0], 1.8, 50.0)
    torch.manual_seed(0)
    image = render(torch.tensor([entry_index("crate", None)]), cams, 64, shading=torch.tensor([0]),
                   background=torch.tensor([BACKGROUNDS.index("white")]), supersample=1)[0].permute(1, 2, 0)
    g.set_reference(ReferenceImage(image, torch.ones(64, 64), 15.0, 30.0, 1.8))
    errors = {}
    torch.manual_seed(1)
    with torch.no_grad():
        z = g.encode_images(image.permute(2, 0, 1)[None].expand(8, -1, -1, -1)).float()
        t = torch.full((8,), 500)
        noise = torch.randn(z.shape)
        noisy = g.scheduler.add_noise(z, noise, t)
        camera = reference_camera(cams, g.reference).expand(8, -1)
        for name, scale in (("image", 1.0), ("none", 0.0)):
            errors[name] = float(((g.predict_noise_image(noisy, t, camera, scale) - noise) ** 2).mean())
    assert errors["image"] < 0.8 * errors["none"], errors


# -- training data ----------------------------------------------------------------------------------
def test_training_pairs_are_seen_from_all_relative_azimuths():
    """The two cameras of a pair are drawn independently: ``sample_cameras`` stratifies azimuth
    over a batch, so without shuffling every pair would be within one 360/32-degree sector."""
    from backend.prior.render import default_settings
    from backend.view_prior.train import draw_cameras

    torch.manual_seed(0)
    s = default_settings()
    a, b = draw_cameras(512, s, "cpu"), draw_cameras(512, s, "cpu")
    d = wrap_azimuth(b.azimuth - a.azimuth).abs()
    assert (d > 90).float().mean() > 0.35 and (d < 45).float().mean() > 0.15
    # Each camera's c2w still belongs to its own angles after the shuffle.
    pos = a.c2w[:, :3, 3]
    assert torch.allclose(wrap_azimuth(torch.rad2deg(torch.atan2(pos[:, 1], pos[:, 0])) - a.azimuth),
                          torch.zeros(512), atol=1e-2)


# -- training script --------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_script_writes_a_loadable_prior_and_report(tmp_path):
    from PIL import Image

    from backend.view_prior.train import REPORT_VIEWS, main

    ckpt = tmp_path / "ckpt.pt"
    # Seed 28 draws a cube for the one training pair and a cylinder for the report's object: sphere
    # tracing the procedural props (a house, a pine tree: seed 0) took most of this test's time.
    args = ["--out", str(tmp_path / "run"), "--device", "cpu", "--seed", "28", "--pairs", "1", "--render-chunk", "2",
            "--unet-steps", "2", "--batch", "1", "--log-every", "1", "--report-objects", "1", "--sample-steps", "1",
            "--checkpoint", str(ckpt), "--checkpoint-every", "0"]
    assert main(args) == 0
    report = tmp_path / "run" / "report"
    log = json.loads((report / "train_log.json").read_text())
    assert log["pairs"] == 1 and [r["step"] for r in log["curve"]] == [1, 2]
    g = Zero123Guidance(str(tmp_path / "run" / "weights"), "cpu")
    assert g.unet.config.in_channels == 8 and g.resolution == 64
    assert log["weights_mb"] <= 12.0
    md = (report / "report.md").read_text()
    assert f"| 2 | {log['curve'][-1]['loss']:.4f} | " in md and "- pairs: 1 at 64 px" in md
    # One row: the reference, then ground truth and sample per target view (64 px tiles, 2 px gaps, x2).
    grid = Image.open(report / "novel_views.png")
    assert grid.size == (2 * ((1 + 2 * len(REPORT_VIEWS)) * 66 + 2), 2 * (66 + 2))
    assert (report / "loss.png").is_file()
    # A finished checkpoint makes a second run a no-op.
    assert torch.load(ckpt, weights_only=False)["stage"] == "done"
    files = {f: f.stat().st_mtime_ns for f in (tmp_path / "run").rglob("*")}
    assert main(args) == 0
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / "run").rglob("*")} == files
