"""The multi-view shape prior (v11, MVDream's multi-view attention): cameras drawn in groups of views of one
object, self-attention across a group's views and only within it, one timestep per group in SDS, the trainer's
refusal of a batch that is not whole groups, and the training data and script for it."""

from __future__ import annotations

import json

import pytest
import torch

from backend.engine.cameras import sample_cameras
from shared.settings import GenerationSettings


def test_cameras_in_groups_share_elevation_and_stand_a_quarter_turn_apart():
    s = GenerationSettings()
    cams = sample_cameras(s, 12, generator=torch.Generator().manual_seed(3), views_per_object=4)
    elevation, azimuth = cams.elevation.view(3, 4), cams.azimuth.view(3, 4)
    assert torch.equal(elevation, elevation[:, :1].expand(3, 4))
    assert torch.equal(cams.distance.view(3, 4), cams.distance.view(3, 4)[:, :1].expand(3, 4))
    steps = (azimuth.diff(dim=1) % 360.0)
    assert torch.allclose(steps, torch.full_like(steps, 90.0), atol=1e-3)
    assert len(set(elevation[:, 0].tolist())) == 3                   # each object its own elevation
    assert torch.all((cams.elevation >= s.elevation_min) & (cams.elevation <= s.elevation_max))
    # one view per object is the engine's usual draw, unchanged
    a = sample_cameras(s, 4, generator=torch.Generator().manual_seed(3))
    b = sample_cameras(s, 4, generator=torch.Generator().manual_seed(3), views_per_object=1)
    assert torch.equal(a.c2w, b.c2w)
    assert len(set(a.elevation.tolist())) == 4
    with pytest.raises(ValueError, match="multiple of views_per_object 4"):
        sample_cameras(s, 6, views_per_object=4)


def _unet_rows(unet, latents: torch.Tensor) -> torch.Tensor:
    n = latents.shape[0]
    text = torch.randn(1, 16, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1)).expand(n, -1, -1)
    camera = torch.zeros(n, 16)
    with torch.no_grad():
        return unet(latents, torch.full((n,), 500), encoder_hidden_states=text, class_labels=camera).sample


def test_multiview_attention_joins_the_views_of_one_object_and_no_others():
    """Changing the third view of the first object changes what the UNet predicts for that object's first view
    (its self-attention sees all four), not for the second object's views; with diffusers' default processor
    (v9, one view) no image's prediction depends on another's."""
    from backend.engine.guidance.multiview import MultiViewAttnProcessor, set_multiview_attention
    from backend.prior.model import build_unet

    torch.manual_seed(0)
    unet = build_unet("v11").eval()
    assert sum(isinstance(p, MultiViewAttnProcessor) for p in unet.attn_processors.values()) > 0
    assert not any(isinstance(p, MultiViewAttnProcessor) for n, p in unet.attn_processors.items() if "attn2" in n)
    side = unet.config.sample_size
    x = torch.randn(8, 4, side, side, generator=torch.Generator().manual_seed(2))
    y = x.clone()
    y[2] += 1.0
    a, b = _unet_rows(unet, x), _unet_rows(unet, y)
    assert (a[0] - b[0]).abs().max() > 1e-4                          # the same object's view 0 moved
    assert torch.allclose(a[4:], b[4:], atol=1e-6)                   # the other object did not
    set_multiview_attention(unet, 1)
    a, b = _unet_rows(unet, x), _unet_rows(unet, y)
    assert torch.allclose(a[0], b[0], atol=1e-6) and (a[2] - b[2]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="multiple of 4"):
        set_multiview_attention(unet, 4)
        _unet_rows(unet, x[:6])


def test_a_multiview_prior_is_loaded_as_one_and_noises_each_object_at_one_timestep(tmp_path):
    from backend.engine.guidance.multiview import MULTIVIEW_FILE, MultiViewAttnProcessor
    from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance
    from backend.prior.model import build_random

    folder = build_random(tmp_path / "v11", arch="v11")
    assert json.loads((folder / MULTIVIEW_FILE).read_text())["num_views"] == 4
    g = StableDiffusionGuidance(str(folder), "cpu")
    assert g.views_per_object == 4
    assert any(isinstance(p, MultiViewAttnProcessor) for p in g.unet.attn_processors.values())
    t, noise, _ = g.draw(8, (0.02, 0.98), torch.Generator().manual_seed(0))
    assert torch.equal(t.view(2, 4), t.view(2, 4)[:, :1].expand(2, 4)) and t[0] != t[4]
    assert not torch.equal(noise[0], noise[1])                       # the noise stays per view
    with pytest.raises(ValueError, match="multiple of 4"):
        g.draw(6, (0.02, 0.98), None)
    # a folder without multiview.json is a single-view model
    plain = StableDiffusionGuidance(str(build_random(tmp_path / "v9", arch="v9")), "cpu")
    assert plain.views_per_object == 1
    assert not any(isinstance(p, MultiViewAttnProcessor) for p in plain.unet.attn_processors.values())


