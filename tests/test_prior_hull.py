"""``shape_init`` "prior-hull": the coarse field started on the visual hull of the prompt's prior samples.

The backdrop fit and the hull on pictures whose silhouettes are known (a disk, a sphere seen from the
sampler's cameras), then the whole start through ``prepare_generation`` with the built-in prior: the field
holds the cube's corners, which the default ball of density does not reach, and nothing beside it; a mug's
hull starts open from the top.
"""

import numpy as np
import pytest
import torch

from backend.engine.cameras import camera_rays, orbit_cameras
from backend.engine.prior_hull import SAMPLES_PER_VIEW, VIEWS, ELEVATION, foreground, visual_hull
from shared.settings import GenerationSettings, SettingError

SIZE = 64


def _backdrop(size: int = SIZE) -> np.ndarray:
    """A smooth colour gradient, as the prior draws behind its objects."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    return np.stack([0.55 + 0.2 * xx, 0.45 + 0.15 * yy, 0.7 - 0.1 * xx * yy], -1)


def test_foreground_is_the_object_not_the_gradient_behind_it():
    image = _backdrop()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    disk = (xx - 30) ** 2 + (yy - 34) ** 2 < 12 ** 2
    image[disk] = (0.8, 0.1, 0.1)
    found = foreground(image)
    assert (found & disk).sum() / (found | disk).sum() > 0.8       # the disk, dilated a pixel
    assert disk[found].mean() > 0.75 and not found[:3].any() and not found[-3:].any()


def _sphere_pictures(radius: float, cams) -> np.ndarray:
    """Each camera's picture of a red sphere at the origin on the gradient, SAMPLES_PER_VIEW times."""
    origins, dirs = camera_rays(cams, SIZE)
    b = (origins * dirs).sum(-1)
    hit = (b * b - ((origins * origins).sum(-1) - radius**2) >= 0) & (b < 0)
    pictures = []
    for k in range(len(VIEWS)):
        image = _backdrop()
        image[hit[k].numpy()] = (0.8, 0.1, 0.1)
        pictures += [image] * SAMPLES_PER_VIEW
    return np.stack(pictures)


def test_visual_hull_of_a_spheres_silhouettes_holds_the_sphere_and_little_else():
    cams = orbit_cameras(ELEVATION, VIEWS, 1.8, 50.0)
    hull = visual_hull(_sphere_pictures(0.4, cams), cams, grid=48)
    c = np.linspace(-1, 1, 48)
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    sphere = x**2 + y**2 + z**2 < 0.4**2
    assert hull[sphere].mean() > 0.97                              # the object is inside its hull
    # What eight views from 15 degrees up cannot carve: a keel under it, seen from none of them; at most a few
    # times the sphere's volume, and nothing beside it.
    assert hull.sum() < 3.0 * sphere.sum()
    assert not hull[(x**2 + y**2 > 0.55**2) & (np.abs(z) < 0.3)].any()


@pytest.fixture(scope="module")
def cube_starts():
    """Densities of the built-in prior's start for "a red cube": the prior's hull, and the default ball."""
    from backend.engine.trainer import prepare_generation
    from backend.prior import recommended_settings
    from backend.prior.catalogue import ground_truth

    torch.manual_seed(0)
    points = torch.rand(100000, 3) * 2 - 1
    with torch.no_grad():
        sdf = ground_truth("a red cube").sdf(points)
    corners = points[(sdf < -0.02) & (points.norm(dim=-1) > 0.52)]                 # the cube's, past the ball
    beside = points[(points[:, :2].norm(dim=-1) > 0.75) & (points[:, 2].abs() < 0.3)]   # well off its sides
    out = {}
    for init in ("prior-hull", "blob"):
        settings = GenerationSettings.from_dict({**recommended_settings(), "prompt": "a red cube", "steps": 10,
                                                 "stages": "coarse", "shape_init": init})
        field = prepare_generation(settings, device="cpu").trainer.field
        field.eval()
        with torch.no_grad():
            out[init] = (field.density(corners).numpy(), field.density(beside).numpy(), field.albedo(corners).numpy())
    return out


def test_the_prior_hull_start_has_the_cubes_corners_the_ball_lacks(cube_starts):
    corners_hull, beside_hull, albedo_hull = cube_starts["prior-hull"]
    corners_blob, _, albedo_blob = cube_starts["blob"]
    assert len(corners_hull) > 200
    assert (corners_hull > 5.0).mean() > 0.8 and (corners_blob > 5.0).mean() < 0.2
    assert (beside_hull > 5.0).mean() < 0.05
    # Only the density moved: the albedo is the ball's untrained grey (not a tint the fit dragged it to).
    assert np.abs(albedo_hull - albedo_blob).max(1).mean() < 0.02


def test_a_containers_hull_starts_open_from_the_top():
    from backend.engine.trainer import prepare_generation
    from backend.prior import recommended_settings

    settings = GenerationSettings.from_dict({**recommended_settings(), "prompt": "a red mug", "steps": 10,
                                             "stages": "coarse", "shape_init": "prior-hull"})
    field = prepare_generation(settings, device="cpu").trainer.field
    field.eval()
    angle, radius = torch.linspace(0, 2 * np.pi, 33)[:-1], torch.linspace(0.0, 0.8, 41)
    rays = torch.stack([radius[None] * angle.cos()[:, None], radius[None] * angle.sin()[:, None],
                        torch.zeros(32, 41)], -1)                                   # outwards from the axis, z = 0
    with torch.no_grad():
        centre = field.density(torch.tensor([[0.0, 0.0, z] for z in (-0.1, 0.0, 0.1)]))
        along = field.density(rays.reshape(-1, 3)).reshape(32, 41)
    assert (centre < 1.0).all()                          # the cavity, where the prior's hull was filled
    assert ((along > 5.0).any(1)).float().mean() > 0.8   # a wall around it, every way out


def test_prior_hull_is_for_text_jobs():
    with pytest.raises(SettingError) as e:
        GenerationSettings.from_dict({"prompt": "", "guidance_type": "zero123", "shape_init": "prior-hull"}).validate()
    assert e.value.name == "shape_init" and "blob" in str(e.value)
    with pytest.raises(SettingError) as e:
        GenerationSettings.from_dict({"prompt": "a red cube", "shape_init": "hull"})
    assert e.value.name == "shape_init" and "prior-hull" in str(e.value)


def test_a_staged_run_starts_its_coarse_stage_on_the_hull():
    """The presets run coarse + fine (``run_staged``): the setting must reach that path's coarse field too
    (stopped at its first step: the start is what is asked)."""
    from backend.engine.api import generate
    from backend.engine.types import Cancelled
    from backend.prior import recommended_settings

    events = []
    settings = GenerationSettings.from_dict({**recommended_settings(), "prompt": "a red cube",
                                             "stages": "coarse,fine", "shape_init": "prior-hull"})
    with pytest.raises(Cancelled):
        generate(settings, device="cpu", callback=events.append, should_cancel=lambda: True)
    starts = [e.message for e in events if e.stage == "init" and e.step == 0]
    assert "fitting the field to the prior's visual hull" in starts
