"""Every generation setting, in one place: name, default, allowed range, help.

This module is the single source of truth for the knobs an artist can turn. The CLI builds its
flags from it, the server validates submitted jobs with it, the Blender add-on builds its panel
properties from it and the engine reads its configuration from it, so a setting has the same
name, default and range check on every side. Pure Python: Blender imports it, so no torch here.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

MAX_PROMPT_CHARS = 500

# The engine's guidance and geometry types, by name (``backend/engine/registry.py`` maps each name to
# its class). Declared here as well because this module must not import the engine: Blender and the
# server validate settings without it. Adding a built-in type: its module with an ``@register`` line,
# one import in ``backend/engine/builtin_types.py``, and its name here (``tests/test_registry.py``
# checks that the engine and these lists agree).
GUIDANCE_TYPES = ("stable-diffusion", "zero123")
# Guidance types conditioned on a reference image (image-to-3D): a job with one of these needs an image,
# and its prompt is optional (given, it adds the text prior: Magic123's joint mode).
IMAGE_GUIDANCE_TYPES = ("zero123",)
GEOMETRY_TYPES = ("implicit-volume", "implicit-sdf")
# The optimisation stages a run may have (the ``stages`` setting): the coarse NeRF alone, or the coarse
# NeRF followed by the fine stage (``backend/engine/fine.py``: an SDF initialised from the coarse
# density, rendered sharper and optimised again; Magic3D's coarse -> fine).
STAGES = ("coarse", "coarse,fine")
# Whether the coarse result is opened from the top when the coarse stage ends (``backend/engine/hollow.py``):
# always, never, or for the built-in prior's hollow props.
HOLLOW = ("auto", "on", "off")
# How the coarse density's iso-level is chosen when ``mesh_threshold`` is not given (``mesh_level``): from the
# density values alone (``backend.export.mesh.auto_threshold``), or matched to the field's own rendered
# silhouettes (``backend/engine/silhouette_level.py``).
MESH_LEVELS = ("density", "silhouette")
# What the coarse field starts from (``shape_init``): the centred ball of density (``blob_density``) or the
# visual hull of the prompt's prior samples (``backend/engine/prior_hull.py``).
SHAPE_INITS = ("blob", "prior-hull")
# Where ``fine_flat_base`` reads the base's height (``backend.export.mesh.BASE_QUANTILE`` says why each): the median
# bottom of the footprint's rim, or, under upright sides, a quantile of every footprint column's bottom.
BASE_READS = ("rim", "bottoms")
# Values added at run time to the choices of these settings (``add_choice``).
_EXTRA_CHOICES: dict[str, list[str]] = {"guidance_type": [], "geometry_type": []}


class SettingError(ValueError):
    """A setting has a bad value. ``name`` is the setting's name (the CLI flag is --name-with-dashes)."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def _s(default: Any, *, lo: float | None = None, hi: float | None = None,
       choices: tuple | None = None, group: str = "", help: str = "", optional: bool = False,
       max_len: int | None = None, protocol: bool = True):
    """Declare one setting. ``optional`` allows ``None`` (e.g. "auto" threshold)."""
    return field(default=default, metadata=dict(lo=lo, hi=hi, choices=choices, group=group,
                                                help=help, optional=optional, max_len=max_len,
                                                protocol=protocol))


# A resolution schedule: comma-separated stages ``RESxBATCH@STEP`` (the first stage starts at 0).
_STAGE_RE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*(?:@\s*(\d+))?\s*$")


@dataclass(frozen=True)
class Stage:
    resolution: int
    batch_size: int
    start_step: int


def parse_resolution_schedule(text: str) -> list[Stage]:
    """Parse ``"64x1,128x1@5000,256x1@8000"`` into stages; raises SettingError on bad input."""
    stages: list[Stage] = []
    for i, part in enumerate(str(text).split(",")):
        m = _STAGE_RE.match(part)
        if not m:
            raise SettingError("resolution_schedule",
                               f"stage {part.strip()!r} is not RESxBATCH or RESxBATCH@STEP "
                               "(e.g. '64x1,128x1@5000')")
        res, batch, start = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if i == 0 and start != 0:
            raise SettingError("resolution_schedule", "the first stage must start at step 0")
        if not 16 <= res <= 1024:
            raise SettingError("resolution_schedule", f"resolution must be in [16, 1024], got {res}")
        if not 1 <= batch <= 64:
            raise SettingError("resolution_schedule", f"batch size must be in [1, 64], got {batch}")
        if stages and start <= stages[-1].start_step:
            raise SettingError("resolution_schedule", "stage start steps must increase")
        stages.append(Stage(res, batch, start))
    return stages


