"""``mesh_level`` "silhouette": the coarse iso-level matched to the field's own rendered silhouettes
(``backend/engine/silhouette_level.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scipy import ndimage

from backend.engine.cameras import camera_rays, orbit_cameras
from backend.engine.silhouette_level import keep_body, largest_density_along, level_covering
from backend.export.mesh import auto_threshold, density_grid, surface_from_grid

N = 96
DISTANCE, FOVY = 1.8, 50.0


def soft_ball(radius: float, width: float, peak: float = 20.0):
    """A field like a coarse NeRF's: a plateau of ``peak`` inside ``radius``, a skin ``width`` wide."""
    def density(x: torch.Tensor) -> torch.Tensor:
        return peak * torch.sigmoid((radius - x.norm(dim=-1)) / width)
    return density


def views():
    cams = orbit_cameras(15.0, [0.0, 90.0, 200.0], DISTANCE, FOVY)
    origins, directions = camera_rays(cams, 64)
    return origins.reshape(-1, 3), directions.reshape(-1, 3)


def disc_pixels(origins: torch.Tensor, directions: torch.Tensor, radius: float) -> int:
    """The pixels a sphere of ``radius`` at the origin covers: rays passing closer than it to the centre."""
    along = (-origins * directions).sum(-1, keepdim=True)
    miss = (origins + along * directions).norm(dim=-1)
    return int((miss < radius).sum())


def surface_radius(grid: np.ndarray, level: float) -> float:
    vertices, _ = surface_from_grid(grid, level, bound=1.0, keep_components=1)
    return float(np.median(np.linalg.norm(vertices, axis=1)))


@pytest.mark.parametrize("seen", [0.40, 0.48])
def test_the_level_puts_the_surface_on_the_silhouettes_the_renders_cover(seen):
    """A soft ball whose skin spans radius ~0.38-0.50: whether its renders cover a disc of radius 0.40 or
    0.48, the matched level's iso-surface has that radius within a grid cell, while the automatic level
    (density values alone) puts it at the same radius for both."""
    grid = density_grid(soft_ball(0.44, 0.02), resolution=N)
    origins, directions = views()
    largest = largest_density_along(grid, origins, directions, bound=1.0, t_near=0.0, t_far=DISTANCE + 1.8)
    level = level_covering(largest, disc_pixels(origins, directions, seen))
    cell = 2.0 / (N - 1)
    assert abs(surface_radius(grid, level) - seen) < cell
    assert abs(surface_radius(grid, auto_threshold(grid)) - 0.44) < cell


