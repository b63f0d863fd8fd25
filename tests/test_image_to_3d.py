"""Image to 3D end to end on the CPU: one picture of a prior object (drawn by the prior's own renderer,
``backend.bench.pictures``) -> ``api.generate`` with the zero123 guidance and the reference-view
losses -> a GLB whose shape matches the object's ground truth (IoU, ``backend.bench.metrics``)."""

from __future__ import annotations

import pytest

from backend.bench.metrics import best_yaw_iou, load_glb, voxelize
from backend.bench.pictures import picture_png
from backend.prior.catalogue import ground_truth
from shared.layering import resolve

PROMPT = "a red cube"
ELEVATION, AZIMUTH = 15.0, 30.0


@pytest.fixture(scope="module")
def view_prior(tmp_path_factory):
    """The trained view prior when it is installed, else a tiny random one in the same layout (then the
    shape comes from the reference view's losses; the guidance still runs every step)."""
    from backend.view_prior import WEIGHTS_DIR, available
    from backend.view_prior.model import build_tiny

    if available():
        return str(WEIGHTS_DIR), 1.0
    return str(build_tiny(tmp_path_factory.mktemp("view-prior") / "tiny")), 0.0


def short_image_settings(model: str, image_weight: float, **changes):
    """The image preset (what `generate --image` runs) on a shorter budget: 50 steps (the cube's best-yaw
    IoU was 0.70 after 50 steps with the shipped view prior, against the test's 0.5)."""
    return resolve({"guidance_type": "zero123", "model": model, "image_guidance_weight": image_weight,
                    "steps": 50, "reference_resolution": 48, "reference_elevation": ELEVATION,
                    "reference_fill": 0.0, "mesh_resolution": 64, "texture_size": 64, "face_budget": 4000,
                    "preview_interval": 0, **changes}, preset="builtin-image")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_one_picture_makes_the_object(view_prior):
    from backend.engine.api import generate

    model, image_weight = view_prior
    png = picture_png(PROMPT, elevation=ELEVATION, azimuth=AZIMUTH, size=128)
    settings = short_image_settings(model, image_weight)
    result = generate(settings, device="cpu", reference_image=png)
    assert result.metadata["reference"]["mask_source"] == "alpha"
    assert {"ref_rgb", "ref_mask", "sds"} <= set(result.metadata["final_losses"])
    mesh = load_glb(result.glb)
    truth = ground_truth(PROMPT)
    score, _ = best_yaw_iou(voxelize(mesh.vertices, mesh.faces, 64), truth.sdf, period=truth.yaw_period)
    assert score > 0.5, score


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_an_image_job_with_a_fine_stage_keeps_the_reference_losses(view_prior):
    """``stages`` coarse,fine on an image job: the fine stage (the SDF on the coarse surface) is fitted to
    the picture too (its losses have the reference view's terms), and the result is still the object."""
    from backend.engine.api import generate

    model, image_weight = view_prior
    png = picture_png(PROMPT, elevation=ELEVATION, azimuth=AZIMUTH, size=128)
    settings = short_image_settings(model, image_weight, stages="coarse,fine", fine_steps=3)
    result = generate(settings, device="cpu", reference_image=png)
    assert result.metadata["stages"] == "coarse,fine"
    assert result.metadata["reference"]["mask_source"] == "alpha"
    assert {"ref_rgb", "ref_mask", "sds"} <= set(result.metadata["final_losses"])       # the fine stage's
    assert {"ref_rgb", "ref_mask"} <= set(result.metadata["coarse_final_losses"])
    mesh = load_glb(result.glb)
    truth = ground_truth(PROMPT)
    score, _ = best_yaw_iou(voxelize(mesh.vertices, mesh.faces, 64), truth.sdf, period=truth.yaw_period)
    assert score > 0.5, score
