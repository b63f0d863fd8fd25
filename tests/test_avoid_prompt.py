"""The ``avoid_prompt`` / ``avoid_scale`` settings: composable diffusion's negated prompt in SDS
(``StableDiffusionGuidance.predict_noise``), the shape prior's only when there is one
(``ShapeColourGuidance.encode_prompts``), and the built-in prior's filled-cup captions it is made for
(``backend.prior``: hollow props drawn filled under "... filled").

Checked on the project's own architectures with random weights (v6 colour, v9 shape, built from config)."""

import pytest
import torch

from shared.settings import GenerationSettings, SettingError
from tests.helpers import random_prior_pair, shape_colour_settings


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    return random_prior_pair(tmp_path_factory.mktemp("avoid"), "v9")


def _prepare(priors, **overrides):
    from backend.engine.trainer import prepare_generation

    return prepare_generation(shape_colour_settings(priors, "a red mug", **overrides), device="cpu").trainer


def test_the_avoid_term_is_the_conditional_minus_the_avoided_prediction_on_top_of_cfg(priors):
    """eps = eps_u + s (eps_c - eps_u) + a (eps_c - eps_avoid), from one UNet call on three parts."""
    from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance

    g = StableDiffusionGuidance(str(priors[1]), "cpu")
    emb = g.encode_prompts("a red mug", "", {"front": ", front view"}, avoid_prompt="a red mug filled")
    cond, uncond = emb.for_views(["front", "front"])
    avoid = emb.avoid_for_views(["front", "front"])
    assert not torch.equal(avoid, cond)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 32, 32, generator=gen)
    t = torch.tensor([300, 700])
    camera = torch.randn(2, 16, generator=gen)
    with torch.no_grad():
        eps = {name: g.unet(x, t, encoder_hidden_states=c, class_labels=camera).sample
               for name, c in (("c", cond), ("u", uncond), ("a", avoid))}
    got = g.predict_noise(x, t, cond, uncond, 3.0, camera, avoid, 2.5)
    want = eps["u"] + 3.0 * (eps["c"] - eps["u"]) + 2.5 * (eps["c"] - eps["a"])
    assert torch.allclose(got, want, atol=2e-4)
    plain = g.predict_noise(x, t, cond, uncond, 3.0, camera)
    assert (got - plain).abs().max() > 1e-3        # the term does something
    assert torch.allclose(g.predict_noise(x, t, cond, uncond, 3.0, camera, avoid, 0.0), plain, atol=2e-4)


def test_only_the_shape_prior_gets_the_avoid_prompt_and_a_job_with_it_is_the_same_in_a_group(priors):
    """With ``shape_model`` the colour prior's embeddings have no avoid term; a job with the term gives the
    same SDS alone and grouped with one without (the other job's rows avoid their own prompt: a zero term)."""
    from backend.engine.guidance.base import GuidanceRequest

    with_avoid = _prepare(priors, avoid_prompt="{prompt} filled", avoid_scale=4.0, shading="lambertian", seed=3)
    without = _prepare(priors, shading="lambertian", seed=4)
    emb = with_avoid.embeddings
    assert emb.avoid is None and emb.shape.avoid is not None and without.embeddings.shape.avoid is None
    shape = with_avoid.guidance.shape
    assert torch.equal(emb.shape.avoid["front"], shape._embed("a red mug filled, front view"))

    renders = [with_avoid.render_step(), without.render_step()]

    def request(trainer, render, seed):
        return GuidanceRequest(render.rgb, trainer.embeddings, render.views, render.cameras, 3.0, (0.02, 0.98),
                               torch.Generator().manual_seed(seed), shading=render.shading,
                               avoid_scale=trainer.s.avoid_scale)

    together = [o["loss_sds"].item() for o in with_avoid.guidance.guide_many(
        [request(with_avoid, renders[0], 7), request(without, renders[1], 8)])]
    alone = [with_avoid.guidance.guide_many([request(with_avoid, renders[0], 7)])[0]["loss_sds"].item(),
             without.guidance.guide_many([request(without, renders[1], 8)])[0]["loss_sds"].item()]
    assert together == pytest.approx(alone, rel=1e-5)
    off = request(with_avoid, renders[0], 7)
    off.avoid_scale = 0.0
    assert with_avoid.guidance.guide_many([off])[0]["loss_sds"].item() != pytest.approx(alone[0], rel=1e-4)


def test_an_avoid_scale_without_an_avoid_prompt_or_on_an_image_job_is_refused_by_name():
    with pytest.raises(SettingError, match="avoid_prompt"):
        GenerationSettings(prompt="a red mug", avoid_scale=2.0).validate()
    with pytest.raises(SettingError, match="avoid_scale"):
        GenerationSettings(prompt="a red mug", avoid_scale=-1.0).validate()
    GenerationSettings(prompt="a red mug", avoid_prompt="{prompt} filled", avoid_scale=2.0).validate()


def test_hollow_props_are_drawn_filled_on_request_and_captioned_so():
    """The training data of a prior with filled captions: a filled mug is its outer cylinder (the cavity's
    pixels change, the rest does not), captioned "... filled"; a solid's caption may say it too."""
    from backend.engine.cameras import orbit_cameras
    from backend.prior import render as R
    from backend.prior.grammar import caption
    from backend.prior.train import caption_index, caption_table

    cams = orbit_cameras(40.0, [0.0], 1.8, 50.0)
    e = torch.tensor([R.entry_index("mug", "red")])
    images = [R.render(e, cams, 32, shading=torch.tensor([R.SHADINGS.index("lambertian")]),
                       background=torch.tensor([R.BACKGROUNDS.index("white")]), vary=False,
                       generator=torch.Generator().manual_seed(1), filled=torch.tensor([f])) for f in (False, True)]
    changed = (images[0] - images[1]).abs().amax(1)[0] > 0.05
    assert 10 < int(changed.sum()) < 0.25 * 32 * 32          # the cavity, not the whole mug
    assert changed[:16].sum() > changed[16:].sum()            # in the image's upper half, where the rim is

    table = caption_table(filled_captions=True)
    cube = torch.tensor([R.entry_index("cube", "red")] * 400)
    mug = torch.tensor([R.entry_index("mug", "red")] * 400)
    view = torch.zeros(400, dtype=torch.long)
    filled = torch.arange(400) % 2 == 0
    mugs = [table[i] for i in caption_index(mug, view, torch.Generator().manual_seed(0), filled=filled)]
    assert all("filled" in c for c, f in zip(mugs, filled) if c and f)
    assert not any("filled" in c for c, f in zip(mugs, filled) if not f)
    assert caption("mug", "red", "front", filled=True) in table
    cubes = [table[i] for i in caption_index(cube, view, torch.Generator().manual_seed(0), filled=filled & False)]
    assert 0.05 < sum("filled" in c for c in cubes) / len(cubes) < 0.3
