"""The GPU speed levers of issue 13 (results/speed/NOTES.md, measurement 7) compute what they replace:
the field MLPs in TF32/bf16 (``field_precision``), the renderer's per-sample passes compiled
(``compile_render``) and the VAE encoder in channels_last (``vae_channels_last``). On the CPU: the
code each lever runs, against the plain path, within the tolerance stated at each check; on a GPU
(``-m gpu``) the levers themselves."""

import logging

import pytest
import torch
import torch.nn.functional as F

from backend.engine.cameras import camera_rays, orbit_cameras
from backend.engine.compiled import CompiledOrEager
from backend.engine.field import BackgroundMLP, NeRFField
from backend.engine.mlp_precision import TF32Linear, resolve
from backend.engine.occupancy import TorchOccGridEstimator
from backend.engine.renderer import VolumeRenderer
from shared.settings import GenerationSettings, SettingError


def _field(precision: str, device="cpu") -> NeRFField:
    torch.manual_seed(1)
    field = NeRFField(n_levels=6, log2_table_size=12, base_resolution=4, max_resolution=128,
                      mlp_precision=precision).to(device)
    with torch.no_grad():
        field.encoding.table.uniform_(-0.5, 0.5)
    return field


def _outputs_and_grads(field: NeRFField, x: torch.Tensor):
    """Density, albedo and normals at ``x``, and the gradient of a loss on all three w.r.t. every parameter."""
    density, albedo, normals = field(x, with_normals=True)
    weights = torch.linspace(-1, 1, normals.numel(), device=x.device).reshape(normals.shape)
    loss = (normals * weights).sum() + 1e-2 * density.sum() + albedo.sum()
    grads = torch.autograd.grad(loss, [field.encoding.table, *field.mlp.parameters()])
    return (density, albedo, normals), grads