@dataclass
class GenerationSettings:
    """All knobs of one text-to-3D run. Defaults follow threestudio's ``dreamfusion-sd``."""

    # -- what to make ------------------------------------------------------------------------
    prompt: str = _s("", group="prompt", max_len=MAX_PROMPT_CHARS, help="what to generate")
    negative_prompt: str = _s("", group="prompt", max_len=MAX_PROMPT_CHARS,
                              help="what to steer away from")
    avoid_prompt: str = _s("", group="prompt", max_len=MAX_PROMPT_CHARS,
                           help="what the result must not look like, steered away from with avoid_scale while "
                                "the guidance keeps its unconditional term (unlike negative_prompt, which replaces "
                                "it); {prompt} stands for the prompt. With shape_model, only the shape prior's")
    seed: int = _s(0, lo=0, hi=2**31 - 1, group="prompt", help="random seed (same seed, same result)")
    model: str = _s("builtin", group="prompt", max_len=1000,
                    help="'builtin', a local diffusers folder, or a Hugging Face id in your cache")

    # -- cameras -------------------------------------------------------------------------------
    elevation_min: float = _s(-10.0, lo=-89.0, hi=89.0, group="camera", help="degrees")
    elevation_max: float = _s(45.0, lo=-89.0, hi=89.0, group="camera", help="degrees")
    albedo_elevation_min: float = _s(-89.0, lo=-89.0, hi=89.0, group="camera",
                                     help="degrees: the albedo-shaded renders (the colour's) draw their cameras from "
                                          "at least this elevation, the lit and textureless ones (the shape's) from "
                                          "elevation_min: lets cameras go lower for the shape than a colour prior "
                                          "has seen (the built-in priors were trained from -10)")
    azimuth_min: float = _s(-180.0, lo=-180.0, hi=180.0, group="camera", help="degrees")
    azimuth_max: float = _s(180.0, lo=-180.0, hi=180.0, group="camera", help="degrees")
    distance_min: float = _s(1.5, lo=0.5, hi=10.0, group="camera", help="scene units; object fits in radius 1")
    distance_max: float = _s(2.0, lo=0.5, hi=10.0, group="camera", help="scene units")
    fovy_min: float = _s(40.0, lo=5.0, hi=120.0, group="camera", help="vertical field of view, degrees")
    fovy_max: float = _s(70.0, lo=5.0, hi=120.0, group="camera", help="degrees")
    camera_perturb: float = _s(0.1, lo=0.0, hi=1.0, group="camera", help="camera position jitter")
    center_perturb: float = _s(0.2, lo=0.0, hi=1.0, group="camera", help="look-at point jitter")
    up_perturb: float = _s(0.02, lo=0.0, hi=1.0, group="camera", help="up vector jitter")
    view_dependent_prompt: bool = _s(True, group="camera", help="add front/side/back/overhead view suffixes")
    view_naming: str = _s("threestudio", choices=("threestudio", "compass"), group="camera",
                          help="view suffixes: threestudio's front/side/back/overhead, or 'compass': eight "
                               "45-degree sectors (front, front left, left, ... ) + overhead")
    front_threshold: float = _s(45.0, lo=0.0, hi=90.0, group="camera",
                                help="|azimuth| below this is 'front view', above 180-this is 'back view'")
    overhead_threshold: float = _s(60.0, lo=0.0, hi=90.0, group="camera",
                                   help="elevation above this is 'overhead view'")

    # -- optimisation ----------------------------------------------------------------------------
    steps: int = _s(10000, lo=1, hi=100000, group="optim", help="SDS optimisation steps")
    resolution_schedule: str = _s("64x1", group="optim", max_len=200,
                                  help="render stages RESxBATCH@STEP, e.g. '64x1,128x1@5000,256x1@8000'")
    lr: float = _s(0.01, lo=1e-6, hi=1.0, group="optim", help="Adam learning rate of the field")
    lr_background: float = _s(0.001, lo=0.0, hi=1.0, group="optim", help="learning rate of the background")
    lr_final_ratio: float = _s(1.0, lo=0.0, hi=1.0, group="optim",
                               help="learning rates decay exponentially to this fraction by the last step "
                                    "(1 = constant, threestudio's default)")
    albedo_warmup_steps: int = _s(2000, lo=0, hi=100000, group="optim",
                                  help="albedo-only shading for the first N steps")
    lit_albedo_gradient: bool = _s(True, group="optim",
                                   help="let the lit (lambertian) renders' SDS gradient reach the albedo; off: "
                                        "the colour is learnt from the albedo-shaded renders only and the lit "
                                        "ones shape the geometry (closes one road by which a prior that takes "
                                        "dark paint for shadow darkens the object)")
    orientation_weight_start: float = _s(10.0, lo=0.0, hi=1e5, group="optim")
    orientation_weight_end: float = _s(1000.0, lo=0.0, hi=1e5, group="optim")
    orientation_ramp_steps: int = _s(5000, lo=0, hi=100000, group="optim",
                                     help="steps over which the orientation weight ramps start->end")
    sparsity_weight: float = _s(1.0, lo=0.0, hi=1e4, group="optim", help="mean sqrt(opacity^2+0.01)")
    opacity_weight: float = _s(0.0, lo=0.0, hi=1e4, group="optim",
                               help="push opacity to 0 or 1 (binary entropy)")
    distortion_weight: float = _s(0.0, lo=0.0, hi=1e5, group="optim",
                                  help="Mip-NeRF 360 distortion loss per ray: concentrates haze into surfaces")
    progressive_levels: bool = _s(True, group="optim", help="unlock hash-grid levels progressively")
    preview_interval: int = _s(100, lo=0, hi=100000, group="optim",
                               help="progress callback / preview every N steps (0: none)")
    preview_size: int = _s(128, lo=16, hi=1024, group="optim", help="preview render size, pixels")
    proxy_mesh_interval: int = _s(0, lo=0, hi=100000, group="optim",
                                  help="coarse proxy mesh every N steps (0: none)")
    stages: str = _s("coarse", choices=STAGES, group="optim",
                     help="coarse = the hash-grid NeRF only; coarse,fine = then a fine stage: a signed distance "
                          "field initialised from the coarse result, rendered sharper and optimised again for "
                          "flat faces and sharp edges (Magic3D's coarse -> fine)")
    hollow: str = _s("auto", choices=HOLLOW, group="optim",
                     help="open the coarse result from the top when the coarse stage ends (walls and bottom 0.07 "
                          "units thick): a cup, bowl or bucket that SDS drew filled. auto = on for the built-in "
                          "prior's hollow props (mug, bowl, bucket), off for everything else")
    fine_steps: int = _s(2000, lo=1, hi=100000, group="optim",
                         help="SDS steps of the fine stage (after the 'steps' of the coarse stage)")
    fine_resolution: int = _s(128, lo=16, hi=1024, group="optim",
                              help="render size of the fine stage, pixels (the coarse stage's comes from "
                                   "resolution_schedule)")
    fine_lr: float = _s(0.005, lo=1e-6, hi=1.0, group="optim", help="Adam learning rate of the fine stage")
    fine_eikonal_weight: float = _s(0.1, lo=0.0, hi=1e4, group="optim",
                                    help="fine stage: keeps the field a signed distance (|grad sdf| = 1)")
    fine_smoothness_weight: float = _s(1.0, lo=0.0, hi=1e5, group="optim",
                                       help="fine stage: normal smoothness near the surface (flat faces, "
                                            "no bumps)")
    fine_render_offset: float = _s(1.5, lo=0.0, hi=4.0, group="optim",
                                   help="fine stage: the surface is drawn this many betas (the render's edge "
                                        "softness) inside the zero level it exports, because a soft surface "
                                        "looks larger than it is; lower lets the shape grow, higher shrinks it")
    checkpoint_interval: int = _s(500, lo=0, hi=100000, group="optim",
                                  help="save a resumable checkpoint every N steps (0: never)")

    # -- guidance --------------------------------------------------------------------------------
    guidance_type: str = _s("stable-diffusion", choices=GUIDANCE_TYPES, group="guidance",
                            help="what turns renders into gradients: stable-diffusion = SDS with a Stable-"
                                 "Diffusion-layout model (the 'model' setting); zero123 = SDS with a view-"
                                 "conditioned Zero-1-to-3-layout model given a reference image ('builtin': "
                                 "the project's view prior)")
    guidance_scale: float = _s(100.0, lo=1.0, hi=200.0, group="guidance", help="classifier-free guidance")
    avoid_scale: float = _s(0.0, lo=0.0, hi=200.0, group="guidance",
                            help="weight of avoid_prompt's term (composable diffusion's negated prompt; 0 = off)")
    shape_model: str = _s("", group="guidance", max_len=1000,
                          help="a second Stable-Diffusion-layout prior (folder or HF id) that guides the lit and "
                               "textureless renders, i.e. the shape, while 'model' guides the albedo-shaded ones, "
                               "i.e. the colour ('' = 'model' guides every render; stable-diffusion guidance, or an "
                               "image job's text prior in joint mode)")
    shape_guidance_scale: float = _s(0.0, lo=0.0, hi=200.0, group="guidance",
                                     help="classifier-free guidance of the shape_model's renders (the lit and "
                                          "textureless ones; 0 = guidance_scale; unused without a shape_model, "
                                          "so turning the built-in preset's shape prior off needs no other change)")
    shading_prompt: bool = _s(False, group="guidance",
                              help="name each render's shading in its prompt ('a shaded red cube', 'an "
                                   "unpainted red cube'; albedo renders keep the prompt): for a prior trained "
                                   "with such captions")
    image_guidance_scale: float = _s(3.0, lo=1.0, hi=50.0, group="guidance",
                                     help="classifier-free guidance on the reference image (zero123; "
                                          "threestudio's stable-zero123 uses 3)")
    t_min: float = _s(0.02, lo=0.0, hi=1.0, group="guidance", help="min diffusion time (fraction)")
    t_max: float = _s(0.98, lo=0.0, hi=1.0, group="guidance", help="max diffusion time (fraction)")
    t_anneal: bool = _s(False, group="guidance", help="anneal t_max linearly to t_max_end over the run")
    t_max_end: float = _s(0.5, lo=0.0, hi=1.0, group="guidance", help="t_max at the last step when annealing")
    sds_noise_weight: float = _s(1.0, lo=0.0, hi=1.0, group="guidance",
                                 help="weight of SDS's denoising term, eps(uncond) - noise, in the gradient beside "
                                      "the classifier term guidance_scale * (eps(text) - eps(uncond)): 1 = SDS "
                                      "(DreamFusion), 0 = classifier score distillation (CSD, Yu et al. 2023)")
    sds_weighting: str = _s("sds", choices=("sds", "uniform", "fantasia3d"), group="guidance",
                            help="w(t): sds = 1 - alpha_bar, uniform = 1, fantasia3d = sqrt(alpha_bar)*(1-alpha_bar)")
    half_precision: bool = _s(True, group="guidance", help="UNet/VAE in fp16 on CUDA (always fp32 on CPU)")
    guidance_resolution: int = _s(0, lo=0, hi=1024, group="guidance",
                                  help="image size the render is upsampled to for the VAE (0: the model's own)")
    cuda_graphs: bool = _s(True, group="guidance",
                           help="on CUDA, replay the UNet from a captured CUDA graph (far fewer kernel launches; "
                                "same result); off: run it eagerly")
    vae_attention: str = _s("auto", choices=("auto", "sdpa", "matmul"), group="guidance",
                            help="the VAE encoder's attention: matmul = plain batched matrix products and softmax "
                                 "(fast for its one 512-wide head, which flash attention does not take); sdpa = "
                                 "PyTorch's scaled_dot_product_attention; auto = matmul on CUDA, sdpa elsewhere "
                                 "(same result)")
    compile_vae: bool = _s(True, group="guidance",
                           help="on CUDA, compile the VAE encoder with torch.compile (fuses its GroupNorm, SiLU and "
                                "elementwise passes; compiled once per process and image size); off: eager")
    vae_compile_mode: str = _s("default", choices=("default", "reduce-overhead"), group="guidance",
                               help="torch.compile's mode for the VAE encoder (with compile_vae): default = fused "
                                    "kernels launched one by one from the host (~5 ms of host work a step per "
                                    "compiled region); reduce-overhead = the same kernels replayed from CUDA "
                                    "graphs (same result; the default until a GPU run measures it)")
    vae_channels_last: bool = _s(False, group="guidance",
                                 help="on CUDA with compile_vae, the VAE encoder's weights and input in channels_last "
                                      "memory format (cuDNN's NHWC convolutions without its NCHW<->NHWC conversions; "
                                      "same result); off (the default until a GPU run measures it: eager "
                                      "channels_last was slower in runs 4-5): NCHW")

    # -- image-to-3D: the reference view (backend/engine/reference.py) ---------------------------
    # threestudio's stable-zero123 system: each step the reference camera renders the object and is
    # compared to the input picture (RGB on the object's mask, and the mask against the opacity);
    # the random views get SDS from the view-conditioned guidance.
    reference_elevation: float = _s(5.0, lo=-30.0, hi=60.0, group="reference",
                                    help="degrees above the horizon the reference picture was taken from "
                                         "(threestudio: 5; 0-15 for a picture taken from the front)")
    reference_azimuth: float = _s(0.0, lo=-180.0, hi=180.0, group="reference",
                                  help="degrees; 0 = the picture shows the object's front (+X)")
    reference_distance: float | None = _s(None, lo=0.5, hi=10.0, optional=True, group="reference",
                                          help="reference camera distance (auto: the middle of distance_min/max, "
                                               "the engine's default camera)")
    reference_fovy: float | None = _s(None, lo=5.0, hi=120.0, optional=True, group="reference",
                                      help="reference camera field of view, degrees (auto: the middle of "
                                           "fovy_min/max)")
    reference_fill: float = _s(0.8, lo=0.0, hi=1.0, group="reference",
                               help="the object's bounding box is scaled to this fraction of the frame and "
                                    "centred (threestudio: 0.8); 0 = keep the picture's own framing "
                                    "(a render made with the reference camera). With the built-in text prior "
                                    "and a prompt (given or read), the size that prior draws the object at")
    reference_resolution: int = _s(64, lo=16, hi=1024, group="reference",
                                   help="side of the reference view's render, pixels")
    reference_rays: int = _s(0, lo=0, hi=2**22, group="reference",
                             help="reference pixels rendered per step, drawn at random (an unbiased estimate of "
                                  "the losses over the whole picture at a fraction of the cost); 0 = all")
    reference_rgb_weight: float = _s(1000.0, lo=0.0, hi=1e6, group="reference",
                                     help="weight of the reference view's colour loss (MSE on the object's "
                                          "mask; threestudio ramps it to 1000)")
    reference_mask_weight: float = _s(50.0, lo=0.0, hi=1e6, group="reference",
                                      help="weight of the reference view's mask loss (MSE of opacity against "
                                           "the picture's mask; threestudio: 50)")
    image_guidance_weight: float = _s(1.0, lo=0.0, hi=1e4, group="reference",
                                      help="weight of the view-conditioned (image) guidance's SDS loss")
    text_guidance_weight: float = _s(0.025, lo=0.0, hi=1e4, group="reference",
                                     help="joint mode (an image and a prompt): weight of the text prior's SDS "
                                          "loss (threestudio's Magic123: 0.025 against the image prior's 1); "
                                          "0 = the prompt is not used")
    text_model: str = _s("builtin", group="reference", max_len=1000,
                         help="joint mode: the text prior ('builtin', a local diffusers folder or a Hugging "
                              "Face id in your cache)")
    auto_prompt: bool = _s(True, group="reference",
                           help="an image job with no prompt and the built-in text prior: read the prompt from "
                                "the picture (the caption the text prior finds likeliest) and run joint mode")

    # -- field and renderer ----------------------------------------------------------------------
    geometry_type: str = _s("implicit-volume", choices=GEOMETRY_TYPES, group="field",
                            help="the 3D representation optimised: implicit-volume = hash-grid NeRF density "
                                 "and albedo (threestudio's implicit-volume); implicit-sdf = a signed distance "
                                 "field from a sphere, rendered VolSDF-style (the fine stage's geometry)")
    hash_levels: int = _s(16, lo=1, hi=32, group="field")
    hash_features: int = _s(2, lo=1, hi=8, group="field", help="features per level")
    hash_log2_size: int = _s(19, lo=10, hi=24, group="field", help="log2 of the hash table size")
    hash_base_resolution: int = _s(16, lo=2, hi=512, group="field")
    hash_max_resolution: int = _s(4096, lo=16, hi=16384, group="field")
    hashgrid_backend: str = _s("auto", choices=("auto", "torch"), group="field",
                               help="hash-grid encoder: auto = the fused Triton kernel on CUDA when Triton is "
                                    "installed, else PyTorch; torch = always the PyTorch reference")
    mlp_width: int = _s(64, lo=8, hi=512, group="field")
    field_precision: str = _s("auto", choices=("auto", "fp32", "tf32", "bf16"), group="field",
                              help="the field MLPs' matrix products: fp32 = plain float32 (no tensor cores); tf32 "
                                   "= on CUDA, TensorFloat-32 tensor-core products with fp32 storage and "
                                   "accumulation (fp32 on the CPU); bf16 = bfloat16 products and activations "
                                   "(autocast); auto = tf32 on CUDA, fp32 on the CPU (results/speed/NOTES.md "
                                   "measurement 7)")
    density_activation: str = _s("softplus", choices=("softplus", "exp"), group="field")
    blob_density: float = _s(10.0, lo=0.0, hi=100.0, group="field", help="density bias at the centre")
    blob_radius: float = _s(0.5, lo=0.05, hi=1.0, group="field", help="radius of the initial blob")
    shape_init: str = _s("blob", choices=SHAPE_INITS, group="field",
                         help="what the coarse field starts from: blob = a ball of density at the centre; "
                              "prior-hull = the visual hull of the text prior's own samples of the prompt at 8 "
                              "views around it, opened from the top for a container (better for plain solids with flat faces, "
                              "worse for props with handles or legs; seconds on a CPU; text jobs only)")
    normal_type: str = _s("analytic", choices=("analytic", "finite_difference"), group="field")
    background: str = _s("mlp", choices=("mlp", "random", "white", "black"), group="field",
                         help="learned view-dependent MLP, random solid colour, or fixed colour")
    random_background_prob: float = _s(0.0, lo=0.0, hi=1.0, group="field",
                                       help="with background=mlp, chance of a random solid colour per step")
    samples_per_ray: int = _s(512, lo=8, hi=4096, group="render",
                              help="step size = diagonal / samples_per_ray")
    checkpoint_rays: int = _s(65536, lo=0, hi=2**24, group="render",
                              help="on CUDA, a step renders more rays than this in chunks of this many under "
                                   "activation checkpointing (memory grows with the chunk, not the image, for a "
                                   "second forward pass); 0: never. Never on the CPU")
    sampling: str = _s("auto", choices=("auto", "dynamic", "budget"), group="render",
                       help="ray sampling of training renders: dynamic = exactly as many samples as the "
                            "occupancy grid gives (nerfacc on CUDA: the CPU waits for the count every step); "
                            "budget = fixed, self-adjusting sample buffers, no GPU-to-CPU wait in a step (same "
                            "samples); auto = budget on CUDA (H200: 35.7 vs 37.6 ms a 64 px step, "
                            "results/speed/NOTES.md run 6), dynamic on the CPU")
    compile_render: bool = _s(False, group="render",
                              help="on CUDA, compile the renderer's per-sample elementwise passes (the fixed-"
                                   "budget sampler's candidate grid and culling, compositing, shading) with "
                                   "torch.compile (fused kernels; compiled once per process and render size; "
                                   "eager if compiling fails); off (the default until a GPU run shows its "
                                   "~1 ms a step pays for its 30-60 s compile per process): eager. Acts with "
                                   "sampling=budget only")
    graph_render: bool = _s(True, group="render",
                            help="on CUDA with the budget sampler, replay each training render's forward and "
                                 "backward from CUDA graphs (one pair per shading, buffer sizes and active hash "
                                 "levels; captured on a shape's third use, up to 8 kept, ~0.5 GB): the CPU issues "
                                 "two launches instead of ~500 small kernels, which the step waits for (H200, SD-1.5 "
                                 "64 px step: 32.2 -> 30.7 ms on a fast host, the render's host time 10.6 -> 5.5 ms; "
                                 "results/speed/NOTES.md session 37); off: eager")
    occupancy_resolution: int = _s(32, lo=8, hi=256, group="render", help="occupancy grid cells per side")
    shading: str = _s("dreamfusion", choices=("dreamfusion", "albedo", "lambertian", "textureless"),
                      group="render", help="dreamfusion: random mix after the albedo warm-up")

    # -- export ----------------------------------------------------------------------------------
    mesh_resolution: int = _s(256, lo=32, hi=512, group="export", help="marching cubes grid per side")
    mesh_threshold: float | None = _s(None, lo=0.0, hi=1e4, optional=True, group="export",
                                      help="density iso-level (None: automatic, by mesh_level)")
    mesh_level: str = _s("density", choices=MESH_LEVELS, group="export",
                         help="how the automatic iso-level of the coarse field is chosen (its export and the fine "
                              "stage's start): density = from the density values alone; silhouette = so that the "
                              "mesh covers what the field's own renders cover from 24 views around it (a soft "
                              "field's flat faces otherwise come out too large and its round ones too small; an object "
                              "whose thickest part is thin keeps the density level, and a bulky one's fine stage "
                              "draws its surface at most 1.0 beta inside)")
    fine_thin_inset: float = _s(0.0, lo=0.0, hi=0.05, group="export",
                                help="the fine stage's mesh: parts thinner than about 0.06 (scene units; objects are "
                                     "about 1 across) drawn this much thinner on each side, thick parts unchanged (a "
                                     "field optimised through small renders draws thin parts ~a render pixel thick; "
                                     "the built-in preset: 0.015)")
    fine_cavity_inset: float = _s(0.0, lo=0.0, hi=0.05, group="export",
                                  help="the fine stage's mesh of a container the run opened (the hollow setting: "
                                       "a mug, a bowl, a bucket): the walls and bottom drawn this much thinner "
                                       "from the inside, the outside unchanged (a cup's wall comes out about "
                                       "twice as thick as it should, the excess inside)")
    fine_board_inset: float = _s(0.0, lo=0.0, hi=0.05, group="export",
                                 help="the fine stage's mesh of a built-in prior's prop made of upright boards "
                                      "alone (a fence, a shield): its thin parts drawn this much thinner on each "
                                      "side, instead of fine_thin_inset (0: as every other prop). A board is seen "
                                      "edge-on from two sides only and comes out about twice as thick")
    seal_radius: float = _s(0.05, lo=0.0, hi=0.2, group="export",
                            help="the exported mesh: hollows inside the object that open to the air only through "
                                 "pores narrower than twice this (scene units; objects are about 1 across) filled, "
                                 "so the mesh has no hidden inner walls; wider openings (a cup's mouth, a handle's "
                                 "loop) are kept (0: off)")
    fine_flat_base: bool = _s(False, group="export",
                              help="the fine stage's mesh: a nearly flat underside (which cameras above the object's "
                                   "base never see, and which a field draws dented, with a skirt under it) made flat "
                                   "at the height where its rim ends; objects whose bottom is not their lowest and "
                                   "widest part (legs under a seat, a ring, a round bottom) are left as they are (on in the built-in prior's preset)")
    fine_base_read: str = _s("rim", choices=BASE_READS, group="export",
                             help="where fine_flat_base reads the base's height: rim = the median bottom of the "
                                  "footprint's rim (where sloped sides end); bottoms = the same for sloped sides, and "
                                  "for upright ones (a cube, a crate), whose rounded bottom edge raises the rim, the "
                                  "0.7 quantile of every footprint column's bottom")
    face_budget: int = _s(50000, lo=100, hi=1000000, group="export", help="max faces after simplification")
    texture_size: int = _s(1024, lo=64, hi=4096, group="export", help="albedo texture side, pixels")
    vertex_colors: bool = _s(False, group="export", help="vertex colours only, no UV texture")
    keep_components: int = _s(1, lo=1, hi=100, group="export", help="keep the N largest mesh pieces")

    # ------------------------------------------------------------------------------------------
    @classmethod
    def spec(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: dict, *, require_prompt: bool = True) -> "GenerationSettings":
        """Build validated settings from a JSON-like dict; unknown keys and bad values raise SettingError."""
        if not isinstance(data, dict):
            raise SettingError("settings", "must be an object")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in names:
                raise SettingError(str(key)[:64], "unknown setting")
        kwargs = {f.name: _coerce(f, data[f.name]) for f in dataclasses.fields(cls) if f.name in data}
        settings = cls(**kwargs)
        settings.validate(require_prompt=require_prompt)
        return settings

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "GenerationSettings":
        new = dataclasses.replace(self, **{k: _coerce(_field(k), v) for k, v in changes.items()})
        new.validate(require_prompt=False)
        return new

    def validate(self, *, require_prompt: bool = True) -> None:
        if self.stages not in STAGES:   # before the generic check: its "one of a, b,c" reads badly
            raise SettingError("stages", f"must be {' or '.join(repr(v) for v in STAGES)}, got {str(self.stages)[:40]!r}")
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name))
        if require_prompt and not self.prompt.strip() and not self.is_image_job:
            raise SettingError("prompt", "must not be empty")
        if self.has_shape_model and self.is_image_job and not (self.joint_text_guidance or self.prompt_from_picture):
            raise SettingError("shape_model", "an image job uses it for its text prior only (joint mode: give a "
                               "prompt and text_guidance_weight > 0): leave it empty")
        if self.has_shape_model and not self.is_image_job and self.guidance_type != "stable-diffusion":
            raise SettingError("shape_model", f"works with guidance_type 'stable-diffusion' only (got "
                               f"{self.guidance_type!r}): leave it empty")
        if self.has_shape_model and self.shading_prompt:
            raise SettingError("shading_prompt", "must be off with a shape_model (the shape prior's captions "
                               "do not name the shading)")
        if self.avoid_scale > 0 and not self.avoid_prompt.strip():
            raise SettingError("avoid_prompt", f"must not be empty when avoid_scale > 0 (got {self.avoid_scale})")
        if self.avoid_scale > 0 and self.is_image_job:
            raise SettingError("avoid_scale", "works with text guidance (guidance_type 'stable-diffusion') only: "
                               "set it to 0")
        if 0.0 < self.shape_guidance_scale < 1.0:
            raise SettingError("shape_guidance_scale", f"must be 0 (= guidance_scale) or in [1, 200], got "
                               f"{self.shape_guidance_scale}")
        if self.sds_noise_weight != 1.0 and self.is_image_job:
            raise SettingError("sds_noise_weight", "works with text guidance (guidance_type 'stable-diffusion') "
                               f"only: set it to 1 (got {self.sds_noise_weight})")
        if self.shape_init == "prior-hull" and self.is_image_job:
            raise SettingError("shape_init", "'prior-hull' samples a text prior; an image job starts from its picture's "
                               "prior: set it to 'blob'")
        if 0.0 < self.reference_fill < 0.2:
            raise SettingError("reference_fill", f"must be 0 (keep the framing) or in [0.2, 1], got {self.reference_fill}")
        for lo, hi in (("elevation_min", "elevation_max"), ("azimuth_min", "azimuth_max"),
                       ("distance_min", "distance_max"), ("fovy_min", "fovy_max"), ("t_min", "t_max")):
            if getattr(self, lo) > getattr(self, hi):
                raise SettingError(lo, f"must be <= {hi} ({getattr(self, lo)} > {getattr(self, hi)})")
        if self.albedo_elevation_min > self.elevation_max:
            raise SettingError("albedo_elevation_min",
                               f"must be <= elevation_max ({self.albedo_elevation_min} > {self.elevation_max})")
        if self.t_anneal and self.t_max_end < self.t_min:
            raise SettingError("t_max_end", f"must be >= t_min ({self.t_min})")
        if self.hash_max_resolution < self.hash_base_resolution:
            raise SettingError("hash_max_resolution", "must be >= hash_base_resolution")
        stages = parse_resolution_schedule(self.resolution_schedule)
        if stages[-1].start_step >= self.steps and len(stages) > 1:
            raise SettingError("resolution_schedule",
                               f"stage at step {stages[-1].start_step} starts after the last step ({self.steps})")

    @property
    def is_image_job(self) -> bool:
        """Guided by a reference image (the job carries one); the prompt is optional."""
        return self.guidance_type in IMAGE_GUIDANCE_TYPES

    @property
    def has_shape_model(self) -> bool:
        """A second prior guides the shape (``shape_model``; ``backend/engine/guidance/shape_colour.py``)."""
        return bool(self.shape_model.strip())

    @property
    def joint_text_guidance(self) -> bool:
        """Magic123's joint mode: an image job with a prompt and a text-prior weight."""
        return self.is_image_job and bool(self.prompt.strip()) and self.text_guidance_weight > 0

    @property
    def prompt_from_picture(self) -> bool:
        """An image job whose prompt the engine reads from the picture (``backend/prior/recognise.py``):
        no prompt given, ``auto_prompt`` on, and the built-in text prior, whose vocabulary it picks from."""
        return (self.is_image_job and not self.prompt.strip() and self.auto_prompt and self.text_model == "builtin"
                and self.text_guidance_weight > 0)

    @property
    def resolution_stages(self) -> list[Stage]:
        return parse_resolution_schedule(self.resolution_schedule)

    @property
    def has_fine_stage(self) -> bool:
        return self.stages == "coarse,fine"

    @property
    def total_steps(self) -> int:
        """Steps of the whole run: the coarse stage's, plus the fine stage's when there is one."""
        return self.steps + (self.fine_steps if self.has_fine_stage else 0)

    def run_steps(self, *, refine: bool = False) -> int:
        """Steps a job runs: a refine job (from a mesh or a parent job) is the fine stage alone."""
        return self.fine_steps if refine else self.total_steps

    def stage_at(self, step: int) -> Stage:
        current = None
        for stage in self.resolution_stages:
            if step >= stage.start_step:
                current = stage
        return current


