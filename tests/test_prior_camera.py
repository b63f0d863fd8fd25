"""Prior v6, the camera-aware built-in prior (session 17): the camera condition and its mirror, the
guidance handing each render's camera to a camera-aware UNet, and ``--architecture v6`` training a
diffusers folder the engine steps with. Real models built from the architecture's config."""

from __future__ import annotations

import json
import math

import pytest
import torch

from backend.engine.cameras import (CAMERA_CONDITION_DIM, camera_condition, look_at, mirrored_camera_condition,
                                    orbit_cameras)
from backend.prior import CAMERA


def test_camera_condition_is_the_rotation_only():
    cams = orbit_cameras(20.0, [0.0, 30.0, -120.0], CAMERA["distance_min"], CAMERA["fovy_min"])
    cond = camera_condition(cams.c2w)
    assert cond.shape == (3, CAMERA_CONDITION_DIM)
    m = cond.reshape(3, 4, 4)
    assert torch.equal(m[:, :3, 3], torch.zeros(3, 3))                   # translation dropped
    assert torch.allclose(m[:, :3, :3], cams.c2w[:, :3, :3])
    assert not torch.allclose(cond[0], cond[1])                         # the direction is in it


def test_the_mirrored_condition_is_the_condition_of_the_mirrored_camera():
    """Training flips mirror-symmetric objects' images left-right; the camera that sees the flipped
    image is the one built from the world mirrored in y (eye, centre and up), including a rolled up
    vector (the prior's up jitter): look_at of the mirrored inputs gives the same condition."""
    gen = torch.Generator().manual_seed(0)
    n = 6
    eye = torch.randn(n, 3, generator=gen) * 1.8
    center = torch.randn(n, 3, generator=gen) * 0.1
    up = torch.tensor([0.0, 0.0, 1.0]) + torch.randn(n, 3, generator=gen) * 0.2
    flip_y = torch.tensor([1.0, -1.0, 1.0])
    mirrored = camera_condition(look_at(eye * flip_y, center * flip_y, up * flip_y))
    # (look_at's right = forward x up: of mirrored vectors, minus the mirror of the right: S_y R S_x.)
    assert torch.allclose(mirrored_camera_condition(camera_condition(look_at(eye, center, up))), mirrored, atol=1e-6)
    r = mirrored_camera_condition(camera_condition(look_at(eye, center, up))).reshape(n, 4, 4)[:, :3, :3]
    assert torch.allclose(r.transpose(1, 2) @ r, torch.eye(3).expand(n, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(n), atol=1e-5)     # a rotation, not a reflection


def test_a_flipped_render_is_seen_by_the_mirrored_camera():
    """The renderer's own check of the mirror: the pyramid seen by a camera rebuilt from the mirrored
    condition (at the mirrored position) is the left-right flip of the original render (albedo shading:
    the lit shading draws a random light)."""
    from backend.engine.cameras import CameraBatch
    from backend.prior.render import entry_index, render

    cams = orbit_cameras(20.0, [35.0], CAMERA["distance_min"], CAMERA["fovy_min"])
    m = mirrored_camera_condition(camera_condition(cams.c2w)).reshape(1, 4, 4)
    m[:, :3, 3] = cams.c2w[:, :3, 3] * torch.tensor([1.0, -1.0, 1.0])
    mirrored = CameraBatch(m, cams.fovy, cams.elevation, -cams.azimuth, cams.distance)
    kwargs = dict(shading=torch.zeros(1, dtype=torch.long), background=torch.ones(1, dtype=torch.long), vary=False)
    e = torch.full((1,), entry_index("pyramid", "red"))
    a, b = render(e, cams, 32, **kwargs), render(e, mirrored, 32, **kwargs)
    assert (a.flip(-1) - b).abs().max() < 1e-4
    assert (a - b).abs().max() > 0.1


@pytest.fixture(scope="module")
def v6_random(tmp_path_factory):
    from backend.prior.model import build_random

    return build_random(tmp_path_factory.mktemp("v6") / "weights", arch="v6")


def _sds_grad(guidance, rgb, cameras, views):
    from backend.engine.guidance.base import GuidanceRequest

    x = rgb.clone().requires_grad_(True)
    emb = guidance.encode_prompts("a red cube", "", {"front": ", front view"})
    gen = torch.Generator().manual_seed(3)
    out = guidance.guide_many([GuidanceRequest(x, emb, views, cameras, 3.0, (0.5, 0.5), gen)])[0]
    out["loss_sds"].backward()
    return x.grad


def test_guidance_gives_a_camera_aware_unet_each_renders_camera(v6_random):
    """Same renders, noise and timesteps, different cameras: different SDS gradients (the camera reaches
    the UNet); the same cameras: the same gradient; no cameras: a clear error."""
    from backend.engine.guidance.base import GuidanceRequest
    from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance

    g = StableDiffusionGuidance(str(v6_random), "cpu")
    assert g.camera_conditioned
    rgb = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    front = orbit_cameras(15.0, [0.0, 0.0], CAMERA["distance_min"], CAMERA["fovy_min"])
    side = orbit_cameras(15.0, [0.0, 90.0], CAMERA["distance_min"], CAMERA["fovy_min"])
    views = ["front", "front"]
    g_front, g_front_again, g_side = (_sds_grad(g, rgb, c, views) for c in (front, front, side))
    assert torch.equal(g_front, g_front_again)
    assert torch.allclose(g_front[0], g_side[0])                 # the same camera in row 0
    assert (g_front[1] - g_side[1]).abs().max() > 1e-3 * g_front[1].abs().max()
    emb = g.encode_prompts("a red cube", "", {})
    with pytest.raises(ValueError, match="conditioned on the camera"):
        g.guide_many([GuidanceRequest(rgb, emb, ["", ""], None, 3.0, (0.5, 0.5), None)])


def test_a_text_only_unet_ignores_the_cameras(tmp_path):
    from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance
    from backend.prior.model import build_random

    g = StableDiffusionGuidance(str(build_random(tmp_path / "v3", arch="v3")), "cpu")
    assert not g.camera_conditioned
    rgb = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    front = orbit_cameras(15.0, [0.0, 0.0], CAMERA["distance_min"], CAMERA["fovy_min"])
    side = orbit_cameras(15.0, [0.0, 90.0], CAMERA["distance_min"], CAMERA["fovy_min"])
    assert torch.equal(_sds_grad(g, rgb, front, ["front", "front"]), _sds_grad(g, rgb, side, ["front", "front"]))


@pytest.mark.parametrize("arch,latent_size", [("v6", 16), ("v7", 32), ("v8", 32), ("v9", 32), ("v12", 32)])
def test_training_script_trains_a_camera_aware_prior_that_the_engine_steps(tmp_path, arch, latent_size):
    """``--architecture v6`` (v7: v5's 32x32 latents and shading captions with the camera; v8: v4's 32x32 latents
    with the camera; v9: a smaller v8 that learns only lit and textureless renders; v12: v9's layout learning albedo
    renders only, the colour prior that keeps a barrel's hoops): a few CPU steps (the UNet called with each image's camera, flips
    included; its report samples drawn from the report camera) write a diffusers folder whose UNet has
    the camera projection, which the engine loads and takes SDS steps with; a data cache without
    cameras is refused by name."""
    from diffusers import UNet2DConditionModel

    from backend.prior.grammar import VIEWS
    from backend.prior.render import ENTRIES
    from backend.prior.train import main, render_dataset, save_ckpt
    from tests.helpers import take_sds_steps

    images, labels, cameras = render_dataset(4, "cpu", chunk=4, image_size=64)
    assert cameras.shape == (4, CAMERA_CONDITION_DIM) and cameras.reshape(4, 4, 4)[:, :3, 3].abs().max() == 0
    save_ckpt(tmp_path / "data.pt", (images, labels, cameras))
    def args(data: str, out: str) -> list[str]:
        return ["--architecture", arch, "--out", str(tmp_path / out), "--device", "cpu", "--data-cache",
                str(tmp_path / data), "--vae-steps", "1", "--unet-steps", "2", "--vae-batch", "2",
                "--unet-batch", "4", "--samples-per-prompt", "1", "--sample-steps", "1"]

    assert main(args("data.pt", "run")) == 0
    log = json.loads((tmp_path / "run" / "report" / "train_log.json").read_text())
    assert (log["architecture"], log["latent_size"]) == (arch, latent_size)
    weights = tmp_path / "run" / "weights"
    unet = UNet2DConditionModel.from_pretrained(str(weights), subfolder="unet")
    assert unet.config.class_embed_type == "projection"
    assert unet.config.projection_class_embeddings_input_dim == CAMERA_CONDITION_DIM

    assert take_sds_steps(weights, "a red cube", 2).camera_conditioned

    gen = torch.Generator().manual_seed(0)
    old = (images, torch.stack([torch.randint(0, len(ENTRIES), (4,), generator=gen),
                                torch.randint(0, len(VIEWS), (4,), generator=gen),
                                torch.zeros(4, dtype=torch.long)], 1))
    save_ckpt(tmp_path / "old.pt", old)
    with pytest.raises(SystemExit, match="before cameras were kept"):
        main(args("old.pt", "run2"))


def test_the_shape_prior_learns_only_lit_and_textureless_renders(tmp_path):
    """v9's UNet draws its training images from the lambertian and textureless renders only (the
    albedo ones never reach it), every other architecture from all; a cache without shading labels
    is refused for v9 by name."""
    from backend.prior import model as M
    from backend.prior.render import SHADINGS
    from backend.prior.train import training_pool

    shading = torch.arange(30) % 3                       # albedo, lambertian, textureless, ...
    labels = torch.stack([torch.zeros(30, dtype=torch.long), torch.zeros(30, dtype=torch.long), shading], 1)
    pool = training_pool(labels, M.architecture("v9"))
    assert SHADINGS[0] == "albedo"
    assert sorted(pool.tolist()) == [i for i in range(30) if i % 3 != 0]
    assert training_pool(labels, M.architecture("v8")) is None
    with pytest.raises(SystemExit, match="shading labels"):
        training_pool(labels[:, :2], M.architecture("v9"))
    with pytest.raises(SystemExit, match="the data has none"):
        training_pool(labels[::3], M.architecture("v9"))
    # v12, the colour prior in v9's layout, learns the albedo renders alone, and renders only those
    assert sorted(training_pool(labels, M.architecture("v12")).tolist()) == [i for i in range(30) if i % 3 == 0]
    # (the training command renders its own data so: every image it learns from is one it rendered)
    from backend.prior.train import main
    out = tmp_path / "v12"
    assert main(["--architecture", "v12", "--out", str(out), "--device", "cpu", "--images", "6", "--render-chunk", "6",
                 "--vae-steps", "1", "--unet-steps", "1", "--vae-batch", "2", "--unet-batch", "2",
                 "--samples-per-prompt", "0"]) == 0
    log = json.loads((out / "report" / "train_log.json").read_text())
    assert log["unet_images"] == log["images"] == 6
    # Small enough that v6 (the colour prior) and v9 (the shape prior) together stay within 50 MB.
    unet = M.build_unet("v9")
    assert 2 * M.n_params(unet) < 18e6


def test_v6_fine_tuned_from_a_text_only_prior_starts_as_that_prior(tmp_path):
    """``--init-from`` a v3 folder: the v6 UNet gets v3's weights and a zero camera projection, the
    VAE and text encoder are v3's (no VAE training), so before any UNet step the new prior predicts
    exactly what v3 does, whatever the camera; ``--categories`` renders only the named objects."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from backend.prior.catalogue import CATEGORIES
    from backend.prior.model import build_random
    from backend.prior.render import ENTRIES
    from backend.prior.train import main, render_dataset, save_ckpt

    v3 = build_random(tmp_path / "v3", arch="v3", seed=1)
    images, labels, cameras = render_dataset(4, "cpu", chunk=4, image_size=64, categories=["cube", "pyramid"])
    assert {CATEGORIES[ENTRIES[int(e)][0]].name for e in labels[:, 0]} <= {"cube", "pyramid"}
    save_ckpt(tmp_path / "data.pt", (images, labels, cameras))
    assert main(["--architecture", "v6", "--init-from", str(v3), "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--data-cache", str(tmp_path / "data.pt"), "--unet-steps", "0", "--unet-batch", "2",
                 "--samples-per-prompt", "0"]) == 0
    weights = tmp_path / "run" / "weights"
    old_unet = UNet2DConditionModel.from_pretrained(str(v3), subfolder="unet")
    new_unet = UNet2DConditionModel.from_pretrained(str(weights), subfolder="unet")
    assert new_unet.config.class_embed_type == "projection"
    gen = torch.Generator().manual_seed(0)
    z, ctx = torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 16, 128, generator=gen)
    cams = camera_condition(orbit_cameras(15.0, [0.0, 90.0], CAMERA["distance_min"], CAMERA["fovy_min"]).c2w)
    with torch.no_grad():
        expected = old_unet(z, torch.tensor([500, 500]), encoder_hidden_states=ctx).sample
        got = new_unet(z, torch.tensor([500, 500]), encoder_hidden_states=ctx, class_labels=cams).sample
    assert torch.allclose(expected, got, atol=1e-5)
    old_vae = AutoencoderKL.from_pretrained(str(v3), subfolder="vae")
    new_vae = AutoencoderKL.from_pretrained(str(weights), subfolder="vae")
    assert new_vae.config.scaling_factor == old_vae.config.scaling_factor
    assert all(torch.equal(a, b) for a, b in zip(old_vae.state_dict().values(), new_vae.state_dict().values()))
    with pytest.raises(SystemExit):
        main(["--categories", "cube,teapot", "--out", str(tmp_path / "x")])


@pytest.mark.skipif(not __import__("backend.prior", fromlist=["available"]).available(),
                    reason="backend/prior/weights is not installed")
@torch.no_grad()
def test_the_shipped_prior_turns_the_cube_with_the_view():
    """The shipped prior (v6) draws a red cube face-on for the front view (azimuth 0) and corner-on for the
    front-left view (azimuth 45), from the same seed: each sample's red silhouette overlaps the true
    cube's silhouette from its own view more than the one from the other view. (v3 drew the same picture
    for both: SDS then made a solid of revolution, backend/prior/README.md "Session 17".)"""
    from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance
    from backend.prior import WEIGHTS_DIR
    from backend.prior import model as M
    from backend.prior.render import BACKGROUNDS, SHADINGS, entry_index, render
    from backend.prior.train import sample

    g = StableDiffusionGuidance(str(WEIGHTS_DIR), "cpu")
    assert g.camera_conditioned
    cams = orbit_cameras(15.0, [0.0, 45.0], CAMERA["distance_min"], CAMERA["fovy_min"])
    truth = render(torch.full((2,), entry_index("cube", "red")), cams, 64,
                   shading=torch.full((2,), SHADINGS.index("albedo")),
                   background=torch.full((2,), BACKGROUNDS.index("white")), vary=False)
    red = lambda im: (im[:, 0] - torch.maximum(im[:, 1], im[:, 2])) > 0.25          # (B, H, W)
    true_masks = red(truth)
    iou = lambda a, b: float((a & b).sum() / (a | b).sum().clamp(min=1))
    for k, view in enumerate(("front", "front left")):
        images = sample(g.unet, g.text_encoder, g.vae, lambda t: M.tokenize(g.tokenizer, t),
                        [f"a red cube, {view} view"], n_per_prompt=8, steps=20, cfg=3.0, seed=1,
                        camera=camera_condition(cams.c2w[k:k + 1]))
        masks = [m for m in red(images) if m.sum() > 200]       # the red samples (some are shaded white)
        assert len(masks) >= 4
        own = sum(iou(m, true_masks[k]) > iou(m, true_masks[1 - k]) for m in masks)
        assert own >= 0.75 * len(masks), (view, own, len(masks))


def test_training_cameras_go_as_high_as_asked(tmp_path):
    """``--elevation-max``: the renders' cameras reach above the engine's default 45 degrees (some are then the
    "overhead" view), and never without it; a value outside [45, 89] is refused by name."""
    from backend.prior.grammar import VIEWS
    from backend.prior.train import main, render_dataset

    overhead = VIEWS.index("overhead")

    def top_view_share(elevation_max):
        _, labels, cameras = render_dataset(64, "cpu", chunk=32, image_size=16, categories=["cube"],
                                            elevation_max=elevation_max)
        # the camera's back axis (c2w's third column) rises with the elevation: sin(elevation)
        rise = cameras.view(-1, 4, 4)[:, 2, 2].abs()
        return float((labels[:, 1] == overhead).float().mean()), float(rise.max())

    share, rise = top_view_share(None)
    assert share == 0 and rise <= math.sin(math.radians(45)) + 1e-4
    share, rise = top_view_share(80)
    assert share > 0 and rise > math.sin(math.radians(60))
    with pytest.raises(SystemExit):
        main(["--elevation-max", "30", "--out", str(tmp_path)])
