"""blender_addon/pictures.py, the bpy-free half of the panel's image source, without Blender: loaded
from its file (no bpy, no relative imports). PNGs checked by decoding them with Pillow."""

from __future__ import annotations

import importlib.util
import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.engine.reference_image import prepare_reference
from shared.layering import recommended_settings
from shared.settings import IMAGE_GUIDANCE_TYPES, GenerationSettings

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("dreamprop_addon_pictures", ROOT / "blender_addon" / "pictures.py")
pictures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pictures)


def test_png_of_blender_pixels_decodes_top_row_first_with_alpha():
    w, h = 40, 36
    px = np.zeros((h, w, 4), np.float32)          # Blender order: row 0 is the bottom
    px[..., 3] = 0.0
    px[:6, :, :] = [0.0, 0.0, 1.0, 1.0]           # bottom rows blue, opaque
    px[-6:, 10:30, :] = [1.0, 0.0, 0.0, 1.0]      # top rows: a red bar, opaque
    data = pictures.png_rgba(w, h, px.reshape(-1).tolist())
    im = np.asarray(Image.open(io.BytesIO(data)))
    assert im.shape == (h, w, 4)
    assert (im[0, 15] == [255, 0, 0, 255]).all() and (im[-1, 0] == [0, 0, 255, 255]).all()
    assert im[h // 2, 0, 3] == 0
    # the server takes it: alpha is the mask
    assert prepare_reference(data).source == "alpha"


def test_png_of_a_float_buffer_is_encoded_to_srgb():
    data = pictures.png_rgba(1, 1, [0.5, 0.0, 1.0, 0.5], linear=True)
    assert tuple(np.asarray(Image.open(io.BytesIO(data)))[0, 0]) == (188, 0, 255, 128)   # alpha stays linear
    with pytest.raises(ValueError, match="expected 4 values"):
        pictures.png_rgba(1, 1, [0.0] * 3)


@pytest.mark.parametrize("forward, expected", [((1.0, 0.0, -math.tan(math.radians(20))), 20.0),
                                               ((0.0, -2.0, 0.0), 0.0),
                                               ((0.0, 0.0, -1.0), 60.0),       # straight down: clamped
                                               ((1.0, 0.0, 5.0), -30.0)])      # looking up: clamped
def test_camera_elevation(forward, expected):
    assert pictures.camera_elevation(forward) == pytest.approx(expected, abs=0.01)


def test_image_job_settings_match_the_layering():
    panel = GenerationSettings(prompt="", steps=500).to_dict()
    image_recommended = recommended_settings("builtin", "zero123")
    auto = pictures.image_job_settings(panel, image_types=IMAGE_GUIDANCE_TYPES, recommended=image_recommended,
                                       auto_quality=True, elevation=12.5)
    assert auto["guidance_type"] == pictures.IMAGE_GUIDANCE and auto["reference_elevation"] == 12.5
    assert auto["steps"] == image_recommended["steps"] != 500
    GenerationSettings.from_dict(auto)            # valid without a prompt
    custom = pictures.image_job_settings(panel, image_types=IMAGE_GUIDANCE_TYPES, recommended=image_recommended,
                                         auto_quality=False)
    assert custom["steps"] == 500 and custom["reference_elevation"] == panel["reference_elevation"]
