"""Score Distillation Sampling with any Stable-Diffusion-layout diffusers model (SD 1.x / 2.x, the
built-in prior, tiny test models): DreamFusion's loss, implemented as threestudio's
``stable-diffusion-guidance``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

from backend.engine.guidance.base import Guidance, GuidanceRequest, PromptEmbeddings
from backend.engine.guidance.multiview import read_num_views, set_multiview_attention
from backend.engine.registry import register
from shared.settings import GenerationSettings

from backend.engine.cameras import CAMERA_CONDITION_DIM, camera_condition, host_to_device

if TYPE_CHECKING:
    from backend.engine.cameras import CameraBatch

WEIGHTINGS = ("sds", "uniform", "fantasia3d")
log = logging.getLogger(__name__)


_WARMUP_STREAMS: dict = {}


def warmup_stream(device) -> "torch.cuda.Stream":
    """The side stream every UNet graph capture on ``device`` warms up on, one per device for the process.
    Why not a new one each time: cuBLAS keeps a workspace (33 MiB on an H200) for every stream it has run a
    matmul on, for the life of the process, so a server worker that captured a graph per new input shape
    on a fresh stream grew by that much each time, up to the pool's 32 streams (~1 GB; found by ``bench
    cost``, results/speed/NOTES.md, session 25)."""
    key = torch.device(device)
    if key not in _WARMUP_STREAMS:
        _WARMUP_STREAMS[key] = torch.cuda.Stream(key)
    return _WARMUP_STREAMS[key]


@register("guidance", "stable-diffusion")
class StableDiffusionGuidance(Guidance):
    """SDS with the text-conditioned UNet. The camera reaches it through the view names of the prompt
    suffixes (``views``), and, for a camera-aware UNet (a "projection" class embedding of
    ``CAMERA_CONDITION_DIM`` inputs, MVDream's way: the built-in prior v6), also as each render's
    ``cameras.camera_condition``, given to the UNet as its class labels."""

    def __init__(self, model_path: str, device: torch.device | str, *, half_precision: bool = True):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        self.device = torch.device(device)
        # fp16 only on CUDA: CPU half-precision convolutions are slow or missing.
        self.dtype = torch.float16 if (half_precision and self.device.type == "cuda") else torch.float32
        load = dict(torch_dtype=self.dtype, local_files_only=True)
        self.tokenizer = CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer", local_files_only=True)
        self.text_encoder = CLIPTextModel.from_pretrained(model_path, subfolder="text_encoder", **load)
        self.vae = AutoencoderKL.from_pretrained(model_path, subfolder="vae", **load)
        self.unet = UNet2DConditionModel.from_pretrained(model_path, subfolder="unet", **load)
        # Only the noise schedule is needed; DDPMScheduler reads any SD scheduler config.
        self.scheduler = DDPMScheduler.from_pretrained(model_path, subfolder="scheduler", local_files_only=True)
        for module in (self.text_encoder, self.vae, self.unet):
            module.to(self.device).eval().requires_grad_(False)
        if self.device.type == "cuda":
            self.unet.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True     # fixed shapes per stage: let cuDNN pick kernels

        self._init_model_geometry(model_path)
        self.camera_conditioned = self.unet.config.class_embed_type == "projection"
        if self.unet.config.class_embed_type not in (None, "projection") or (
                self.camera_conditioned and self.unet.config.projection_class_embeddings_input_dim != CAMERA_CONDITION_DIM):
            raise ValueError(f"model {model_path}: a UNet class embedding must be absent or a camera projection "
                             f"of {CAMERA_CONDITION_DIM} inputs, got {self.unet.config.class_embed_type!r} "
                             f"({self.unet.config.projection_class_embeddings_input_dim} inputs)")
        # A multi-view prior (MVDream): its UNet's self-attention spans the views of one object.
        self.views_per_object = read_num_views(model_path)
        if self.views_per_object > 1:
            set_multiview_attention(self.unet, self.views_per_object)
        self._cache: dict[str, torch.Tensor] = {}
        # The UNet runs under no_grad on fixed shapes: on CUDA it is captured once per shape as a CUDA
        # graph and replayed, which removes the ~1,000 kernel launches per call that eager mode makes
        # the CPU issue (the cuda_graphs setting; a failed capture falls back to eager for good).
        self._graphs: dict[tuple, tuple] = {}
        self._graph_capture_failed = False
        self._init_vae_encoder_levers()
        self.configure(GenerationSettings())

    def _init_model_geometry(self, model_path: str) -> None:
        """What SDS needs to know of a loaded UNet/VAE/scheduler: latent scale, native image size,
        the noise schedule (shared by every type built on this class's SDS, zero123 too)."""
        self.name = str(model_path)
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_scale = self.vae.config.scaling_factor
        self.native_resolution = int(self.unet.config.sample_size) * self.vae_scale
        self.num_train_timesteps = self.scheduler.config.num_train_timesteps
        self.alphas = self.scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.prediction_type = self.scheduler.config.prediction_type

    def _init_vae_encoder_levers(self) -> None:
        """The VAE encoder's attention processor and torch.compile (settings vae_attention, compile_vae):
        the eager encoder is kept, one compiled wrapper per processor choice. Every type built on this
        class's SDS (zero123 too) calls this after loading its VAE."""
        self._eager_encoder = self.vae.encoder
        self._compiled_encoders: dict[tuple[str, str], torch.nn.Module] = {}
        self._compile_failed = False
        self.vae_attention = ""
        self.vae_channels_last = False

    def configure(self, settings: GenerationSettings) -> None:
        """Per-run options: ``guidance_resolution`` (0: the model's own), ``sds_weighting``, ``cuda_graphs``."""
        if settings.sds_weighting not in WEIGHTINGS:
            raise ValueError(f"sds_weighting must be one of {WEIGHTINGS}")
        self.weighting = settings.sds_weighting
        self.resolution = settings.guidance_resolution or self.native_resolution
        self.use_cuda_graphs = (self.device.type == "cuda" and settings.cuda_graphs
                                and not self._graph_capture_failed)
        attention = settings.vae_attention
        if attention == "auto":
            attention = "matmul" if self.device.type == "cuda" else "sdpa"
        compiled = self.device.type == "cuda" and settings.compile_vae and not self._compile_failed
        self._set_vae_encoder(attention, compiled, compiled and settings.vae_channels_last, settings.vae_compile_mode)

    def _set_vae_encoder(self, attention: str, compiled: bool, channels_last: bool = False,
                         mode: str = "default") -> None:
        """Install the VAE encoder's attention processor and, on request, its compiled wrapper.

        At 512^2 the encoder's mid-block attends over 4096 tokens with one 512-wide head: flash
        attention does not take that head size, so PyTorch's SDPA falls back to the memory-efficient
        kernel, whose backward alone cost ~6 ms per step (results/speed/NOTES.md). Diffusers' classic
        ``AttnProcessor`` (baddbmm, softmax, bmm: a 4096^2 score matrix, 64 MB in float32) is plain
        matrix products. torch.compile fuses the GroupNorm statistics (one block per group at batch
        1: 32 blocks on a 132-SM GPU) with the SiLU and elementwise passes around them.

        ``channels_last``: the encoder's weights and input in NHWC. In NCHW, cuDNN's fp16 convolutions
        on Hopper convert every input, weight and output to NHWC and back (126 conversion kernels,
        2.2 ms of a 64^2 step: results/speed/NOTES.md measurement 6). Eagerly, channels_last measured
        slower (runs 4 and 5; likely PyTorch's CUDA GroupNorm, which makes its input contiguous: a copy
        each way); compiled, Inductor writes the GroupNorm for the layout it is given. So: only with the
        compile.

        ``mode``: torch.compile's mode ("default" | "reduce-overhead": the compiled forward and backward
        replayed from CUDA graphs, for a step whose host issues kernels slower than the GPU runs them)."""
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        if attention != self.vae_attention:
            self.vae.encoder = self._eager_encoder          # processors are set on the eager modules
            processor = AttnProcessor() if attention == "matmul" else AttnProcessor2_0()
            for module in self._eager_encoder.modules():
                if hasattr(module, "set_processor"):          # diffusers' Attention
                    module.set_processor(processor)
            self.vae_attention = attention
        if channels_last != self.vae_channels_last:
            # The weights change layout in place. On the CPU a compiled encoder's guards see that and
            # recompile, but on an H200 (session 14, measurement 7) the graph compiled for the other
            # layout was reused and failed its own stride check, which turned the compile off for the
            # rest of the process (every later step ran the eager encoder, +6 ms). So a layout change
            # throws the compiled encoders and Dynamo's caches away; the next call compiles afresh.
            self._eager_encoder.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            self.vae_channels_last = channels_last
            if self._compiled_encoders:
                self._compiled_encoders.clear()
                torch._dynamo.reset()
        if compiled:
            key = (attention, mode)
            if key not in self._compiled_encoders:
                self._compiled_encoders[key] = torch.compile(self._eager_encoder, mode=mode)
            self.vae.encoder = self._compiled_encoders[key]
        else:
            self.vae.encoder = self._eager_encoder
        self.compile_vae = compiled

    # -- prompts ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _embed(self, text: str) -> torch.Tensor:
        if text not in self._cache:
            tokens = self.tokenizer([text], padding="max_length", max_length=self.tokenizer.model_max_length,
                                    truncation=True, return_tensors="pt")
            self._cache[text] = self.text_encoder(tokens.input_ids.to(self.device))[0]
        return self._cache[text]

    def encode_prompts(self, prompt: str, negative_prompt: str, view_suffixes: dict[str, str],
                       avoid_prompt: str = "") -> PromptEmbeddings:
        def per_view(text: str) -> dict:
            return {"": self._embed(text), **{view: self._embed(text + suffix) for view, suffix in view_suffixes.items()}}

        return PromptEmbeddings(by_view=per_view(prompt), uncond=self._embed(negative_prompt),
                                avoid=per_view(avoid_prompt) if avoid_prompt else None)

    # -- SDS -------------------------------------------------------------------------------------
    def encode_images(self, rgb_bchw: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Float[Tensor, "B 3 H W"] in [0, 1] -> scaled VAE latents Float[Tensor, "B 4 H/8 W/8"] (SD's VAE),
        a sample of the posterior: mean + std * ``noise`` (Float[Tensor, "B 4 H/8 W/8"]; None: drawn
        from the global RNG)."""
        x = rgb_bchw.to(self.dtype) * 2.0 - 1.0
        if self.vae_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            posterior = self.vae.encode(x).latent_dist
        except Exception as exc:       # noqa: BLE001 - torch.compile fails at the first call: run eagerly
            if not self.compile_vae:
                raise
            log.warning("torch.compile of the VAE encoder failed (%s); running it eagerly", exc)
            self._compile_failed = True
            self._set_vae_encoder(self.vae_attention, False)
            posterior = self.vae.encode(x.contiguous()).latent_dist
        if noise is None:
            return posterior.sample() * self.latent_scale
        return (posterior.mean + posterior.std * noise.to(posterior.mean.dtype)) * self.latent_scale

    def latent_shape(self, batch: int) -> tuple[int, int, int, int]:
        side = self.resolution // self.vae_scale
        return batch, int(self.vae.config.latent_channels), side, side

    @torch.no_grad()
    def predict_noise(self, latents_noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                      uncond: torch.Tensor, guidance_scale: float | torch.Tensor,
                      camera: Optional[torch.Tensor] = None, avoid: Optional[torch.Tensor] = None,
                      avoid_scale: float | torch.Tensor = 0.0, with_uncond: bool = False
                      ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """CFG noise prediction (epsilon), one UNet call on the [cond; uncond] pair (and ``avoid``).

        ``latents_noisy``: Float[Tensor, "B C h w"], ``t``: Int[Tensor, "B"], ``cond``/``uncond``:
        Float[Tensor, "B T D"], ``guidance_scale``: a number or Float[Tensor, "B 1 1 1"] (one per
        render: several jobs in one call), ``camera``: Float[Tensor, "B 16"] for a camera-aware UNet
        (the same for all parts: the guidance scale weighs the text, not the camera)
        -> Float[Tensor, "B C h w"].

        ``avoid`` (Float[Tensor, "B T D"]) adds ``avoid_scale * (eps(cond) - eps(avoid))``: composable
        diffusion's negated prompt (Liu et al. 2022), a push away from what ``avoid`` describes that keeps
        the unconditional term, which a negative prompt replaces. Why not the negative prompt: with a
        filled cup as the negative, the guidance loses its pull towards the object itself (a mug with
        "a red cylinder" as its negative came out a cylinder without a handle, IoU 0.06; session 26).

        ``with_uncond``: also return the unconditional prediction (for ``sds_noise_weight`` below 1)."""
        parts = 2 if avoid is None else 3
        latent_in = torch.cat([latents_noisy] * parts).to(self.dtype)
        t_in = torch.cat([t] * parts)
        context = torch.cat([cond, uncond] + ([] if avoid is None else [avoid])).to(self.dtype)
        labels = None if camera is None else torch.cat([camera] * parts).to(self.dtype)
        if self.device.type == "cuda":
            latent_in = latent_in.contiguous(memory_format=torch.channels_last)
        out = self._unet(latent_in, t_in, context, labels).float()
        if self.prediction_type == "v_prediction":
            # v = sqrt(a) * eps - sqrt(1-a) * x0  =>  eps = sqrt(a) * v + sqrt(1-a) * x_t
            a = self.alphas[t_in].view(-1, 1, 1, 1)
            out = a.sqrt() * out + (1 - a).sqrt() * latent_in.float()
        text, negative, *avoided = out.chunk(parts)
        guided = negative + guidance_scale * (text - negative)
        if avoid is not None:
            guided = guided + avoid_scale * (text - avoided[0])
        return (guided, negative) if with_uncond else guided

    def _unet(self, latent_in: torch.Tensor, t_in: torch.Tensor, context: torch.Tensor,
              class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """UNet epsilon/v prediction; replayed from a CUDA graph captured per input shape when enabled.
        The returned tensor is the graph's static output: use it before the next call."""
        if not self.use_cuda_graphs:
            return self.unet(latent_in, t_in, encoder_hidden_states=context, class_labels=class_labels).sample
        key = (tuple(latent_in.shape), tuple(context.shape), latent_in.dtype, class_labels is None)
        entry = self._graphs.get(key)
        if entry is None:
            try:
                entry = self._graphs[key] = self._capture(latent_in, t_in, context, class_labels)
            except Exception as exc:         # noqa: BLE001 - any capture failure: run eagerly from now on
                log.warning("CUDA graph capture of the UNet failed (%s); running it eagerly", exc)
                self.use_cuda_graphs, self._graph_capture_failed = False, True
                torch.cuda.synchronize(self.device)
                return self.unet(latent_in, t_in, encoder_hidden_states=context, class_labels=class_labels).sample
        graph, static_in, static_out = entry
        for buf, value in zip(static_in, (latent_in, t_in, context, class_labels)):
            if buf is not None:
                buf.copy_(value)
        graph.replay()
        return static_out

    def _capture(self, latent_in, t_in, context, class_labels=None):
        static_in = (latent_in.clone(memory_format=torch.preserve_format), t_in.clone(), context.clone(),
                     None if class_labels is None else class_labels.clone())
        # PyTorch's recipe: warm up on a side stream (cuDNN/cuBLAS choose kernels), then capture.
        stream = warmup_stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self.unet(static_in[0], static_in[1], encoder_hidden_states=static_in[2], class_labels=static_in[3])
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.unet(static_in[0], static_in[1], encoder_hidden_states=static_in[2],
                                   class_labels=static_in[3]).sample
        return graph, static_in, static_out

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas[t].view(-1, 1, 1, 1)
        if self.weighting == "sds":
            return 1.0 - a
        if self.weighting == "uniform":
            return torch.ones_like(a)
        return a.sqrt() * (1.0 - a)

    def __call__(self, rgb: torch.Tensor, embeddings: PromptEmbeddings, views: list[str], *,
                 cameras: Optional[CameraBatch] = None, guidance_scale: float,
                 t_range: tuple[float, float], generator: Optional[torch.Generator] = None) -> dict:
        """SDS on ``rgb`` Float[Tensor, "B H W 3"] (see ``Guidance.__call__``). Also returns
        ``grad_norm`` and the drawn ``timesteps`` Int[Tensor, "B"]. ``generator``: a generator on the
        guidance's device every random draw comes from (None: the global RNG)."""
        return self.guide_many([GuidanceRequest(rgb, embeddings, views, cameras, guidance_scale, t_range,
                                                generator)])[0]

    batches_jobs = True

    def draw(self, batch: int, t_range: tuple[float, float], generator: Optional[torch.Generator]):
        """One request's random inputs, in a fixed order from its generator: timesteps Int[Tensor, "B"],
        the SDS noise and the VAE posterior's noise, Float[Tensor, "B C h w"] each. Drawn on the device
        so the step never waits on a host-to-device copy."""
        t_lo = int(t_range[0] * self.num_train_timesteps)
        t_hi = max(t_lo, int(t_range[1] * self.num_train_timesteps))
        v = self.views_per_object
        if batch % v:
            raise ValueError(f"model {self.name} judges {v} views of an object together: a batch of renders "
                             f"must be a multiple of {v}, got {batch} (resolution_schedule's batch)")
        # one timestep per object: the views of a multi-view prior are noised alike, as it was trained
        t = torch.randint(t_lo, min(t_hi, self.num_train_timesteps - 1) + 1, (batch // v,), device=self.device,
                          generator=generator)
        if v > 1:
            t = t.repeat_interleave(v)
        shape = self.latent_shape(batch)
        noise = torch.randn(shape, device=self.device, generator=generator)
        posterior_noise = torch.randn(shape, device=self.device, generator=generator)
        return t, noise, posterior_noise

    def guide_many(self, requests: list[GuidanceRequest]) -> list[dict]:
        """SDS for several jobs' renders with ONE VAE encode and ONE UNet call: the rows of all requests
        are stacked with their own prompt embeddings, guidance scale, timestep and noise (each drawn
        from its request's generator), and each request's loss is computed over its own rows only, so
        a job gets the same gradient alone or in a group (to floating-point summation order)."""
        images, draws, conds, unconds, scales, sizes, cameras = [], [], [], [], [], [], []
        avoids, avoid_scales, noise_weights = [], [], []
        any_avoid = any(r.avoid_scale > 0 and r.embeddings.avoid is not None for r in requests)
        for r in requests:
            rgb_bchw = r.rgb.permute(0, 3, 1, 2)
            if rgb_bchw.shape[-1] != self.resolution:
                rgb_bchw = F.interpolate(rgb_bchw, (self.resolution, self.resolution), mode="bilinear",
                                         align_corners=False)
            images.append(rgb_bchw)
            draws.append(self.draw(rgb_bchw.shape[0], r.t_range, r.generator))
            cond, uncond = r.embeddings.for_views(r.views)
            conds.append(cond)
            unconds.append(uncond)
            if any_avoid:      # a request without the term avoids its own prompt: a zero term
                uses = r.avoid_scale > 0 and r.embeddings.avoid is not None
                avoids.append(r.embeddings.avoid_for_views(r.views) if uses else cond)
                avoid_scales += [float(r.avoid_scale) if uses else 0.0] * rgb_bchw.shape[0]
            if self.camera_conditioned:
                if r.cameras is None:
                    raise ValueError(f"model {self.name} is conditioned on the camera: SDS needs each render's "
                                     "camera (GuidanceRequest.cameras)")
                cameras.append(camera_condition(r.cameras.c2w).to(self.device, torch.float32))
            scales += [float(r.guidance_scale)] * rgb_bchw.shape[0]
            noise_weights += [float(r.noise_weight)] * rgb_bchw.shape[0]
            sizes.append(rgb_bchw.shape[0])
        t = torch.cat([d[0] for d in draws])
        noise = torch.cat([d[1] for d in draws])
        latents = self.encode_images(torch.cat(images), torch.cat([d[2] for d in draws])).float()
        def per_row(values: list[float]):
            """One number when all rows share it (the usual case); else one per row."""
            return values[0] if len(set(values)) == 1 else host_to_device(torch.tensor(values), self.device).view(-1, 1, 1, 1)

        # SDS's gradient is guided - noise = (eps_uncond - noise) + s * (eps_text - eps_uncond): a denoising
        # term and a classifier term. sds_noise_weight scales the first; at 0 it is classifier score
        # distillation (CSD, Yu et al. 2023), whose gradient has no noise sample in it.
        csd = any(w != 1.0 for w in noise_weights)
        with torch.no_grad():
            noisy = self.scheduler.add_noise(latents.detach(), noise, t)
            noise_pred = self.predict_noise(noisy, t, torch.cat(conds), torch.cat(unconds), per_row(scales),
                                            torch.cat(cameras) if cameras else None,
                                            torch.cat(avoids) if any_avoid else None,
                                            per_row(avoid_scales) if any_avoid else 0.0, with_uncond=csd)
            if csd:
                noise_pred, uncond_pred = noise_pred
                w = per_row(noise_weights)
                noise = w * noise + (1 - w) * uncond_pred
        grad = torch.nan_to_num(self.weight(t) * (noise_pred - noise))
        # The MSE-to-detached-target trick: d(loss)/d(latents) == grad, without a custom backward.
        target = (latents - grad).detach()
        per_row = 0.5 * ((latents - target) ** 2).flatten(1).sum(1)
        results, start = [], 0
        for n in sizes:
            rows = slice(start, start + n)
            results.append({"loss_sds": per_row[rows].sum() / n, "grad_norm": grad[rows].norm(),
                            "timesteps": t[rows]})
            start += n
        return results