def test_largest_density_along_reads_the_grid_where_the_ray_passes():
    """A ray through the ball's centre meets its plateau; one passing outside the ball meets nothing."""
    grid = density_grid(soft_ball(0.3, 0.01), resolution=N)
    origins = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.6, 0.0]])
    directions = torch.tensor([[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    largest = largest_density_along(grid, origins, directions, bound=1.0, t_near=0.0, t_far=4.0)
    assert largest[0] > 19.0 and largest[1] < 0.01
    assert math.isinf(level_covering(largest, 0))


def test_a_raised_level_trims_the_skin_not_the_body():
    """A ball whose body is weaker than its shell (a box SDS drew as a shell): a level above the body's
    density would empty it; ``keep_body`` lowers it until the solid keeps 80% of the automatic level's,
    and leaves a level that only trims the skin as it is."""
    def shell(x: torch.Tensor) -> torch.Tensor:
        r = x.norm(dim=-1)
        skin = 30.0 * torch.sigmoid((0.45 - r) / 0.02)
        return torch.where(r < 0.38, torch.full_like(r, 4.0), skin)
    grid = density_grid(shell, resolution=64)
    automatic = auto_threshold(grid)
    base = (grid > automatic).sum()
    too_high = 6.0 * automatic
    assert (grid > too_high).sum() < 0.5 * base                    # the body would go
    kept = keep_body(grid, automatic, too_high)
    assert automatic < kept < too_high
    assert (grid > kept).sum() >= 0.8 * base
    trim = automatic * 1.05
    assert (grid > trim).sum() >= 0.8 * base
    assert keep_body(grid, automatic, trim) == trim
    assert keep_body(grid, automatic, 0.5 * automatic) == 0.5 * automatic     # lowering is never limited


def test_a_run_exports_and_hands_over_at_the_level_its_setting_asks(tiny_model_path, monkeypatch):
    """A real coarse field (tiny SD-layout model, a few steps): with ``mesh_level`` "density" the export's
    level is the automatic one; with "silhouette" it is the matched level, within its range of the
    automatic one, and the export uses it; a ``mesh_threshold`` given wins over both."""
    from backend.engine import silhouette_level as module
    from backend.engine.silhouette_level import LEVEL_RANGE, coarse_iso, silhouette_level
    from backend.engine.trainer import BOUND, prepare_generation
    from tests.helpers import tiny_settings

    monkeypatch.setattr(module, "VIEW_RESOLUTION", 32)       # the rule as it runs, on fewer rays
    monkeypatch.setattr(module, "VIEW_AZIMUTHS", 4)

    run = prepare_generation(tiny_settings(steps=3, mesh_level="silhouette"), device="cpu")
    trainer = run.trainer
    for _ in range(3):
        trainer.train_step()
    trainer.field.eval()
    grid = density_grid(trainer.occupied_density, resolution=trainer.s.mesh_resolution, bound=BOUND)
    automatic = auto_threshold(grid)
    matched = silhouette_level(trainer, grid, bound=BOUND)
    assert LEVEL_RANGE[0] * automatic <= matched <= LEVEL_RANGE[1] * automatic
    assert matched != pytest.approx(automatic, rel=1e-3)
    assert coarse_iso(trainer, grid, bound=BOUND)[1] == pytest.approx(matched)
    assert trainer.export().threshold == pytest.approx(matched, rel=1e-4)
    monkeypatch.setattr(module, "body_weight", lambda *args, **kwargs: 0.0)   # an object of thin parts
    assert silhouette_level(trainer, grid, bound=BOUND) == pytest.approx(automatic)
    trainer.s = trainer.s.replace(mesh_level="density")
    assert coarse_iso(trainer, grid, bound=BOUND)[1] == pytest.approx(automatic)
    trainer.s = trainer.s.replace(mesh_threshold=3.0)
    assert coarse_iso(trainer, grid, bound=BOUND)[1] == 3.0


def test_a_raised_level_does_not_cut_a_thin_part_through():
    """Two bulbs joined by a thin rod of lower density (a lamp post's head and foot on its pole): a level
    above the rod's density keeps most of the solid, but in two pieces, and the export keeps one; so
    ``keep_body`` judges the largest piece and lowers the level until the rod holds them together."""
    def dumbbell(x: torch.Tensor) -> torch.Tensor:
        bulbs = torch.minimum((x - torch.tensor([0.0, 0.0, 0.45])).norm(dim=-1),
                              (x + torch.tensor([0.0, 0.0, 0.45])).norm(dim=-1))
        bulb = 60.0 * torch.sigmoid((0.25 - bulbs) / 0.005)
        rod = 40.0 * torch.sigmoid((0.06 - x[..., :2].norm(dim=-1)) / 0.01) * (x[..., 2].abs() < 0.5)
        return torch.maximum(bulb, rod)
    grid = density_grid(dumbbell, resolution=64)
    automatic = auto_threshold(grid)
    assert automatic < 40.0
    too_high = 45.0
    assert (grid > too_high).sum() >= 0.8 * (grid > automatic).sum()    # the whole solid would pass
    pieces_at = lambda level: ndimage.label(grid > level)[1]
    assert pieces_at(automatic) == 1 and pieces_at(too_high) == 2
    kept = keep_body(grid, automatic, too_high)
    assert automatic <= kept < 40.0 and pieces_at(kept) == 1


def test_a_raised_level_trims_the_body_and_leaves_a_thin_part_as_it_was():
    """A soft ball on a soft pole (a lamp post's head on its pole): the raised level takes the ball's skin off,
    and ``keep_thin_parts`` leaves the pole as the automatic level draws it, where the raised level alone
    would thin it to a thread."""
    from backend.engine.silhouette_level import keep_thin_parts

    def ball_on_pole(x: torch.Tensor) -> torch.Tensor:
        head = 40.0 * torch.sigmoid((0.3 - (x - torch.tensor([0.0, 0.0, 0.3])).norm(dim=-1)) / 0.03)
        pole = 40.0 * torch.sigmoid((0.03 - x[..., :2].norm(dim=-1)) / 0.015) * (x[..., 2] > -0.8)
        return torch.maximum(head, pole)
    grid = density_grid(ball_on_pole, resolution=128)
    automatic = auto_threshold(grid)
    level = 1.5 * automatic
    kept = keep_thin_parts(grid, automatic, level)
    pole_slice, head_slice = 25, 85                  # z = -0.61 (pole), z = 0.34 (the head's widest)
    pole_at = lambda g, lv: int((g[:, :, pole_slice] > lv).sum())
    assert pole_at(grid, level) < 0.7 * pole_at(grid, automatic)            # the raise alone thins the pole
    assert pole_at(kept, level) == pole_at(grid, automatic)                  # kept as it was
    head_at = lambda g, lv: int((g[:, :, head_slice] > lv).sum())
    assert head_at(kept, level) == head_at(grid, level) < head_at(grid, automatic)   # the head trimmed
    assert keep_thin_parts(grid, automatic, 0.8 * automatic) is grid        # a lowered level changes nothing


def test_only_a_bulky_object_takes_the_matched_level():
    """``body_weight``: a ball 0.44 in radius (a cube's, a house's bulk) takes all of the matched level; a board
    0.04 half-thick and a ring-walled cup (a fence's, a mug's thickest parts) none of it, so that the level and the
    fine stage's thin-part inset do not both correct a thin part; in between, part of it."""
    from backend.engine.silhouette_level import BODY_THICK, BODY_THIN, body_weight

    def slab(half: float):
        def density(x: torch.Tensor) -> torch.Tensor:
            inside = torch.minimum(half - x[..., 0].abs(), 0.4 - x[..., 1:].abs().amax(-1))
            return 20.0 * torch.sigmoid(inside / 0.01)
        return density

    def cup(x: torch.Tensor) -> torch.Tensor:
        r = x[..., :2].norm(dim=-1)
        wall = torch.minimum(0.03 - (r - 0.3).abs(), 0.3 - x[..., 2].abs())
        return 20.0 * torch.sigmoid(wall / 0.01)

    for field, want in ((soft_ball(0.44, 0.02), 1.0), (slab(0.04), 0.0), (cup, 0.0)):
        grid = density_grid(field, resolution=128)
        assert body_weight(grid, auto_threshold(grid)) == pytest.approx(want, abs=1e-6)
    middle = 0.5 * (BODY_THIN + BODY_THICK)
    grid = density_grid(slab(middle), resolution=128)
    assert 0.2 < body_weight(grid, auto_threshold(grid)) < 0.8


def test_a_bulky_start_at_the_matched_level_is_drawn_less_far_inside_and_a_resume_keeps_it(tiny_model_path,
                                                                                            monkeypatch, tmp_path):
    """The fine stage's render offset at the hand-over: at most ``MATCHED_RENDER_OFFSET`` for an object that took the
    matched level (``body_weight`` 1), the setting's own for one that kept the automatic level (0), in between in
    between; a user's lower offset is kept. A fine checkpoint carries it: a resumed fine stage draws the surface as it
    started. Break: ``FineTrainer.load_checkpoint`` not reading it back (the setting's 1.5 again)."""
    from backend.engine import silhouette_level as module
    from backend.engine.fine import FineTrainer
    from backend.engine.silhouette_level import MATCHED_RENDER_OFFSET, fine_render_offset
    from backend.engine.trainer import prepare_generation
    from tests.helpers import tiny_settings

    assert fine_render_offset(1.5, 1.0) == MATCHED_RENDER_OFFSET == 1.0
    assert fine_render_offset(1.5, 0.0) == 1.5 and fine_render_offset(1.5, 0.5) == pytest.approx(1.25)
    assert fine_render_offset(0.5, 1.0) == 0.5

    monkeypatch.setattr(module, "VIEW_RESOLUTION", 32)
    monkeypatch.setattr(module, "VIEW_AZIMUTHS", 4)
    settings = tiny_settings(steps=3, mesh_level="silhouette", stages="coarse,fine", mesh_resolution=64)
    run = prepare_generation(settings.replace(stages="coarse"), device="cpu")
    for _ in range(3):
        run.trainer.train_step()
    for weight, want in ((1.0, 1.0), (0.0, 1.5)):
        monkeypatch.setattr(module, "body_weight", lambda *args, w=weight, **kwargs: w)
        fine = FineTrainer(settings, run.guidance, run.device)
        fine.init_from_coarse(run.trainer)
        assert fine.field.render_offset == pytest.approx(want)
    monkeypatch.setattr(module, "body_weight", lambda *args, **kwargs: 1.0)
    fine = FineTrainer(settings, run.guidance, run.device)
    fine.init_from_coarse(run.trainer)
    path = str(tmp_path / "fine.pt")
    fine.save_checkpoint(path)
    resumed = FineTrainer(settings, run.guidance, run.device)
    assert resumed.field.render_offset == pytest.approx(1.5)          # the setting's, until the checkpoint is read
    resumed.load_checkpoint(path)
    assert resumed.field.render_offset == pytest.approx(1.0)
