"""The ``sds_noise_weight`` setting: SDS's gradient split into its denoising term, eps(uncond) - noise, and its
classifier term, s * (eps(text) - eps(uncond)) (``StableDiffusionGuidance.guide_many``); 1 is SDS, 0 classifier
score distillation. Checked on the project's own architectures with random weights (v6 colour, v9 shape)."""

import pytest
import torch

from shared.settings import GenerationSettings, SettingError
from tests.helpers import random_prior_pair, shape_colour_settings


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from backend.engine.trainer import prepare_generation

    priors = random_prior_pair(tmp_path_factory.mktemp("csd"), "v9")
    return prepare_generation(shape_colour_settings(priors, "a red mug", shading="lambertian", seed=3),
                              device="cpu").trainer


def _image_gradient(trainer, render, guidance_scale: float, noise_weight: float, seed: int = 7) -> torch.Tensor:
    """d(loss_sds)/d(render) for one request whose random draws (t, noise) come from ``seed``."""
    from backend.engine.guidance.base import GuidanceRequest

    leaf = render.rgb.detach().clone().requires_grad_(True)
    request = GuidanceRequest(leaf, trainer.embeddings, render.views, render.cameras, guidance_scale, (0.02, 0.98),
                              torch.Generator().manual_seed(seed), shading=render.shading, noise_weight=noise_weight)
    loss = trainer.guidance.guide_many([request])[0]["loss_sds"]
    return torch.autograd.grad(loss, leaf)[0]


def test_the_gradient_is_linear_in_the_noise_weight_and_without_noise_only_the_classifier_term(trainer):
    rgb = trainer.render_step()          # one render (its cameras too: the priors are conditioned on them)
    sds = _image_gradient(trainer, rgb, 3.0, 1.0)
    csd = _image_gradient(trainer, rgb, 3.0, 0.0)
    half = _image_gradient(trainer, rgb, 3.0, 0.5)
    assert (sds - csd).abs().max() > 1e-3 * sds.abs().max()             # the weight changes the gradient
    assert torch.allclose(half, 0.5 * (sds + csd), atol=1e-5 * float(sds.abs().max()) + 1e-9)
    # Without the denoising term the gradient is s * (eps_text - eps_uncond): exactly proportional to s,
    # which SDS's is not (its eps_uncond - noise does not scale with s).
    csd_double = _image_gradient(trainer, rgb, 6.0, 0.0)
    assert torch.allclose(csd_double, 2.0 * csd, rtol=1e-4, atol=1e-6 * float(csd.abs().max()))
    sds_double = _image_gradient(trainer, rgb, 6.0, 1.0)
    assert not torch.allclose(sds_double, 2.0 * sds, rtol=1e-2, atol=1e-3 * float(sds.abs().max()))


def test_a_job_without_the_noise_term_gets_the_same_gradient_alone_and_grouped_with_an_sds_job(trainer):
    from backend.engine.guidance.base import GuidanceRequest

    renders = [trainer.render_step(), trainer.render_step()]

    def request(render, seed, weight):
        return GuidanceRequest(render.rgb, trainer.embeddings, render.views, render.cameras, 3.0, (0.02, 0.98),
                               torch.Generator().manual_seed(seed), shading=render.shading, noise_weight=weight)

    together = [o["loss_sds"].item() for o in trainer.guidance.guide_many(
        [request(renders[0], 7, 0.0), request(renders[1], 8, 1.0)])]
    alone = [trainer.guidance.guide_many([request(renders[0], 7, 0.0)])[0]["loss_sds"].item(),
             trainer.guidance.guide_many([request(renders[1], 8, 1.0)])[0]["loss_sds"].item()]
    assert together == pytest.approx(alone, rel=1e-5)


def test_the_setting_is_validated_by_name_and_reaches_the_guidance_request(trainer):
    with pytest.raises(SettingError, match="sds_noise_weight"):
        GenerationSettings(prompt="a red mug", sds_noise_weight=1.5).validate()
    with pytest.raises(SettingError, match="sds_noise_weight"):
        GenerationSettings(prompt="a red mug", sds_noise_weight=-0.1).validate()
    assert GenerationSettings().sds_noise_weight == 1.0                  # SDS unless asked
    with pytest.raises(SettingError, match="sds_noise_weight"):          # zero123's SDS has no such split
        GenerationSettings(guidance_type="zero123", sds_noise_weight=0.0).validate()
    GenerationSettings(guidance_type="zero123").validate()
    trainer.s.sds_noise_weight = 0.25
    try:
        assert trainer.guidance_request(trainer.render_step()).noise_weight == 0.25
    finally:
        trainer.s.sds_noise_weight = 1.0

