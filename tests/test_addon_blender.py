"""The add-on in real Blender (bpy 5.0.1), without a server: install, settings, import, placement,
proxies, batch markers, refine export, error reports. One fresh bpy process runs all checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.blender.runner import OUTPUT, addon_zip, check, run_scenario
from tests.helpers import assert_valid_gltf

pytestmark = pytest.mark.blender

CHECKS = ["check_install", "check_properties_match_schema", "check_presets", "check_vocabulary_ui",
          "check_import_textured_at_cursor",
          "check_image_job_named_after_the_prompt_read", "check_fit_to_marker", "check_proxy_replaced_in_place", "check_batch_markers", "check_refine_export",
          "check_errors_are_reports", "check_panels_draw", "check_image_source"]


def _make_glbs(folder):
    import trimesh
    from PIL import Image

    box = trimesh.creation.box(extents=[0.4, 1.6, 0.8])   # glTF is Y-up: 1.6 is the height
    uv = (box.vertices[:, :2] - box.vertices[:, :2].min(0)) / np.ptp(box.vertices[:, :2], axis=0)
    img = Image.fromarray(np.array([[[200, 30, 30], [30, 200, 30]], [[30, 30, 200], [200, 200, 30]]], np.uint8))
    box.visual = trimesh.visual.TextureVisuals(uv=uv, image=img)
    paths = {"textured_glb": folder / "textured.glb"}
    box.export(paths["textured_glb"])
    for name, sub, colour in (("proxy_glb_a", 2, [255, 0, 0, 255]), ("proxy_glb_b", 1, [0, 0, 255, 255])):
        sphere = trimesh.creation.icosphere(subdivisions=sub, radius=0.5)
        sphere.visual.vertex_colors = np.tile(colour, (len(sphere.vertices), 1))
        paths[name] = folder / f"{name}.glb"
        sphere.export(paths[name])
    return {k: str(v) for k, v in paths.items()}


def _backend_side() -> dict:
    """What the add-on must agree with: the prior's vocabulary and a plain command's settings."""
    from backend.prior.vocabulary import known_prompts
    from shared.layering import resolve

    return {"vocabulary": known_prompts(), "plain_settings": resolve({"prompt": ""}, require_prompt=False).to_dict()}


@pytest.fixture(scope="module")
def results():
    work = OUTPUT / "offline"
    import shutil
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    inputs = work / "inputs.json"
    inputs.write_text(json.dumps({**_make_glbs(work), **_backend_side()}))
    return run_scenario("scenario_offline.py", [addon_zip(), inputs], work, timeout=180)


@pytest.mark.parametrize("name", CHECKS)
def test_offline(results, name):
    check(results, name)


def test_refine_input_passes_the_gltf_validator(results):
    """The GLB the add-on sends for a refine (Blender's glTF exporter on the normalised mesh): no
    error or warning. Blender writes the mesh's UV map even where no texture uses it (the test cube
    has no material), an info-level UNUSED_OBJECT that changes nothing for the backend."""
    assert_valid_gltf([check(results, "check_refine_export")["glb"]], allow_infos=("UNUSED_OBJECT",))


def test_image_source_pictures_are_what_the_server_accepts(results):
    """The image open in Blender and the camera render, read back by the server's own reader: an alpha
    mask where the object is (the image's disc low right; the render's cube in the middle)."""
    import base64

    from backend.engine.reference_image import decode, foreground

    out = check(results, "check_image_source")
    rgb, alpha = decode(base64.b64decode(out["image_png"]))
    mask, how = foreground(rgb, alpha)
    assert how == "alpha" and mask.shape == (64, 64)
    ys, xs = np.nonzero(mask > 0.5)
    assert abs(xs.mean() - 40) < 1.5 and abs(ys.mean() - (64 - 24)) < 1.5     # top-down rows in the PNG
    assert rgb[40, 40, 0] > 0.8 and rgb[40, 40, 1] < 0.2
    rgb, alpha = decode(base64.b64decode(out["camera_png"]))
    mask, how = foreground(rgb, alpha)
    assert how == "alpha" and 0.05 < (mask > 0.5).mean() < 0.6
    ys, xs = np.nonzero(mask > 0.5)
    assert abs(xs.mean() - 32) < 3 and abs(ys.mean() - 32) < 4