def _field(name: str) -> dataclasses.Field:
    for f in dataclasses.fields(GenerationSettings):
        if f.name == name:
            return f
    raise SettingError(name, "unknown setting")


def _base_type(f: dataclasses.Field) -> type:
    ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    for t in ("bool", "int", "float", "str"):
        if ann.startswith(t):
            return {"bool": bool, "int": int, "float": float, "str": str}[t]
    raise TypeError(f"unsupported setting type {ann}")


def choices(f: dataclasses.Field) -> tuple:
    """The allowed values of a choice setting: its declared choices plus any added by ``add_choice``."""
    return tuple(f.metadata["choices"] or ()) + tuple(_EXTRA_CHOICES.get(f.name, ()))


def add_choice(name: str, value: str) -> None:
    """Accept ``value`` for the setting ``name`` (``guidance_type`` or ``geometry_type``) in this process.

    The engine's registry calls this when a type is registered at run time (a test, a plugin): such a
    type is selectable wherever this process validates settings, not in Blender or another process."""
    if name not in _EXTRA_CHOICES:
        raise SettingError(name, f"only {', '.join(_EXTRA_CHOICES)} take new values")
    if value not in choices(_field(name)):
        _EXTRA_CHOICES[name].append(value)


def remove_choice(name: str, value: str) -> None:
    """Undo ``add_choice`` (declared choices stay)."""
    if value in _EXTRA_CHOICES.get(name, ()):
        _EXTRA_CHOICES[name].remove(value)