def test_the_trainer_draws_whole_objects_for_a_multiview_shape_prior_and_refuses_other_batches(tmp_path):
    from backend.engine.guidance.models import load_guidance_for
    from backend.engine.trainer import Trainer
    from tests.helpers import random_prior_pair, shape_colour_settings

    priors = random_prior_pair(tmp_path, "v11")
    settings = shape_colour_settings(priors, "a red cube", resolution_schedule="32x4", steps=3)
    guidance = load_guidance_for(settings, "cpu")
    assert guidance.views_per_object == 4
    trainer = Trainer(settings, guidance, "cpu")
    cams, views = trainer.draw_cameras(settings, 4)
    assert len(set(cams.elevation.tolist())) == 1
    assert torch.allclose(cams.azimuth.diff() % 360.0, torch.full((3,), 90.0), atol=1e-3)
    assert len(set(views)) == 4                                    # four compass sectors, one per view
    for _ in range(3):
        losses = trainer.train_step()
        assert all(torch.isfinite(v).all() for v in losses.values())
    with pytest.raises(ValueError, match=r"resolution_schedule: .* multiple of 4; got 32x2"):
        Trainer(settings.replace(resolution_schedule="32x2"), guidance, "cpu")


def test_training_data_comes_in_groups_of_views_of_one_object():
    from backend.prior.render import SHADINGS, sample_batch

    b = sample_batch(8, 16, generator=torch.Generator().manual_seed(0), views_per_object=4,
                     shadings=("lambertian", "textureless"))
    for labels in (b.entry, b.shading):
        assert torch.equal(labels.view(2, 4), labels.view(2, 4)[:, :1].expand(2, 4))
    assert SHADINGS.index("albedo") not in b.shading.tolist()
    cams = b.camera.view(2, 4, 4, 4)
    assert not torch.allclose(cams[0, 0], cams[0, 1])                # four cameras around the object
    assert (b.images[0] - b.images[1]).abs().mean() > 0.01          # and four different pictures of it
    with pytest.raises(ValueError, match="multiple of views_per_object"):
        sample_batch(6, 16, views_per_object=4)


def test_training_script_fine_tunes_a_multiview_prior_the_engine_loads(tmp_path):
    """``--architecture v11 --init-from`` a v9 folder: the groups of views are rendered, trained on in whole groups
    and the written folder says it is a 4-view model; a cache of single views and an odd ``--unet-batch`` are refused
    by name."""
    from backend.prior.model import build_random
    from backend.prior.train import main, render_dataset, save_ckpt

    v9 = build_random(tmp_path / "v9", arch="v9", seed=1)
    images, labels, cameras = render_dataset(8, "cpu", chunk=8, views_per_object=4, shadings=("lambertian",))
    entry = labels[:, 0].view(2, 4)
    assert torch.equal(entry, entry[:, :1].expand(2, 4))
    save_ckpt(tmp_path / "data.pt", (images, labels, cameras))
    args = ["--architecture", "v11", "--init-from", str(v9), "--out", str(tmp_path / "run"), "--device", "cpu",
            "--data-cache", str(tmp_path / "data.pt"), "--unet-steps", "2", "--unet-batch", "4",
            "--samples-per-prompt", "0"]
    assert main(args) == 0
    log = json.loads((tmp_path / "run" / "report" / "train_log.json").read_text())
    assert log["num_views"] == 4 and log["unet_steps"] == 2
    from backend.engine.guidance.multiview import read_num_views

    assert read_num_views(tmp_path / "run" / "weights") == 4
    # a cache rendered for a single-view prior is refused by name, not trained on as if grouped
    save_ckpt(tmp_path / "single.pt", render_dataset(8, "cpu", chunk=8))
    with pytest.raises(SystemExit, match="holds single views"):
        main([*args, "--data-cache", str(tmp_path / "single.pt"), "--out", str(tmp_path / "run3")])
    with pytest.raises(SystemExit, match="--unet-batch must be a multiple"):
        main([*args[:-4], "--unet-batch", "6", "--samples-per-prompt", "0", "--out", str(tmp_path / "run2")])
