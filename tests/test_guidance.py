"""SDS through the real diffusers loading path, optimisation, checkpoints and resume."""

import shutil

import pytest
import torch

from backend.engine.cameras import VIEW_SUFFIXES
from backend.engine.guidance.models import ModelNotFoundError, load_guidance, resolve_model
from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance
from backend.engine.trainer import Trainer
from tests.helpers import tiny_settings


def test_tiny_model_is_a_diffusers_sd_layout(tiny_model_path):
    for sub in ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_model_path / sub).exists(), sub
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_path), local_files_only=True)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size


def test_model_found_in_hugging_face_cache_offline(tiny_model_path, tmp_path, monkeypatch):
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--tiny-sd"
    shutil.copytree(tiny_model_path, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    path = resolve_model("someone/tiny-sd")
    assert path == repo / "snapshots" / commit
    guidance = StableDiffusionGuidance(str(path), "cpu")
    assert guidance.resolution == guidance.native_resolution == 32
    with pytest.raises(ModelNotFoundError, match="--allow-download"):
        resolve_model("someone/not-cached")
    with pytest.raises(ModelNotFoundError, match="model"):
        resolve_model(str(tmp_path / "nothing-here"))


def test_twenty_sds_steps_reach_the_hash_grid_and_move_the_loss(tiny_model_path):
    settings = tiny_settings(model=str(tiny_model_path), steps=20, albedo_warmup_steps=5, guidance_scale=7.5)
    guidance = load_guidance(str(tiny_model_path), "cpu")
    assert isinstance(guidance, StableDiffusionGuidance)
    trainer = Trainer(settings, guidance, torch.device("cpu"))
    table = trainer.field.encoding.table
    before = table.detach().clone()
    seen_grad, sds = False, []
    for _ in range(20):
        losses = trainer.train_step()
        sds.append(float(losses["sds"]))
        seen_grad |= table.grad is not None and table.grad.abs().sum().item() > 0
    assert seen_grad, "no SDS gradient reached the hash grid"
    assert (table.detach() - before).abs().max() > 1e-4
    assert len(set(round(v, 4) for v in sds)) > 10        # the loss moves from step to step
    assert all(torch.isfinite(torch.tensor(sds)))


def test_compass_view_naming_embeds_one_prompt_per_sector(tiny_model_path, monkeypatch):
    from backend.engine import trainer as trainer_module
    from backend.engine.cameras import COMPASS_SUFFIXES, COMPASS_VIEWS

    guidance = load_guidance(str(tiny_model_path), "cpu")
    trainer = Trainer(tiny_settings(model=str(tiny_model_path), view_naming="compass",
                                    resolution_schedule="32x4"), guidance, torch.device("cpu"))
    by_view = trainer.embeddings.by_view
    assert set(by_view) == {"", *COMPASS_SUFFIXES}
    assert torch.equal(by_view["front left"], guidance._embed("a red cube, front left view"))

    # Record the cameras a step samples and the view names it hands the guidance.
    cams_seen, views_seen = [], []
    sample = trainer_module.sample_cameras
    monkeypatch.setattr(trainer_module, "sample_cameras", lambda *a, **k: cams_seen.append(sample(*a, **k)) or cams_seen[-1])
    call = type(guidance).guide_many
    monkeypatch.setattr(type(guidance), "guide_many", lambda self, requests: views_seen.append(list(requests[0].views))
                        or call(self, requests))
    trainer.train_step()
    cams, views = cams_seen[-1], views_seen[-1]
    # Each camera gets the 45-degree compass sector around its azimuth (0 = front, +45 = front left).
    sector = [COMPASS_VIEWS[round((((a + 180.0) % 360.0) - 180.0) / 45.0) % 8] for a in cams.azimuth.tolist()]
    assert views == sector and len(views) == 4
    off = Trainer(tiny_settings(model=str(tiny_model_path), view_dependent_prompt=False), guidance,
                  torch.device("cpu"))
    assert set(off.embeddings.by_view) == {""}
    off.train_step()
    assert set(views_seen[-1]) == {""}


def test_sds_gradient_is_the_weighted_noise_residual(tiny_model_path):
    """d(loss)/d(latents) must equal w(t) * (eps_hat - eps): the SDS update, not an MSE gradient."""
    guidance = load_guidance(str(tiny_model_path), "cpu")
    emb = guidance.encode_prompts("a red cube", "", VIEW_SUFFIXES)
    latents = torch.randn(1, 4, 16, 16, requires_grad=True)
    image = torch.rand(1, 32, 32, 3)
    guidance.encode_images = lambda rgb, noise=None: latents     # feed latents straight in
    generator = torch.Generator().manual_seed(3)
    try:
        out = guidance(image, emb, ["front"], guidance_scale=10.0, t_range=(0.5, 0.5), generator=generator)
    finally:
        del guidance.encode_images
    out["loss_sds"].backward()
    t = out["timesteps"]
    generator.manual_seed(3)        # the caller's generator gives every draw: t (fixed at 0.5), then noise
    torch.randint(500, 501, (1,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    noisy = guidance.scheduler.add_noise(latents.detach(), noise, t)
    cond, uncond = emb.for_views(["front"])
    eps = guidance.predict_noise(noisy, t, cond, uncond, 10.0)
    expected = guidance.weight(t) * (eps - noise)
    assert torch.allclose(latents.grad, expected, atol=1e-4)


@pytest.mark.parametrize("lr_final_ratio", [1.0, 0.1])
def test_checkpoint_restore_continue_equals_uninterrupted(tiny_model_path, tmp_path, lr_final_ratio):
    settings = tiny_settings(steps=10, albedo_warmup_steps=3, shading="dreamfusion", lr_final_ratio=lr_final_ratio)
    guidance = load_guidance("tiny-random", "cpu")

    straight = Trainer(settings, guidance, torch.device("cpu"))
    for _ in range(10):
        straight.train_step()

    first = Trainer(settings, guidance, torch.device("cpu"))
    for _ in range(5):
        first.train_step()
    ckpt = tmp_path / "ckpt.pt"
    first.save_checkpoint(str(ckpt))
    del first
    torch.manual_seed(12345)        # whatever happened to the process RNG since, resume restores it
    resumed = Trainer(settings, guidance, torch.device("cpu"))
    resumed.load_checkpoint(str(ckpt))
    assert resumed.step == 5
    for _ in range(5):
        resumed.train_step()

    for (name, a), (_, b) in zip(straight.field.state_dict().items(), resumed.field.state_dict().items()):
        if torch.is_tensor(a):
            assert torch.equal(a, b), name
    for a, b in zip(straight.background.parameters(), resumed.background.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(straight.estimator.binaries, resumed.estimator.binaries)


def test_learning_rates_decay_exponentially_to_the_final_ratio():
    guidance = load_guidance("tiny-random", "cpu")
    trainer = Trainer(tiny_settings(steps=10, lr=0.02, lr_background=0.004, lr_final_ratio=0.1), guidance,
                      torch.device("cpu"))
    seen = []
    for _ in range(10):
        trainer.train_step()
        seen.append({g["name"]: g["lr"] for g in trainer.optimizer.param_groups})
    assert seen[0] == {"encoding": 0.02, "mlp": 0.02, "background": 0.004}
    assert seen[-1]["mlp"] == pytest.approx(0.02 * 0.1 ** 0.9) and seen[-1]["background"] == pytest.approx(0.004 * 0.1 ** 0.9)
    assert all(a["mlp"] > b["mlp"] for a, b in zip(seen, seen[1:]))
    constant = Trainer(tiny_settings(steps=10, lr=0.02), guidance, torch.device("cpu"))
    for _ in range(3):
        constant.train_step()
    assert {g["lr"] for g in constant.optimizer.param_groups if g["name"] != "background"} == {0.02}


def test_checkpoint_refuses_other_settings(tmp_path):
    guidance = load_guidance("tiny-random", "cpu")
    trainer = Trainer(tiny_settings(), guidance, torch.device("cpu"))
    trainer.save_checkpoint(str(tmp_path / "c.pt"))
    other = Trainer(tiny_settings(seed=7), guidance, torch.device("cpu"))
    with pytest.raises(ValueError, match="seed"):
        other.load_checkpoint(str(tmp_path / "c.pt"))
    # Export and preview settings do not change the trajectory: resuming with them changed is fine.
    trainer.train_step()
    trainer.save_checkpoint(str(tmp_path / "c.pt"))
    resumed = Trainer(tiny_settings(texture_size=128, preview_interval=2), guidance, torch.device("cpu"))
    resumed.load_checkpoint(str(tmp_path / "c.pt"))
    assert resumed.step == 1
    for (name, a), b in zip(trainer.field.state_dict().items(), resumed.field.state_dict().values()):
        if torch.is_tensor(a):
            assert torch.equal(a, b), name
    assert torch.equal(trainer.field.encoding.table, resumed.field.encoding.table)


def test_matmul_vae_attention_matches_sdpa_in_value_and_gradient(tiny_model_path):
    """The vae_attention setting (matmul on CUDA: flash attention does not take the SD VAE's 512-wide
    head) computes the same encoder output and input gradient as PyTorch's SDPA processor."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    settings = tiny_settings(model=str(tiny_model_path))
    guidance = StableDiffusionGuidance(str(tiny_model_path), "cpu")
    attention = [m for m in guidance.vae.encoder.modules() if hasattr(m, "set_processor")]
    assert attention, "the tiny VAE has no attention layer to compare"
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    results = {}
    for choice, processor_type in (("sdpa", AttnProcessor2_0), ("matmul", AttnProcessor)):
        guidance.configure(settings.replace(vae_attention=choice))
        assert all(type(m.processor) is processor_type for m in attention)
        x = image.clone().requires_grad_(True)
        mean = guidance.vae.encode(x * 2 - 1).latent_dist.mean
        (mean * torch.linspace(-1, 1, mean.numel()).reshape(mean.shape)).sum().backward()
        results[choice] = (mean.detach(), x.grad)
    (m0, g0), (m1, g1) = results["sdpa"], results["matmul"]
    assert g0.abs().max() > 0
    assert torch.allclose(m0, m1, rtol=1e-5, atol=1e-6)
    assert torch.allclose(g0, g1, rtol=1e-5, atol=1e-6)
    guidance.configure(settings)                     # auto: sdpa on the CPU, never compiled there
    assert guidance.vae_attention == "sdpa" and not guidance.compile_vae


def test_sampling_budget_setting_trains_like_the_dynamic_sampler(tiny_model_path):
    """sampling=budget reaches the renderer and, while the budget holds every sample, a training
    step computes the dynamic sampler's losses."""
    guidance = load_guidance(str(tiny_model_path), "cpu")
    losses = {}
    for sampling in ("dynamic", "budget"):
        settings = tiny_settings(model=str(tiny_model_path), steps=10, albedo_warmup_steps=1, sampling=sampling)
        trainer = Trainer(settings, guidance, torch.device("cpu"))
        assert trainer.renderer.sampling == sampling
        losses[sampling] = [float(trainer.train_step()["total"]) for _ in range(2)]
    assert losses["budget"] == pytest.approx(losses["dynamic"], rel=1e-4)


def test_sampling_auto_is_the_budget_on_cuda_and_dynamic_on_the_cpu(tiny_model_path):
    from backend.engine.trainer import Trainer, resolve_sampling

    assert resolve_sampling("auto", "cuda") == "budget" and resolve_sampling("auto", "cpu") == "dynamic"
    assert resolve_sampling("dynamic", "cuda") == "dynamic" and resolve_sampling("budget", "cpu") == "budget"
    guidance = load_guidance(str(tiny_model_path), "cpu")
    settings = tiny_settings(model=str(tiny_model_path), steps=2)
    assert settings.sampling == "auto"
    trainer = Trainer(settings, guidance, torch.device("cpu"))
    assert trainer.renderer.sampling == "dynamic"      # the default, auto, on this CPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_unet_graph_captures_warm_up_on_one_stream_per_device():
    """Every capture warms up on the same side stream: cuBLAS keeps a workspace per stream it ran on for
    the process's life, so a fresh stream per capture grew a server worker by 33 MiB per new input shape."""
    from backend.engine.guidance.stable_diffusion import warmup_stream

    assert warmup_stream("cuda:0") is warmup_stream(torch.device("cuda:0"))