# -- field_precision ------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_tf32_linear_is_linear_with_its_hand_written_backward(bias):
    """TF32Linear (the tf32 choice's products on CUDA) is F.linear forward, and its hand-written
    backward is the exact gradient (gradcheck in float64 on the CPU, where no TF32 applies)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    assert torch.equal(TF32Linear.apply(x, w, b), F.linear(x, w, b))
    assert torch.autograd.gradcheck(TF32Linear.apply, (x, w, b))
    # As the Jacobian push uses it: a transposed weight view.
    assert torch.autograd.gradcheck(TF32Linear.apply, (x, w.t().contiguous().t(), b))


def test_field_precisions_agree_with_fp32_on_the_cpu():
    """tf32 is fp32 on the CPU (no TF32 there); bf16 (autocast) stays within bfloat16's precision of
    fp32: densities and albedo 3% relative, normals at least 0.99 cosine, parameter gradients 5% in
    norm. ``auto`` is fp32 on the CPU and TF32 on CUDA."""
    x = torch.rand(400, 3, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8
    (d32, a32, n32), g32 = _outputs_and_grads(_field("fp32"), x)
    (dtf, atf, ntf), gtf = _outputs_and_grads(_field("tf32"), x)
    assert torch.equal(d32, dtf) and torch.equal(n32, ntf) and all(torch.equal(a, b) for a, b in zip(g32, gtf))
    (d16, a16, n16), g16 = _outputs_and_grads(_field("bf16"), x)
    assert d16.dtype == a16.dtype == n16.dtype == torch.float32          # fp32 leaves the field
    assert not torch.equal(d16, d32)                                     # bf16 really ran
    assert ((d16 - d32).abs() / d32.abs().clamp(min=1e-3)).max() < 3e-2
    assert (a16 - a32).abs().max() < 3e-2
    assert (n16 * n32).sum(-1).min() > 0.99
    for got, want in zip(g16, g32):           # measured: <= 2.7% (the normals' loss weighs most)
        assert (got - want).norm() <= 5e-2 * want.norm(), (got - want).norm() / want.norm()
    assert resolve("auto", "cpu") == "fp32" and resolve("auto", "cuda") == "tf32"


def test_speed_lever_settings_validate_and_reach_the_engine(tiny_model_path):
    from backend.engine.guidance import load_guidance
    from backend.engine.trainer import NON_TRAJECTORY, Trainer
    from tests.helpers import tiny_settings

    for name, bad in (("field_precision", "fp16"), ("compile_render", "maybe"), ("vae_channels_last", "2")):
        with pytest.raises(SettingError, match=name):
            GenerationSettings.from_dict({"prompt": "a cube", name: bad})
        assert name in NON_TRAJECTORY            # the same run, computed another way: resumable across them
    with pytest.raises(ValueError, match="field_precision"):
        NeRFField(mlp_precision="fp16")
    guidance = load_guidance(str(tiny_model_path), "cpu")
    trainer = Trainer(tiny_settings(model=str(tiny_model_path), field_precision="bf16", compile_render=True),
                      guidance, torch.device("cpu"))
    assert trainer.field.mlp_precision == "bf16"
    assert trainer.renderer.compile is False       # compile_render acts on CUDA only
    guidance.configure(tiny_settings(model=str(tiny_model_path), vae_channels_last=True))
    assert guidance.vae_channels_last is False     # and vae_channels_last with the CUDA compile only


# -- compile_render -------------------------------------------------------------------------------
def _budget_renderer(compile: bool):
    torch.manual_seed(0)
    field = NeRFField(log2_table_size=12, max_resolution=128, blob_density=30.0)
    estimator = TorchOccGridEstimator([-1, -1, -1, 1, 1, 1], resolution=16)
    estimator.binaries[0, :, :, :8] = False
    renderer = VolumeRenderer(field, BackgroundMLP(), estimator, samples_per_ray=64, sampling="budget",
                              compile=compile)
    renderer.with_distortion = True
    return renderer


def _render_and_grads(renderer, rays_o, rays_d):
    torch.manual_seed(1)           # the sampler's jitter: drawn outside the compiled code, the same for both
    out = renderer(rays_o, rays_d, shading="lambertian", light_positions=rays_o * 1.2, stratified=True,
                   need_normals=True)
    loss = out["rgb"].square().sum() + out["orient_sum"] + out["distortion_sum"] + out["depth"].sum()
    params = [renderer.field.encoding.table, *renderer.field.mlp.parameters(), *renderer.background.parameters()]
    return out, torch.autograd.grad(loss, params)


@pytest.mark.slow
def test_compiled_render_passes_equal_the_eager_ones():
    """With compile_render the budget sampler's candidate grid and culling and the compositing (weights,
    shading, per-ray sums, distortion and orientation terms) run through torch.compile (Inductor's CPU
    code here): the same samples, and outputs and gradients within 1e-5 of the eager render (float
    summation order). Slow: Inductor compiles the forward and backward (~1 minute on 2 cores)."""
    from backend.engine.occupancy import candidate_grid, visible_samples
    from backend.engine.renderer import composite

    cams = orbit_cameras(20.0, [0.0, 120.0], 1.8, 50.0)
    rays_o, rays_d = (t.reshape(-1, 3) for t in camera_rays(cams, 12))
    eager, grads_eager = _render_and_grads(_budget_renderer(False), rays_o, rays_d)
    compiled, grads_compiled = _render_and_grads(_budget_renderer(True), rays_o, rays_d)
    for wrapper in (candidate_grid, visible_samples, composite):        # compiled, and not fallen back
        assert wrapper._compiled is not None and not wrapper.failed, wrapper.__name__
    assert int(compiled["n_samples"]) == int(eager["n_samples"]) > 0
    assert set(compiled) == set(eager)
    for key in eager:
        assert torch.allclose(compiled[key], eager[key], rtol=1e-5, atol=1e-6), key
    for got, want in zip(grads_compiled, grads_eager):
        assert want.abs().max() > 0 and torch.allclose(got, want, rtol=1e-4, atol=1e-6), (got - want).abs().max()


def test_a_pass_that_fails_to_compile_runs_eagerly_for_good(caplog):
    """compile_render's fallback: when compiling fails (here a torch.compile backend that raises, as
    Inductor does on a machine without a C++ compiler), the first call logs a warning and returns the
    eager result, and later calls stay eager."""
    attempts = []

    def no_compiler(graph_module, example_inputs):
        attempts.append(1)
        raise RuntimeError("no C++ compiler on this machine")

    def doubled(x):
        return x * 2

    wrapper = CompiledOrEager(doubled, backend=no_compiler)
    x = torch.arange(3.0)
    with caplog.at_level(logging.WARNING, logger="backend.engine.compiled"):
        assert torch.equal(wrapper(x, compiled=True), x * 2)
    assert wrapper.failed and attempts and "doubled" in caplog.text and "no C++ compiler" in caplog.text
    assert torch.equal(wrapper(x, compiled=True), x * 2) and len(attempts) == 1      # no second attempt
    assert torch.equal(wrapper(x), x * 2)


# -- vae_channels_last ----------------------------------------------------------------------------
def test_vae_encoder_in_channels_last_encodes_the_same(tiny_model_path):
    """vae_channels_last's code path (weights and input in NHWC; on CUDA under the compile, here
    eagerly): the same latents and input gradient as NCHW within 1e-5, and back to NCHW after."""
    from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance

    guidance = StableDiffusionGuidance(str(tiny_model_path), "cpu")
    conv = next(m for m in guidance.vae.encoder.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    side = 32 // guidance.vae_scale
    noise = torch.randn(2, guidance.vae.config.latent_channels, side, side, generator=torch.Generator().manual_seed(1))
    seen_layouts = []            # the encoder's input layout, as the encoder receives it
    guidance.vae.encoder.register_forward_pre_hook(
        lambda module, args: seen_layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    results = {}
    for channels_last in (False, True):
        guidance._set_vae_encoder("sdpa", compiled=False, channels_last=channels_last)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) is channels_last
        assert conv.weight.is_contiguous() is not channels_last
        x = image.clone().requires_grad_(True)
        latents = guidance.encode_images(x, noise)
        (latents * torch.linspace(-1, 1, latents.numel()).reshape(latents.shape)).sum().backward()
        results[channels_last] = (latents.detach(), x.grad)
    (l0, g0), (l1, g1) = results[False], results[True]
    assert seen_layouts == [False, True]
    assert g0.abs().max() > 0
    assert torch.allclose(l0, l1, rtol=1e-5, atol=1e-5) and torch.allclose(g0, g1, rtol=1e-5, atol=1e-6)
    guidance._set_vae_encoder("sdpa", compiled=False, channels_last=False)
    assert conv.weight.is_contiguous() and not guidance.vae_channels_last


def test_vae_layout_change_discards_the_compiled_encoder(tiny_model_path, monkeypatch):
    """A compiled encoder is never reused across a weight-layout change (on an H200 the graph compiled
    for the other layout failed its stride check and turned the compile off for the whole process):
    the change drops the compiled wrappers and Dynamo's caches; no change keeps them."""
    from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance

    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    guidance = StableDiffusionGuidance(str(tiny_model_path), "cpu")
    guidance._set_vae_encoder("matmul", compiled=True, channels_last=False)      # wraps; compiles lazily
    first = guidance.vae.encoder
    guidance._set_vae_encoder("matmul", compiled=True, channels_last=False)
    assert guidance.vae.encoder is first and not resets
    guidance._set_vae_encoder("matmul", compiled=True, channels_last=True)
    assert guidance.vae.encoder is not first and resets == [1]
    assert guidance.vae.encoder is guidance._compiled_encoders[("matmul", "default")]
    # vae_compile_mode: another torch.compile mode is another compiled wrapper, the default's kept
    default_mode = guidance.vae.encoder
    guidance._set_vae_encoder("matmul", compiled=True, channels_last=True, mode="reduce-overhead")
    assert guidance.vae.encoder is guidance._compiled_encoders[("matmul", "reduce-overhead")] is not default_mode
    guidance._set_vae_encoder("matmul", compiled=False, channels_last=False)
    assert resets == [1, 1] and guidance.vae.encoder is guidance._eager_encoder


