"""Image-to-3D inputs and losses: picture checks, the border-colour segmentation, the recentring,
and the reference-view losses on a real field and renderer (backend/engine/reference*.py)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from backend.engine.reference import ImageTerms, ReferenceView, reference_losses
from backend.engine.reference_image import (MAX_SIDE, ImageError, PreparedImage, prepare_reference, recentre,
                                            segment_background)
from shared.settings import GenerationSettings, SettingError


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def disc(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] + 0.5
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 < radius ** 2


# -- picture checks: each names the field "image" and says what is allowed -------------------------
def test_not_an_image_is_refused_with_the_formats():
    with pytest.raises(ImageError) as e:
        prepare_reference(b"GIF89a but not really an image at all")
    assert e.value.field == "image" and "not a readable image" in e.value.message and "PNG" in e.value.message


def test_picture_too_large_names_the_side_range_and_the_byte_limit():
    with pytest.raises(ImageError, match=rf"each side must be in \[32, {MAX_SIDE}\]"):
        prepare_reference(png(np.zeros((40, MAX_SIDE + 8, 3), np.uint8)))
    with pytest.raises(ImageError, match=r"is \d+ bytes, the limit is 1000"):
        prepare_reference(png(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), max_bytes=1000)


def test_no_foreground_is_refused_for_plain_and_transparent_pictures():
    with pytest.raises(ImageError, match="no foreground") as e:
        prepare_reference(png(np.full((64, 64, 3), 128, np.uint8)))
    assert "border colour" in e.value.message
    transparent = np.zeros((64, 64, 4), np.uint8)
    transparent[..., 0] = 255
    with pytest.raises(ImageError, match="no foreground.*alpha"):
        prepare_reference(png(transparent, "RGBA"))


# -- foreground --------------------------------------------------------------------------------
def test_segmentation_without_alpha_finds_the_object_and_drops_specks():
    rng = np.random.default_rng(0)
    size = 128
    image = np.clip(0.85 + rng.normal(0, 0.01, (size, size, 3)), 0, 1)       # a slightly noisy backdrop
    obj = disc(size, (50, 70), 25)
    image[obj] = [0.8, 0.1, 0.1]
    image[60:80, 40:60][disc(20, (10, 10), 4)] = [0.85, 0.85, 0.85]          # a backdrop-coloured spot
    speck = disc(size, (110, 15), 2.5)
    image[speck] = [0.1, 0.1, 0.8]                                            # a separate speck: dropped
    mask = segment_background(image)
    truth = obj
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.97, iou
    assert not mask[speck].any()
    assert mask[70, 50]             # the hole of backdrop colour inside the object is filled
    prepared = prepare_reference(png((image * 255).astype(np.uint8)))
    assert prepared.source == "segmented"


def test_alpha_channel_is_the_mask():
    rgba = np.zeros((64, 96, 4), np.uint8)
    rgba[..., :3] = 30
    obj = disc(96, (40, 30), 15)[:64]
    rgba[obj, 3] = 255
    prepared = prepare_reference(png(rgba, "RGBA"), fill=0)
    assert prepared.source == "alpha" and prepared.original_size == (96, 64)
    # fill=0 keeps the framing: a 96-wide picture padded to a square, the object where it was
    side = prepared.mask.shape[0]
    ys, xs = np.nonzero(prepared.mask > 0.5)
    assert abs(xs.mean() - 40 / 96 * side) < 2 and abs(ys.mean() - (30 + 16) / 96 * side) < 2


def test_recentre_fills_the_frame_fraction_and_centres():
    mask = np.zeros((100, 200), np.float32)
    mask[10:30, 150:190] = 1.0                      # 20 x 40 box, off-centre
    rgb = np.zeros((100, 200, 3), np.float32)
    rgb[mask > 0] = [0.2, 0.6, 0.4]
    out_rgb, out_mask = recentre(rgb, mask, side=100, fill=0.8)
    ys, xs = np.nonzero(out_mask > 0.5)
    assert xs.max() - xs.min() + 1 == pytest.approx(80, abs=1)       # the longer side: 0.8 of 100
    assert ys.max() - ys.min() + 1 == pytest.approx(40, abs=1)
    assert (xs.min() + xs.max()) / 2 == pytest.approx(49.5, abs=1) and (ys.min() + ys.max()) / 2 == pytest.approx(49.5, abs=1)
    assert np.allclose(out_rgb[50, 50], [0.2, 0.6, 0.4], atol=1e-3)   # no background bled into the colour


def test_reference_settings_are_validated_with_their_range():
    with pytest.raises(SettingError, match=r"reference_elevation: must be a number in \[-30, 60\]"):
        GenerationSettings.from_dict({"prompt": "x", "reference_elevation": 75})
    with pytest.raises(SettingError, match=r"reference_fill: must be 0 .* or in \[0.2, 1\]"):
        GenerationSettings.from_dict({"prompt": "x", "reference_fill": 0.1})
    # an image job needs no prompt
    assert GenerationSettings.from_dict({"guidance_type": "zero123"}).is_image_job


# -- the reference-view losses -----------------------------------------------------------------
def test_reference_loss_is_zero_for_the_reference_and_grows_with_a_shift():
    size = 32
    bg = torch.tensor([0.3, 0.5, 0.9]).expand(size * size, 3)
    colour = torch.tensor([0.9, 0.2, 0.1])

    def picture(dx: int):
        mask = torch.from_numpy(disc(size, (16 + dx, 16), 8)).float().reshape(-1, 1)
        return colour.expand(size * size, 3) * mask, mask

    target_rgb, target_mask = picture(0)
    losses = []
    for dx in (0, 2, 5):
        rgb, mask = picture(dx)
        render = {"rgb": rgb + bg * (1 - mask), "opacity": mask}     # the object rendered over bg
        out = reference_losses(render, target_rgb, target_mask, bg)
        losses.append((float(out["rgb"]), float(out["mask"])))
    assert losses[0] == (0.0, 0.0)
    assert 0 < losses[1][0] < losses[2][0] and 0 < losses[1][1] < losses[2][1]


def small_renderer(settings: GenerationSettings):
    from backend.engine.field import BackgroundMLP, NeRFField
    from backend.engine.occupancy import make_estimator
    from backend.engine.renderer import VolumeRenderer

    field = NeRFField.from_settings(settings, bound=1.0)
    estimator = make_estimator(1.0, settings.occupancy_resolution, torch.device("cpu"))
    return field, VolumeRenderer(field, BackgroundMLP(), estimator, bound=1.0, samples_per_ray=settings.samples_per_ray)


def test_reference_loss_gradient_moves_the_field_toward_the_picture():
    """A blob at the centre; the picture shows a red disc left of centre. Steps on the reference losses
    alone must move the rendered opacity onto the disc and turn it red."""
    torch.manual_seed(0)
    settings = GenerationSettings(prompt="x", hash_levels=4, hash_log2_size=12, hash_max_resolution=64,
                                  samples_per_ray=48, reference_resolution=24, reference_elevation=0.0,
                                  reference_azimuth=0.0, reference_distance=2.0, reference_fovy=50.0,
                                  blob_density=5.0, blob_radius=0.3, progressive_levels=False)
    side = 64
    target = disc(side, (20, 32), 12)                 # left of centre, in the reference camera's view
    rgb = np.ones((side, side, 3), np.float32)
    rgb[target] = [0.9, 0.1, 0.1]
    image = PreparedImage(rgb, target.astype(np.float32), "alpha", (side, side))
    field, renderer = small_renderer(settings)
    view = ReferenceView(image, settings, "cpu")
    terms = ImageTerms(settings, view, image)
    optimiser = torch.optim.Adam(field.parameters(), lr=0.02)
    target_flat = view.mask.reshape(-1) > 0.5

    def on_target_fraction():
        with torch.no_grad():
            opacity = renderer(view.rays_o, view.rays_d, bg_color=torch.ones_like(view.rays_o))["opacity"][:, 0]
        return float(opacity[target_flat].sum() / opacity.sum()), float(opacity[target_flat].mean())

    before = on_target_fraction()
    first = None
    for step in range(40):
        renderer.update_occupancy(step, warmup_steps=1000)
        losses = {"sds": torch.zeros(())}
        terms.add_losses(losses, renderer=renderer, rgb=None, views=[], cameras=None, t_range=(0.0, 1.0))
        total = losses["ref_rgb"] + losses["ref_mask"]
        first = float(total.detach()) if first is None else first
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    after = on_target_fraction()
    assert float(total.detach()) < 0.5 * first
    assert after[0] > before[0] + 0.15 and after[1] > before[1]
    with torch.no_grad():
        inside = renderer(view.rays_o[target_flat], view.rays_d[target_flat], bg_color=torch.ones_like(
            view.rays_o[target_flat]))["rgb"].mean(0)
    assert inside[0] > inside[1] + 0.3 and inside[0] > inside[2] + 0.3       # red where the picture is red
