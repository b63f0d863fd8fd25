"""Named groups of settings: quality presets for the add-on and the CLI's --preset.

Kept next to the settings schema so the CLI (--preset) and the Blender panel (quality preset)
mean the same thing by the same name. Values are validated by GenerationSettings like any input.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # A few minutes on a GPU: a quick look at the shape.
    "draft": {"steps": 2000, "resolution_schedule": "64x1", "albedo_warmup_steps": 400,
              "mesh_resolution": 128, "texture_size": 512},
    # threestudio's dreamfusion-sd budget.
    "standard": {"steps": 10000, "resolution_schedule": "64x1", "albedo_warmup_steps": 2000},
    # Finer renders late in the run (the 512^2-class memory regime is what the GPU issue targets).
    "high": {"steps": 10000, "resolution_schedule": "64x1,128x1@5000,256x1@8000", "albedo_warmup_steps": 2000,
             "mesh_resolution": 384, "texture_size": 2048},
    # The built-in prior (model "builtin"): the fixed camera it was trained with (its framing tells
    # SDS the object's size and position), 48 px renders, a small grid, a second prior for the shape;
    # a minute or two on a CPU.
    # backend/prior/README.md explains each value; the quality benchmark runs with exactly these.
    "builtin": {"distance_min": 1.8, "distance_max": 1.8, "fovy_min": 50.0, "fovy_max": 50.0,
                "camera_perturb": 0.0, "center_perturb": 0.0, "steps": 500,
                # Four views a step on every device (session 50; a GPU since session 33, below): with colour prior
                # v12 the CPU's one view a step drew the barrel's hoops as faint dark bands, four draw them grey on
                # wood as the GPU does (results/quality/runs/2026-12-04-session50-plain-barrel-cpu-views.png), and
                # the CPU makes what the GPU run of record measured. Plain command on this 2-core CPU, wall: barrel
                # 54 -> 125 s (two views: 72 s, the hoops dark), mug 111 s (with its handle), chair 93 s; `make demo`'s
                # red cube 60 -> 165-169 s (a solid fills more of the volume: more samples a ray), IoU 0.77 -> 0.86:
                # so make demo renders two ("cpu-demo" below).
                "resolution_schedule": "48x4",
                "samples_per_ray": 64, "hash_levels": 8, "hash_log2_size": 16, "hash_max_resolution": 256,
                "shading": "dreamfusion", "albedo_warmup_steps": 100, "background": "random",
                # The prior's captions name the camera's 45-degree azimuth sector: it pins the yaw
                # of four-fold symmetric shapes, which front/side/back cannot.
                "view_naming": "compass",
                # t_max annealed 0.98 -> 0.5. Guidance: the colour prior (v12 since session 50) at 7.5, the shape
                # prior (shape_model below) at 3. At 10 for both, colours saturated (red -> (1, 0, 0)) and cubes
                # and pyramids came out rounded and oversized (results/quality/README.md); at 3 for both, v12
                # narrowed the mug and the bowl through the coarse stage (the mug's radius 0.292 -> 0.265, its
                # truth 0.273; at 7.5: 0.279). One H200, all 83 prompts, seeds 0-1 (seed 2: the 27 props and 28
                # solids), coarse + fine, 3 / 3 -> 7.5 / 3: props 0.704 -> 0.713 (seed 0), min IoU 0.358 (the mug)
                # -> 0.498 (the mug 0.59, with its handle), solids 0.903 -> 0.898, albedo 0.031 -> 0.042 (v6, shipped
                # before: props 0.703-0.714, min 0.405-0.479, albedo 0.047; results/quality/README.md, session 50).
                "guidance_scale": 7.5, "shape_guidance_scale": 3.0, "t_anneal": True, "t_max_end": 0.5,
                # Learning rates decay to 30% by the last step: at a constant rate a late drift of the
                # colour MLP turned some red cubes near-black in the last 100 steps (CPU runs).
                "lr_final_ratio": 0.3, "mesh_resolution": 128, "texture_size": 512, "face_budget": 20000,
                "preview_interval": 100, "preview_size": 64, "checkpoint_interval": 0,
                # Coarse then fine (session 14, results/quality/runs/2026-11-29-session14-fine-thin-props-cpu.md,
                # 17 prompts, CPU, seed 0): the coarse surface handed to the SDF (smoothed by
                # fine.COARSE_SMOOTHING_CELLS) and 5 SDS steps gain on every prompt, none lost: mean IoU
                # 0.416 -> 0.431, normal consistency 0.767 -> 0.800, Chamfer and albedo unchanged, +4 s
                # against a 48 s coarse stage. More steps thin parts away (from ~10 steps the lamp
                # post's pole goes; at the former 75 it is gone), fewer keep less (1 step: IoU 0.423).
                # Renders 32 px (the prior sees 32 px), lr 0.003, a strong normal term (200) and the
                # surface drawn 1.5 beta inside its zero level (fine_render_offset): tuned in
                # 2026-11-29-fine-tuning-cpu.md and 2026-11-29-fine-hold-cpu.md.
                "stages": "coarse,fine",
                "fine_steps": 5, "fine_resolution": 32, "fine_lr": 0.003, "fine_smoothness_weight": 200.0,
                # The sampler its quality runs of record were made with. On an H200 the budget sampler
                # (sampling=auto's CUDA choice) gave seed 0's red cube and stone house dark (albedo
                # 0.27 / 0.31 against 0.03 / 0.16, results/quality/README.md, session 12); on the
                # CPU both samplers give the same red cube. Until a GPU A/B over seeds says it is
                # chance, the prior keeps the sampler it was measured with (at its 32 px renders the
                # budget sampler's speed-up is small anyway).
                "sampling": "dynamic",
                # A second prior for the shape (session 23): prior v9, trained on the lit and textureless
                # renders only, guides those while the prior above guides the albedo ones. GPU, every
                # benchmark prompt, coarse + fine, seed 1: props' mean IoU 0.551 -> 0.588, props below
                # 0.40 12 -> 8, facing 4 -> 7 of 11, normal consistency 0.917 -> 0.922, Chamfer 0.0243
                # -> 0.0220, solids 0.874 -> 0.877, albedo error 0.045 -> 0.050 (v8, its larger
                # sibling, the same on seeds 0-2: results/quality/runs/2026-11-30-session23-*).
                # Its renders 48 px (the coarse stage; the prior's images are 32 px): with the shape prior,
                # mean IoU +0.004 / props +0.003 / facing 7 -> 8 of 11 against 32 px renders (v8 on seeds
                # 0-2: +0.005 +-0.002), for 9% more CPU time (the plain barrel command 90 -> 98 s).
                "shape_model": "builtin-shape",
                # The fine mesh's thin parts drawn thinner (session 24): the 48 px renders draw a leg,
                # blade or board about a render pixel thick, 2-3x its volume. GPU, all 83 prompts x 3
                # seeds (uncapped inset): props 0.594 -> 0.618 mean IoU, solids unchanged; props, seeds
                # 0 and 2, with no part thinner than a grid cell: 0.601 -> 0.639, 0.586 -> 0.603, facing
                # 12 -> 16 of 21, Chamfer 0.0255 -> 0.0239 (a stool's legs there still broke off its seat;
                # since rejoined: CPU, the same stool 0.43 -> 0.50, chair 0.42 -> 0.49, one piece each;
                # and tips left alone: CPU white pyramid 0.72 -> 0.63 without that rule, 0.76 with it).
                # results/quality/README.md, session 24.
                "fine_thin_inset": 0.015,
                # The hollow props' walls thinned from the inside (session 47, export.mesh.cavity_inset): they came
                # out about twice the truth's 0.03-0.04, the excess inside. GPU preset, v9d, seeds 0 / 1 / 2 (the same
                # runs exported again), IoU 0 -> 0.02 -> 0.03: bowl 0.389 / 0.424 / 0.405 -> 0.430 / 0.482 / 0.456
                # -> 0.443 / 0.503 / 0.474, mug 0.393 / 0.415 / 0.447 -> 0.430 / 0.427 / 0.496 -> 0.439 / 0.424 /
                # 0.508; volume 1.0-1.1 -> 0.76-0.81 -> 0.68-0.72 of the truth's: 0.02, the closer volume
                # (results/quality/README.md, session 47; measured before walls kept two grid samples all round,
                # which on the CPU scores the same or higher).
                "fine_cavity_inset": 0.02,
                # The props made of upright boards alone (Category.boards: the fence, the shield) thinner still (session
                # 48): a board's thickness is seen only from the two azimuths that look along it, where it is a render
                # pixel or two wide, so it comes out 2x its volume (the fence 2.1-2.2x, the shield 1.7-1.8x), while
                # a rod (a leg, a pole) shows its width to every camera and comes out right (a stool 0.9x). The
                # thicker inset for every prop lost the rods more than the boards gained (stool 0.69 -> 0.57, lamp
                # post -0.05; seed 0's props 0.700 -> 0.695). GPU preset, v9d, seeds 0 / 1 / 2, the same runs
                # exported again at 0.015 / 0.025 / 0.03: fence 0.385 / 0.396 / 0.395 -> 0.443 / 0.508 / 0.504 ->
                # 0.480 / 0.496 / 0.495, shield 0.491 / 0.469 / 0.471 -> 0.528 / 0.504 / 0.509 -> 0.543 / 0.520 /
                # 0.521; at 0.04 the fence's pickets come apart and their necks are put back whole (0.30-0.41):
                # 0.025 keeps clear of that (results/quality/README.md, session 48).
                "fine_board_inset": 0.025,
                # The underside made flat where a field drew it dented with a skirt under it (session 58; the rule
                # of session 57, export.mesh.flat_base): no camera sees an underside, SDS leaves it as drawn. CPU, the
                # preset's fine stage from saved coarse stages, 19 prompts of seed 0 and 7 of seeds 1-2 (IoU / normal
                # consistency): red pyramid 0.791 -> 0.838 / 0.945 -> 0.960 (seed 1: 0.819 -> 0.886 / 0.948 ->
                # 0.964), red cone 0.880 -> 0.896 / 0.948 -> 0.966, purple cone 0.870 -> 0.900 / 0.923 -> 0.960,
                # red cylinder 0.958 -> 0.977 / 0.976 -> 0.990, crate 0.846 -> 0.850 / 0.907 -> 0.893; the other 20
                # the same to 0.001 (cube, sphere, torus, capsule, barrel, chair, fence, lamp post, stool, table,
                # mug, rock, anvil, house; a green cone of seed 2), mean of the 19: IoU 0.804 -> 0.810, normal
                # consistency 0.919 -> 0.923, Chamfer 0.0157 -> 0.0149. Image jobs inherit it: on the image
                # benchmark's 10 objects (seed 0) it changed nothing. results/quality/README.md, session 58. GPU (one H100,
                # session 59, every benchmark prompt, seed 0, the same fields exported with it off -> on): solids
                # 0.930 -> 0.940, normal consistency 0.9436 -> 0.9480, Chamfer 0.0125 -> 0.0118.
                "fine_flat_base": True,
                # Not in the preset: reading the base under upright sides from the column bottoms (``fine_base_read``
                # "bottoms", session 61). GPU (one H100, 83 prompts x 3 seeds, the same fields exported both ways, rim
                # -> bottoms): the 24 cube runs IoU +0.011 on average (0.913 / 0.910 / 0.913 -> 0.928 / 0.912 / 0.930),
                # normal consistency +0.010, crate and chest better; but the 10 tori it cut lose IoU 0.036 and normal
                # consistency 0.031 each, the cylinders 0.008 IoU: mean normal consistency 0.9464 / 0.9501 / 0.9460 ->
                # 0.9457 / 0.9496 / 0.9468 (results/quality/README.md, session 61). Stays "rim" until the tori are
                # kept out of it.
                # The coarse iso-level matched to the field's own renders for bulky objects (session 58; the rule of
                # sessions 55-56, backend/engine/silhouette_level.py): the automatic level draws a soft cube large and
                # a soft sphere small. An object whose thickest part is thin (legs, boards, walls) keeps the automatic
                # level (body_weight), and a bulky one's fine stage draws its surface 1.0 beta inside instead of 1.5
                # (fine_render_offset there). CPU, the preset's fine stage from saved coarse stages, seed 0, with the
                # flat base -> with both (IoU / volume): cube 0.857 / 1.17 -> 0.899 / 1.01, pyramid 0.838 / 1.19 ->
                # 0.949 / 1.02, sphere 0.854 / 0.85 -> 0.985 / 0.99, house 0.813 -> 0.872, crate 0.850 -> 0.892,
                # anvil 0.799 -> 0.838; the chair, fence, lamp post, stool, table and mug as they were; mean of 19
                # prompts 0.810 -> 0.835 (seed 1 in results/quality/README.md, session 58). Image jobs keep the
                # automatic level (below): there the matched level shrank the cones and tori (session 56). GPU, both
                # (one H100, session 59, 83 prompts, seeds 0 / 1, against the session-50 run of record): solids 0.898
                # / 0.905 -> 0.940 / 0.946, props 0.713 / 0.718 -> 0.734 / 0.734, cube volume 1.14 / 1.15 -> 1.02 /
                # 1.06, Chamfer 0.0164 / 0.0161 -> 0.0118 / 0.0116, normal consistency 0.940 / 0.941 -> 0.948 / 0.950.
                "mesh_level": "silhouette",
                # The VAE encoder eager on a GPU (session 29, one H200, results/speed/NOTES.md): compiled, a step
                # was no faster (medians 21.2 / 23.7 ms compiled, 19.7 / 21.9 eager, two runs: the prior's step is
                # host-bound, 2.6 ms of GPU work, and the compiled regions cost ~5 ms of host time each).
                # The compile pays at SD's 512 px, not at 64.
                "compile_vae": False},
}

# Image-to-3D with the project's view prior (guidance_type "zero123", model "builtin"): the text prior's
# camera, field and render budget (the view prior was trained on renders made with that camera), with
# threestudio's stable-zero123 choices where they apply: the reference seen from 5 degrees up and
# az 0 at the training camera's distance and field of view (auto), the object filling 0.8 of the
# picture, reference losses rgb 1000 / mask 50 against SDS 1 (its 0.1 SDS weight is for a 256 px
# model's larger latents). The 64 px reference is sampled 1024 pixels a step (as many rays as the 32 px
# SDS render): rendering all of it every step made a CPU step 3-4x slower. A few minutes on a CPU.
# (Without the shape prior: an image job's text prior is optional, and shape_model needs one.)
PRESETS["builtin-image"] = {**{k: v for k, v in PRESETS["builtin"].items()
                               if k not in ("guidance_scale", "shape_guidance_scale", "shape_model", "mesh_level")},
                            # (measured with the 32 px renders the text prior had before session 23)
                            "resolution_schedule": "32x1",
                            "steps": 400, "reference_resolution": 64, "reference_rays": 1024,
                            # Joint mode leans on the text prior 10x more than Magic123's 0.025 (made for
                            # SD against a 1.5 B-parameter zero123): CPU, seed 0, best-yaw IoU image-only
                            # -> 0.025 -> 0.25: cube 0.62 -> 0.66 -> 0.76, barrel 0.46 -> 0.53 -> 0.88;
                            # image-only -> 0.25: mug 0.21 -> 0.26, chair 0.19 -> 0.31, crate 0.34 -> 0.67
                            # (session 19, `backend/view_prior/README.md`).
                            "text_guidance_weight": 0.25,
                            # Coarse then fine, as the text preset (session 25): the fine stage keeps the
                            # reference view's losses, and the fine mesh's thin parts are drawn thinner
                            # (fine_thin_inset). CPU, seed 0, the image benchmark's 10 objects, best-yaw
                            # IoU coarse -> coarse + fine: mean 0.671 -> 0.687, 9 of 10 higher or equal
                            # (chair 0.32 -> 0.37, crate 0.73 -> 0.77, cube 0.76 -> 0.79), mug 0.265 -> 0.259,
                            # +1-7 s a job (results/image/README.md, session 25; no GPU run yet).
                            "stages": "coarse,fine",
                            # The text preset's cavity inset (session 47, measured on text jobs) is not an image
                            # job's: it reached them unmeasured through "builtin", and the mug, the one benchmark
                            # object it touches, came out lower on all six GPU runs (session 37 -> 52: picture 0.552 /
                            # 0.547 / 0.501 -> 0.531 / 0.510 / 0.450, joint 0.534 / 0.527 / 0.512 -> 0.385 / 0.521 /
                            # 0.467, volume down, holes in its wall). CPU, seeds 0 / 1 / 2, the mug alone, with ->
                            # without: 0.340 / 0.180 / 0.338 -> 0.413 / 0.210 / 0.371 (results/image/README.md, session 52).
                            "fine_cavity_inset": 0.0}

# The built-in priors on a GPU (session 33): four views a step where the CPU then drew one. Four renders a step
# cost the CPU 2x its time (the plain barrel command then 128 -> 249 s, over the 3-minute promise) and, at equal
# CPU work, gained nothing (results/quality/README.md, session 32); a GPU renders them side by side. Since session
# 50 the text preset renders four on the CPU too (125 s for the barrel with today's faster step: "builtin" above);
# image jobs keep one view a step on the CPU.
# One H200, the quality benchmark's 83 prompts x 3 seeds, coarse + fine, 48x1 -> 48x4: mean IoU
# 0.796-0.803 -> 0.817-0.819 on every seed, props 0.625-0.639 -> 0.656-0.662, facing 8-9 -> 10 of 11,
# normal consistency 0.921-0.928 -> 0.934-0.938, Chamfer 0.0195-0.0208 -> 0.0173-0.0180 (results/quality/,
# the run of record since session 33). Image jobs, 32x1 -> 32x4, the image benchmark's 10 objects, seed 0:
# mean IoU 0.682 -> 0.709 (picture), 0.680 -> 0.717 (joint), Chamfer 0.029 -> 0.025 (results/image/README.md).
# Session 37: image jobs at 48 px, 32x4 -> 48x4, the 10 objects x 3 seeds x picture / joint on one H200: min IoU
# (the chair) higher in all six runs (0.401-0.418 -> 0.409-0.429), mean 0.722 -> 0.728 (4 of 6 higher), Chamfer
# 0.025 -> 0.024, 56 -> 60 s an object with 12 jobs sharing the GPU (results/image/README.md, session 37).
PRESETS["builtin-gpu"] = PRESETS["builtin"]   # the same since session 50 (four views on the CPU too); the name kept
# Session 54: 600 steps and the shape prior at 10 on the GPU, with the hollows hidden inside an object sealed at export
# (``seal_radius``, every preset). One H200, the image benchmark's 10 objects x 3 seeds x picture / joint, 12 jobs sharing
# it, against the run of record before (400 steps, no shape prior, no seal): mean IoU picture 0.732 / 0.713 / 0.726 ->
# 0.764 / 0.744 / 0.733, joint 0.740 / 0.715 / 0.723 -> 0.763 / 0.738 / 0.740; min (the chair) 0.416-0.431 -> 0.438 /
# 0.519 / 0.520 and 0.439 / 0.515 / 0.515; albedo error 0.085-0.089 -> 0.093-0.099; 55-117 s an object with 12 sharing
# (results/image/README.md, session 54). The shape prior (session 52: the chair +0.05, the barrel +0.09) drew the cube
# as a shell over hollows opening through pits (0.75 -> 0.58-0.64): the seal gives most of it back (0.65-0.78).
# The shape prior guides the built-in text prior's lit renders, so it is dropped (``layering``) where that prior is not
# run: another text_model, or no prompt with auto_prompt off.
PRESETS["builtin-image-gpu"] = {**PRESETS["builtin-image"], "resolution_schedule": "48x4", "steps": 600,
                                "shape_model": "builtin-shape", "shape_guidance_scale": 10.0}

# What `make demo` runs: the text preset with two views a step. With four (the preset's) the demo's red cube took
# 165-169 s of its 3 minutes on this 2-core CPU (a solid fills more of the volume than a barrel: more samples a ray),
# 11 s from the limit; with two, 110-113 s, IoU 0.857 / 0.854 / 0.842 against 0.852 / 0.866 / 0.860 (seeds 0-2),
# albedo error 0.033-0.036 against 0.024-0.027 (results/demo/report.md, session 51). The plain command keeps four views.
# Session 58, with the text preset's render-matched level and flat base: IoU 0.919 / 0.923 / 0.911, 88-100 s.
PRESETS["cpu-demo"] = {**PRESETS["builtin"], "resolution_schedule": "48x2"}

# Offered in the Blender panel (draft/standard/high for Stable Diffusion on a GPU).
QUALITY_PRESETS = ("draft", "standard", "high", "builtin")


def preset_settings(name: str) -> dict:
    if name not in PRESETS:
        raise KeyError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return dict(PRESETS[name])
