"""The built-in prior: grammar, analytic shapes, training renders, architecture, shipped weights."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.engine.cameras import VIEW_SUFFIXES
from backend.prior import CAMERA, PRESET, WEIGHTS_DIR, available, recommended_settings, shapes
from backend.prior.catalogue import CATEGORIES, PROP_NAMES, ground_truth
from backend.prior.grammar import (COLOURS, SHAPES, VIEWS, all_prompts, benchmark_prompts, caption, parse_prompt,
                                   vocabulary)
from backend.prior.props import BY_NAME as PROPS

needs_weights = pytest.mark.skipif(not available(), reason="backend/prior/weights is not installed")


# -- grammar ----------------------------------------------------------------------------------------
def test_grammar_has_the_old_solids_and_at_least_24_props():
    assert len(SHAPES) >= 7 and len(COLOURS) >= 8
    old = [caption(s, c) for s in SHAPES for c in COLOURS]
    assert all_prompts()[:len(old)] == old                   # every old prompt still works
    assert len(PROP_NAMES) >= 24
    # at least a third of the props are asymmetric front/back or left/right
    assert sum(PROPS[n].facing for n in PROP_NAMES) >= len(PROP_NAMES) / 3
    assert benchmark_prompts() == old + [caption(n, PROPS[n].looks[0]) for n in PROP_NAMES]
    for rgb in COLOURS.values():
        assert all(0.0 <= c <= 1.0 for c in rgb)


@pytest.mark.parametrize("shape,colour,view,text", [
    ("cube", "red", None, "a red cube"),
    ("torus", "orange", None, "an orange torus"),
    ("cone", "blue", "front left", "a blue cone, front left view"),
    ("cube", "red", "back right", "a red cube, back right view"),
    ("sphere", None, "overhead", "a sphere, overhead view"),
    ("barrel", "wooden", None, "a wooden barrel"),
    ("treasure chest", None, "front", "a treasure chest, front view"),
    ("anvil", "metal", "back left", "a metal anvil, back left view"),
    ("pine tree", None, None, "a pine tree"),
    (None, None, None, ""),
])
def test_captions_follow_the_grammar(shape, colour, view, text):
    assert caption(shape, colour, view) == text
    if shape:
        assert parse_prompt(text) == (shape, colour)


def test_parse_prompt_rejects_text_outside_the_grammar():
    for bad in ("a red dragon", "a magenta cube", "red cube", "a red cube on a table", "a stone barrel",
                "a wooden pine tree", "a barrel chest"):
        with pytest.raises(ValueError):
            parse_prompt(bad)


def test_every_caption_fits_the_tokenizer_without_truncation(tmp_path):
    """Grammar words are (mostly) single tokens and even the longest caption leaves padding.

    ``build_clip_tokenizer`` gives a word one token only when its merge rules do not collide with
    another word's (e.g. "re" of "red" splits "green"); the shipped tokenizer is saved with the
    weights, so training and generation always agree, and nothing is truncated."""
    from transformers import CLIPTokenizer

    from backend.prior.model import MAX_TOKENS, build_tokenizer, tokenize

    for tok in [build_tokenizer(tmp_path / "tok")] + (
            [CLIPTokenizer.from_pretrained(str(WEIGHTS_DIR), subfolder="tokenizer")] if available() else []):
        assert tok.model_max_length == MAX_TOKENS
        singles = [w for w in vocabulary() if len(tok.tokenize(w)) == 1]
        assert len(singles) >= 0.8 * len(vocabulary())
        captions = [caption(k.name, w, v) for k in CATEGORIES for w in {*k.looks, None} for v in [*VIEWS, None]]
        # The v3 tokenizer's merges split a few words ("front", "stone", "tower", "metal", "anvil") into
        # pieces, so 5 of the ~2,000 captions ("a stone tower, front left view") lose their final
        # "view" token to truncation: the same in training and generation, and every caption stays
        # distinct (below). No caption loses more than that one token.
        assert max(len(tok(c).input_ids) for c in captions) <= MAX_TOKENS + 1
        ids = tokenize(tok, captions)
        assert ids.shape == (len(captions), MAX_TOKENS) and len({tuple(r) for r in ids.tolist()}) == len(captions)


# -- shapes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_shape_volume_and_extent_match_closed_form(shape):
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(200_000, 3, generator=gen) * 2 - 1
    inside = shapes.sdf(shape, p) < 0
    assert inside.float().mean().item() * 8 == pytest.approx(shapes.volume(shape), rel=0.05)
    assert p[inside].norm(dim=1).max().item() <= shapes.bounding_radius(shape) + 1e-6
    # Canonical placement: centred in x and y.
    assert p[inside][:, :2].mean(0).abs().max().item() < 0.01


@pytest.mark.parametrize("shape", ["sphere", "cube", "cone", "cylinder", "torus", "capsule"])
def test_exact_sdfs_have_unit_gradient_near_the_surface(shape):
    p = (torch.rand(5000, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1).requires_grad_(True)
    d = shapes.sdf(shape, p)
    (g,) = torch.autograd.grad(d.sum(), p)
    near = d.detach().abs() < 0.1
    assert g[near].norm(dim=1).sub(1).abs().median().item() < 0.05


@pytest.mark.parametrize("name", PROP_NAMES)
def test_each_prop_sdf_matches_its_stated_size_and_placement(name):
    """The canonical prop's solid fills exactly its stated bounding box (half extents, within a
    voxel or two), is centred in x and y within its box, sits inside the tracing sphere, and its
    albedo is a valid colour everywhere on the surface."""
    from backend.prior.render import SCENE_RADIUS

    gt = ground_truth(caption(name, PROPS[name].looks[0]))
    n = 96
    axis = (torch.arange(n) + 0.5) / n * 2 - 1
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3) * 0.8
    inside = gt.sdf(grid) < 0
    pts = grid[inside]
    assert len(pts) > 500
    lo, hi = pts.min(0).values, pts.max(0).values
    half = (hi - lo) / 2 + 0.8 / n                           # half a voxel at each end
    assert torch.allclose(half, torch.tensor(PROPS[name].extent), atol=0.03), (half.tolist(), PROPS[name].extent)
    assert pts.norm(dim=1).max() < SCENE_RADIUS
    assert ((hi + lo) / 2)[2].abs() < 0.2                    # roughly centred in height too
    # One piece: the export keeps the largest connected parts (keep_components), so a prop made of
    # pieces that do not touch (a fence's rails 3 mm off its pickets) loses all but one of them.
    from scipy import ndimage

    labels, count = ndimage.label(inside.reshape(n, n, n).numpy())
    largest = np.bincount(labels.ravel())[1:].max()
    assert largest >= 0.97 * inside.sum().item(), (count, largest, inside.sum().item())
    near = grid[gt.sdf(grid).abs() < 0.02]
    rgb = gt.albedo(near)
    assert rgb.shape == near.shape and (rgb >= 0).all() and (rgb <= 1).all()


def test_asymmetric_props_really_are_asymmetric():
    """A facing prop turned around (180 degrees) or mirrored left-right is a different solid: that
    is what the facing benchmark measures. Most differ in a large part (chair back, mug handle, lamp
    arm, anvil horn...); a few only in a detail (the chest's lock, the well's crank, the door of the
    tower and the house), which the texture score sees better than the IoU."""
    strong = 0
    grid = torch.rand(60_000, 3, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    for name in PROP_NAMES:
        cat = PROPS[name]
        gt = ground_truth(caption(name, cat.looks[0]))
        occ = gt.sdf(grid) < 0
        turned = gt.sdf(shapes.rotate_z(grid, 180.0)) < 0
        mirrored = gt.sdf(grid * torch.tensor([1.0, -1.0, 1.0])) < 0
        iou = lambda a, b: (a & b).sum().item() / max(1, (a | b).sum().item())
        if cat.facing:
            assert min(iou(occ, turned), iou(occ, mirrored)) < 0.998, name
            strong += min(iou(occ, turned), iou(occ, mirrored)) < 0.95
        if not cat.mirror_ok:
            assert iou(occ, mirrored) < 0.998, name
        if cat.yaw_period == 0.0:
            assert iou(occ, gt.sdf(shapes.rotate_z(grid, 37.0)) < 0) > 0.97, name
    assert strong >= 7


def test_prop_materials_have_their_patterns():
    """Wood planks vary across boards, mushroom caps have white spots on red, stone is not flat."""
    barrel = ground_truth("a wooden barrel")
    a = torch.linspace(0, 2 * math.pi, 400)
    ring = torch.stack([0.36 * torch.cos(a), 0.36 * torch.sin(a), torch.zeros_like(a)], 1)
    rgb = barrel.albedo(ring)
    assert rgb.std(0).max() > 0.02 and (rgb[:, 0] > rgb[:, 2]).all()          # brown, not flat
    cap = ground_truth("a red mushroom")
    top = torch.tensor([[0.0, 0.0, 0.45]])
    pts = torch.cat([top, torch.tensor([[0.25, 0.0, 0.3]]), torch.tensor([[0.0, 0.3, 0.25]])])
    colours = cap.albedo(pts)
    assert colours[0].min() > 0.8                         # a white spot on top
    assert (colours[:, 0] > 0.7).all() and (colours[1:, 1] < 0.3).any()       # red elsewhere


def test_rotate_z_is_counter_clockwise_seen_from_above():
    p = torch.tensor([[1.0, 0.0, 0.5]])
    assert torch.allclose(shapes.rotate_z(p, 90.0), torch.tensor([[0.0, 1.0, 0.5]]), atol=1e-6)


# -- renders ----------------------------------------------------------------------------------------
def test_training_renders_use_the_engine_cameras_and_show_the_object():
    from backend.prior.render import default_settings, sample_batch

    s = default_settings()
    for key, value in CAMERA.items():
        assert getattr(s, key) == value
    torch.manual_seed(0)
    b = sample_batch(6, 16, generator=torch.Generator().manual_seed(0))
    assert b.images.shape == (6, 3, 16, 16)
    assert 0.0 <= b.images.min() and b.images.max() <= 1.0
    from backend.prior.render import ENTRIES
    assert b.entry.max() < len(ENTRIES) and b.view.max() < len(VIEWS)
    # The object sits in the middle (no look-at jitter): centre pixels differ from the corners.
    centre = b.images[:, :, 6:10, 6:10].mean((2, 3))
    corner = b.images[:, :, :2, :2].mean((2, 3))
    assert ((centre - corner).abs().max(1).values > 0.02).float().mean() >= 0.8


def test_albedo_renders_show_the_exact_colour():
    from backend.engine.cameras import orbit_cameras
    from backend.prior.render import BACKGROUNDS, SHADINGS, entry_index, render

    cams = orbit_cameras(20.0, [30.0], 1.8, 50.0)
    red = torch.tensor([COLOURS["red"]])
    img = render(torch.tensor([entry_index("sphere", "red")]), cams, 16,
                 shading=torch.tensor([SHADINGS.index("albedo")]), background=torch.tensor([BACKGROUNDS.index("white")]))
    assert torch.allclose(img[0, :, 8, 8], red[0], atol=1e-4)
    assert torch.allclose(img[0, :, 0, 0], torch.ones(3))


# -- settings ---------------------------------------------------------------------------------------
def test_recommended_settings_are_valid_and_use_the_training_camera():
    from shared.settings import GenerationSettings

    recommended = recommended_settings()
    s = GenerationSettings.from_dict({**recommended, "prompt": "a red cube"})
    assert s.model == "builtin"
    assert {k: getattr(s, k) for k in recommended} == recommended      # validation keeps every value
    # The training renders' fixed camera (no jitter: see backend/prior/__init__.py).
    assert s.distance_min == s.distance_max and s.fovy_min == s.fovy_max
    assert s.camera_perturb == 0 and s.center_perturb == 0
    recommended["steps"] = 1                                            # a copy: callers may change it
    assert recommended_settings() == PRESET and PRESET["steps"] != 1


# -- architecture -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_prior(tmp_path_factory):
    from backend.prior.model import build_random

    return build_random(tmp_path_factory.mktemp("prior") / "random")


def test_architecture_loads_through_the_sd_guidance(random_prior):
    from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance
    from backend.prior.model import IMAGE_SIZE

    from backend.engine.cameras import orbit_cameras

    g = StableDiffusionGuidance(str(random_prior), "cpu")
    assert g.native_resolution == IMAGE_SIZE
    emb = g.encode_prompts("a red cube", "", VIEW_SUFFIXES)
    rgb = torch.rand(1, 32, 32, 3, requires_grad=True)
    out = g(rgb, emb, ["front"], cameras=orbit_cameras(20.0, [0.0], 1.8, 50.0), guidance_scale=10.0,
            t_range=(0.02, 0.98))
    out["loss_sds"].backward()
    assert rgb.grad is not None and torch.isfinite(rgb.grad).all()


def test_weights_budget_of_the_architecture(random_prior):
    size = sum(f.stat().st_size for f in Path(random_prior).rglob("*") if f.is_file())
    assert size <= 50e6
    assert not list(Path(random_prior).rglob("*.bin"))


# -- the shipped weights ----------------------------------------------------------------------------
@needs_weights
def test_shipped_weights_are_the_builtin_model_and_small():
    from backend.engine.guidance.models import resolve_model

    assert resolve_model("builtin") == WEIGHTS_DIR
    files = [f for f in WEIGHTS_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 50e6
    weights = [f for f in files if f.suffix in (".safetensors", ".bin", ".pt", ".ckpt")]
    assert weights and all(f.suffix == ".safetensors" for f in weights)
    index = json.loads((WEIGHTS_DIR / "model_index.json").read_text())
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(index)
    sched = json.loads((WEIGHTS_DIR / "scheduler" / "scheduler_config.json").read_text())
    assert sched["beta_schedule"] == "scaled_linear" and sched["prediction_type"] == "epsilon"


@needs_weights
@torch.no_grad()
def test_shipped_prior_draws_the_asked_colour():
    """DDIM samples of 'a red cube' / 'a blue sphere': the colour of the image centre (where the prior
    puts the object) is, among all colours of the grammar, most often the asked one. White is left
    out of the vote: 15% of the training images are textureless-shaded (the object rendered white,
    as the trainer does), so the prior rightly draws some white cubes for "a red cube"."""
    from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance
    from backend.prior.train import report_camera, sample

    g = StableDiffusionGuidance(str(WEIGHTS_DIR), "cpu")
    tokens_of = lambda texts: g.tokenizer(list(texts), padding="max_length", max_length=g.tokenizer.model_max_length,
                                          truncation=True, return_tensors="pt").input_ids
    prompts = ["a red cube", "a blue sphere"]
    n = 8
    images = sample(g.unet, g.text_encoder, g.vae, tokens_of, prompts, n_per_prompt=n, steps=20, cfg=4.0, seed=0,
                    camera=report_camera() if g.camera_conditioned else None)
    table = torch.tensor(list(COLOURS.values()))
    names = list(COLOURS)
    for i, prompt in enumerate(prompts):
        centres = images[n * i: n * (i + 1), :, 28:36, 28:36].flatten(2).median(2).values     # (n, 3)
        votes = [names[int(k)] for k in torch.cdist(centres, table).argmin(1)]
        coloured = [v for v in votes if v != "white"]
        asked = parse_prompt(prompt)[1]
        assert coloured and max(set(coloured), key=coloured.count) == asked, (prompt, votes)
        assert coloured.count(asked) >= n // 3, (prompt, votes)


@needs_weights
def test_shipped_prior_prefers_the_right_prompt():
    """The denoiser's error on noised latents of a rendered red cube is lower with the caption
    'a red cube' than with a wrong shape or colour: text conditioning works."""
    from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance
    from backend.prior.render import sample_batch

    g = StableDiffusionGuidance(str(WEIGHTS_DIR), "cpu")
    torch.manual_seed(0)
    from backend.prior.render import ENTRIES

    cube, sphere = SHAPES.index("cube"), SHAPES.index("sphere")
    batch = sample_batch(160, 64, generator=torch.Generator().manual_seed(3))
    cat = torch.tensor([ENTRIES[e][0] for e in batch.entry.tolist()])
    keep = (cat == cube) | (cat == sphere)
    images = batch.images[keep][:8]
    shape_idx = cat[keep][:8]
    cameras = batch.camera[keep][:8] if g.camera_conditioned else None
    colour_idx = torch.tensor([list(COLOURS).index(ENTRIES[e][1]) for e in batch.entry[keep][:8].tolist()])
    assert len(images) >= 4
    with torch.no_grad():
        z = g.vae.encode(images * 2 - 1).latent_dist.mean * g.latent_scale
        gen = torch.Generator().manual_seed(0)
        errors = {"right": 0.0, "wrong_shape": 0.0, "wrong_colour": 0.0}
        for _ in range(4):
            t = torch.randint(200, 700, (len(z),), generator=gen)
            noise = torch.randn(z.shape, generator=gen)
            noisy = g.scheduler.add_noise(z, noise, t)
            for kind in errors:
                texts = []
                for s, c in zip(shape_idx.tolist(), colour_idx.tolist()):
                    if kind == "wrong_shape":
                        s = SHAPES.index("sphere") if SHAPES[s] == "cube" else SHAPES.index("cube")
                    if kind == "wrong_colour":
                        c = (c + len(COLOURS) // 2) % len(COLOURS)
                    texts.append(caption(SHAPES[s], list(COLOURS)[c]))
                ctx = torch.cat([g._embed(x) for x in texts])
                pred = g.unet(noisy, t, encoder_hidden_states=ctx, class_labels=cameras).sample
                errors[kind] += float(((pred - noise) ** 2).mean())
    assert errors["right"] < errors["wrong_shape"] and errors["right"] < errors["wrong_colour"], errors


# -- training script --------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_script_writes_a_loadable_pipeline_and_report(tmp_path):
    from backend.engine.guidance.stable_diffusion import StableDiffusionGuidance
    from backend.prior.train import main

    ckpt = tmp_path / "ckpt.pt"
    args = ["--out", str(tmp_path / "run"), "--device", "cpu", "--images", "8", "--vae-steps", "2",
            "--unet-steps", "2", "--vae-batch", "4", "--unet-batch", "4", "--samples-per-prompt", "1",
            "--sample-steps", "1", "--checkpoint", str(ckpt), "--checkpoint-every", "0"]
    assert main(args) == 0
    report = tmp_path / "run" / "report"
    log = json.loads((report / "train_log.json").read_text())
    assert log["unet_curve"][-1]["step"] == 2 and log["vae_curve"][-1]["step"] == 2
    assert log["images"] == 8
    g = StableDiffusionGuidance(str(tmp_path / "run" / "weights"), "cpu")
    assert math.isclose(g.latent_scale, log["scaling_factor"], rel_tol=1e-6)
    # The report states the numbers of the log: scaling factor, image count, the last curve rows.
    md = (report / "report.md").read_text()
    assert f"VAE scaling_factor: {log['scaling_factor']:.4f}" in md and "- images: 8 at " in md
    vae_row, unet_row = log["vae_curve"][-1], log["unet_curve"][-1]
    assert f"| 2 | {vae_row['rec']:.4f} | {vae_row['kl_per_dim']:.3f} |" in md
    assert f"| 2 | {unet_row['loss']:.4f} | " in md
    # The image grids (64 px tiles, 2 px gaps, upscaled 2x): one sample per benchmark prompt (8 a
    # row: the solids' 8 colours, then the props), the 8 training images, and 8 originals over their
    # 8 reconstructions.
    from backend.prior.train import SAMPLE_COLUMNS

    n_samples = len(benchmark_prompts())
    for name, n, cols in (("samples.png", n_samples, SAMPLE_COLUMNS), ("data.png", 8, 8), ("vae_recon.png", 16, 8)):
        rows = math.ceil(n / cols)
        grid = np.asarray(Image.open(report / name).convert("RGB"))
        assert grid.shape == (2 * (rows * 66 + 2), 2 * (cols * 66 + 2), 3), name
        for i in range(n):
            r, c = divmod(i, cols)
            tile = grid[2 * (2 + 66 * r): 2 * (66 * (r + 1)), 2 * (2 + 66 * c): 2 * (66 * (c + 1))]
            assert tile.std() > 0.5, (name, r, c)              # an image, not the blank canvas
    # A finished checkpoint makes a second run a no-op: it returns before touching any file.
    assert torch.load(ckpt, weights_only=False)["stage"] == "done"
    files = {f: f.stat().st_mtime_ns for f in (tmp_path / "run").rglob("*")}
    assert main(args) == 0
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / "run").rglob("*")} == files


def test_a_mirrored_render_is_the_mirrored_compass_view():
    """Training flips images left-right and swaps the caption's left/right: that is only right if the
    mirror image of a view at azimuth a is the view at -a, with the mirrored name."""
    from backend.engine.cameras import orbit_cameras, view_direction
    from backend.prior.grammar import VIEW_NAMING, mirrored_view
    from backend.prior.render import entry_index, render

    assert mirrored_view("front left") == "front right" and mirrored_view("back") == "back"
    assert sorted(mirrored_view(v) for v in VIEWS) == sorted(VIEWS)
    cams = orbit_cameras(20.0, [30.0, -30.0, 100.0, -100.0], CAMERA["distance_min"], CAMERA["fovy_min"])
    n = 4
    images = render(torch.full((n,), entry_index("pyramid", "red")), cams, 32,
                    shading=torch.zeros(n, dtype=torch.long), background=torch.ones(n, dtype=torch.long))
    for i, j in ((0, 1), (2, 3)):
        assert (images[i].flip(-1) - images[j]).abs().max() < 1e-4
        assert (images[i] - images[j]).abs().max() > 0.1          # the views do differ
        a, b = (view_direction(20.0, float(cams.azimuth[k]), naming=VIEW_NAMING) for k in (i, j))
        assert a != b and mirrored_view(a) == b


def test_training_script_trains_prior_v4_with_32x32_latents_that_the_engine_steps(tmp_path):
    """``--architecture v4``: a few CPU steps write a diffusers folder whose VAE makes 32x32 latents of
    a 64 px image, which the engine loads unchanged (latent size and scale read from the model) and
    takes SDS steps with at the prior's preset. Rendering is skipped through ``--data-cache`` (random
    images: the layout is under test here, not the data); a v3 resume of the v4 checkpoint is refused."""
    from diffusers import AutoencoderKL

    from backend.prior.render import ENTRIES
    from backend.prior.train import main, save_ckpt, to_float
    from tests.helpers import take_sds_steps

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=gen)
    labels = torch.stack([torch.randint(0, len(ENTRIES), (4,), generator=gen),
                          torch.randint(0, len(VIEWS), (4,), generator=gen)], 1)
    save_ckpt(tmp_path / "data.pt", (images, labels))
    ckpt = tmp_path / "ckpt.pt"
    args = ["--out", str(tmp_path / "run"), "--device", "cpu", "--data-cache", str(tmp_path / "data.pt"),
            "--vae-steps", "1", "--unet-steps", "1", "--vae-batch", "2", "--unet-batch", "2",
            "--samples-per-prompt", "0", "--checkpoint", str(ckpt)]
    assert main(["--architecture", "v4", *args]) == 0
    log = json.loads((tmp_path / "run" / "report" / "train_log.json").read_text())
    assert (log["architecture"], log["image_size"], log["latent_size"]) == ("v4", 64, 32)
    assert "- architecture: v4 (32x32 latents)" in (tmp_path / "run" / "report" / "report.md").read_text()

    weights = tmp_path / "run" / "weights"
    assert sum(f.stat().st_size for f in weights.rglob("*") if f.is_file()) <= 50e6      # fp16, like v3
    vae = AutoencoderKL.from_pretrained(str(weights), subfolder="vae", torch_dtype=torch.float32)
    with torch.no_grad():
        latents = vae.encode(to_float(images[:1])).latent_dist.mean
    assert latents.shape == (1, 4, 32, 32)
    assert math.isclose(vae.config.scaling_factor, log["scaling_factor"], rel_tol=1e-3)

    guidance = take_sds_steps(weights, "a wooden chair", 3)
    assert guidance.native_resolution == 64 and guidance.latent_shape(2) == (2, 4, 32, 32)

    with pytest.raises(SystemExit, match="architecture v4"):
        main(args)                     # the default (v3) on the v4 checkpoint


def test_a_resumed_denoiser_training_keeps_the_step_count_of_its_first_command():
    """A time-budgeted run times its first steps and fixes the step count; a resumed command must
    keep that count (and so the learning-rate schedule), not time its steps again."""
    from backend.prior.train import start_denoiser_training

    params = [torch.nn.Parameter(torch.zeros(3))]
    opt_state = torch.optim.AdamW(params, lr=1e-3).state_dict()
    ckpt = {"stage": "unet", "step": 10, "total": 50, "unet_opt": opt_state, "ema": [torch.zeros(3)]}
    _, _, _, start, budget = start_denoiser_training(params, 1e-3, ckpt, "unet_opt", minutes=1e-4, steps=None,
                                                     dev=torch.device("cpu"))
    assert start == 10
    for step in range(1, 45):        # the probe (steps 5..35 of this command) would re-time the run
        budget.update(step)
    assert budget.total == 50
    fresh = start_denoiser_training(params, 1e-3, {}, "unet_opt", minutes=1e-4, steps=None, dev=torch.device("cpu"))[4]
    for step in range(1, 45):
        fresh.update(step)
    assert fresh.total != 50          # a fresh run does time its steps (1e-4 minutes: a few steps)


def test_centred_proportions_draw_the_middle_of_each_range():
    """``Category.sample(centred=)``: a share of the objects from the middle third of every range (integers: the
    canonical value), the rest uniform over the whole range; a share outside [0, 1] is refused."""
    from backend.prior.catalogue import BY_NAME

    fence = BY_NAME["fence"]                      # an integer (pickets 4-6) and a float (spacing 0.2-0.24) parameter
    lo, hi = fence.params["spacing"]
    g = torch.Generator().manual_seed(0)
    all_middle = fence.sample(2000, "cpu", g, centred=1.0)
    assert torch.all(all_middle["pickets"] == fence.canonical()["pickets"])
    s = all_middle["spacing"]
    assert s.min() >= lo + (hi - lo) / 3 - 1e-6 and s.max() <= lo + 2 * (hi - lo) / 3 + 1e-6
    assert s.max() - s.min() > 0.9 * (hi - lo) / 3          # spread over the middle third, not one value
    uniform = fence.sample(2000, "cpu", torch.Generator().manual_seed(0))
    assert set(uniform["pickets"].tolist()) == {4.0, 5.0, 6.0}
    middle = ((uniform["spacing"] - lo) / (hi - lo) - 0.5).abs() < 1 / 6
    assert 0.28 < middle.float().mean() < 0.39             # uniform: a third of the draws in the middle third
    mixed = fence.sample(4000, "cpu", torch.Generator().manual_seed(1), centred=0.7)
    canonical_share = (mixed["pickets"] == 5.0).float().mean()
    assert 0.74 < canonical_share < 0.82                    # 0.7 + 0.3 / 3 = 0.8 with five pickets
    with pytest.raises(ValueError, match="centred must be in"):
        fence.sample(4, "cpu", centred=1.5)