# -- on a GPU: the levers themselves ----------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tf32_and_bf16_fields_agree_with_fp32_on_the_gpu():
    """On CUDA: TF32 within 1% of fp32 (densities relative, normals 0.999 cosine), bf16 as on the CPU."""
    x = torch.rand(4096, 3, device="cuda") * 1.6 - 0.8
    (d32, _, n32), _ = _outputs_and_grads(_field("fp32", "cuda"), x)
    for precision, rel, cos in (("tf32", 1e-2, 0.999), ("bf16", 3e-2, 0.99)):
        (d, _, n), _ = _outputs_and_grads(_field(precision, "cuda"), x)
        assert ((d - d32).abs() / d32.abs().clamp(min=1e-3)).max() < rel, precision
        assert (n * n32).sum(-1).min() > cos, precision


# -- the 10k projection (bench speed) --------------------------------------------------------------
def test_the_long_runs_later_segments_start_their_clock_after_the_jump(tiny_model_path):
    """``long_run`` jumps the step counter to 4000 and 8000; the steps right after a jump pay for what the
    jump changed at once (the training render's CUDA graphs captured again for the new hash levels and
    shadings), so they run unclocked and each later segment's clock starts ``jump_warmup`` steps in. The first
    segment (no jump) starts at step 0, and the projection covers the whole schedule."""
    from backend.bench.speed import long_run
    from backend.engine.guidance import load_guidance_for

    small = dict(resolution_schedule="16x1", samples_per_ray=16, hash_levels=4, hash_log2_size=10,
                 hash_max_resolution=64, occupancy_resolution=8, compile_vae=False)
    settings = GenerationSettings.from_dict({"prompt": "a red cube", "model": str(tiny_model_path), **small})
    guidance = load_guidance_for(settings, torch.device("cpu"))
    guidance.configure(settings)
    result = long_run(guidance, str(tiny_model_path), torch.device("cpu"), total_measured=6, jump_warmup=3, **small)
    starts = [(s["start"], s["clock_start"], s["steps"]) for s in result["segments"]]
    assert starts == [(0, 0, 2), (4000, 4003, 2), (8000, 8003, 2)]
    assert result["segments"][-1]["represents"] == [7000, settings.steps]
    assert result["projected_10k_s"] > 0