def _range_text(f: dataclasses.Field) -> str:
    m = f.metadata
    if m["choices"]:
        return "one of " + ", ".join(map(str, choices(f)))
    t = _base_type(f)
    if m["lo"] is not None:
        text = f"{'an integer' if t is int else 'a number'} in [{_fmt(m['lo'])}, {_fmt(m['hi'])}]"
    else:
        text = {bool: "true or false", str: "text", int: "an integer", float: "a number"}[t]
    if m["optional"]:
        text += " or auto"
    return text


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Accept what JSON, argparse or bpy give (ints for floats, 'true' for bools); reject the rest."""
    t = _base_type(f)
    if value is None or (f.metadata["optional"] and isinstance(value, str)
                         and value.strip().lower() in ("auto", "none", "")):
        if f.metadata["optional"]:
            return None
        raise SettingError(f.name, f"must be {_range_text(f)}")
    if t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.strip().lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif t is int:
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            return value
        elif isinstance(value, float) and value.is_integer():
            return int(value)
        elif isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
    elif t is str:
        if isinstance(value, str):
            return value
    raise SettingError(f.name, f"must be {_range_text(f)}, got {str(value)[:40]!r}")


def _check(f: dataclasses.Field, value: Any) -> None:
    m = f.metadata
    if value is None:
        if m["optional"]:
            return
        raise SettingError(f.name, f"must be {_range_text(f)}")
    t = _base_type(f)
    if t is float and (isinstance(value, float) and not math.isfinite(value)):
        raise SettingError(f.name, f"must be {_range_text(f)}, got {value}")
    if m["lo"] is not None and not (m["lo"] <= value <= m["hi"]):
        raise SettingError(f.name, f"must be {_range_text(f)}, got {_fmt(value) if t is not str else value}")
    if m["choices"] and value not in choices(f):
        raise SettingError(f.name, f"must be {_range_text(f)}, got {value!r}")
    if m["max_len"] is not None and len(value) > m["max_len"]:
        raise SettingError(f.name, f"must be at most {m['max_len']} characters, got {len(value)}")
    if t is str and "\x00" in value:
        raise SettingError(f.name, "must not contain NUL characters")


def setting_help(f: dataclasses.Field) -> str:
    """One-line help with default and allowed range, for CLI flags and tooltips."""
    default = f.default if f.default is not None else "auto"
    text = f.metadata["help"]
    return f"{text + '; ' if text else ''}{_range_text(f)} (default {default})"


def groups() -> dict[str, list[dataclasses.Field]]:
    out: dict[str, list[dataclasses.Field]] = {}
    for f in dataclasses.fields(GenerationSettings):
        out.setdefault(f.metadata["group"], []).append(f)
    return out


def names() -> Iterable[str]:
    return [f.name for f in dataclasses.fields(GenerationSettings)]


LIVE_PROXIES_MIN = 5   # a run with a live proxy shows at least this many: the first lands by 1/5 of the steps


def live_proxy_interval(steps: int, preview_interval: int) -> int:
    """``proxy_mesh_interval`` for a client that wants a live proxy mesh and did not set one.

    Every 5th preview (a proxy costs a density grid and marching cubes), but at least
    ``LIVE_PROXIES_MIN`` proxies in the run, at regular steps: with the built-in prior's 500 steps
    and a preview every 100, "every 5th preview" was the whole budget and the proxy only showed up
    together with the result."""
    every_fifth_preview = 5 * preview_interval if preview_interval > 0 else steps
    return max(1, min(every_fifth_preview, steps // LIVE_PROXIES_MIN))
