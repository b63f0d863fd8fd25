"""``seal_radius``: the hollows hidden inside an exported object filled (``export.mesh.seal_pores``).

An SDS-trained field holds nothing up inside an object, and a cube made from one picture came out a shell over
caverns opening to the air through pits a cell or two wide. These check the grid operation (a hollow behind a
pore filled, the outside untouched, a cup's mouth and a handle's loop kept) and the export that uses it (the
mesh closed over the hollow: one surface, genus 0, the volume of the solid).
"""

import numpy as np
import pytest
import torch
import trimesh

from backend.export.mesh import export_field, seal_pores
from tests.test_fine import box_sdf, cup_with_handle

AXIS = np.linspace(-1.0, 1.0, 128)
POINTS = np.stack(np.meshgrid(AXIS, AXIS, AXIS, indexing="ij"), axis=-1)


def sponge_cube(points: np.ndarray, pore_radius: float = 0.015) -> np.ndarray:
    """Signed distance (near enough) of a cube (half 0.4) with a hollow inside it (a box of half 0.2 off
    centre) that opens to the +x face through a pore 0.03 wide: the shape a one-picture cube came out as."""
    cube = box_sdf(points, (0.0, 0.0, 0.0), (0.4, 0.4, 0.4))
    hollow = box_sdf(points, (0.1, 0.0, 0.0), (0.2, 0.2, 0.2))
    pore = np.maximum(np.hypot(points[..., 1], points[..., 2]) - pore_radius, np.abs(points[..., 0] - 0.4) - 0.15)
    return np.maximum(cube, -np.minimum(hollow, pore))


def test_seal_pores_fills_a_hollow_behind_a_pore_and_leaves_the_outside_where_it_is():
    inside = (-sponge_cube(POINTS)).astype(np.float32)
    solid = (-box_sdf(POINTS, (0.0, 0.0, 0.0), (0.4, 0.4, 0.4))) > 0
    hollow = box_sdf(POINTS, (0.1, 0.0, 0.0), (0.2, 0.2, 0.2)) < -0.01
    assert not (inside > 0)[hollow].any()                 # the hollow is air before
    sealed = seal_pores(inside, 0.0, 0.05) > 0
    assert sealed[hollow].all()                           # and solid after
    assert not (sealed & ~solid).any()                    # nothing added outside the cube
    # The cube's cells all solid but the last few cells of the pore's mouth (a dimple ceil(r/2) + 1 cells deep).
    mouth = (np.hypot(POINTS[..., 1], POINTS[..., 2]) < 0.03) & (POINTS[..., 0] > 0.4 - 0.07)
    assert sealed[solid & ~mouth].all()
    assert (sealed[solid] == False).sum() < 0.002 * solid.sum()   # noqa: E712 - counting the cells left open
    assert seal_pores(inside, 0.0, 0.0) is inside          # off: the grid as it was


def test_seal_pores_keeps_a_cups_mouth_a_handles_loop_and_concave_corners():
    cup = (-cup_with_handle(POINTS)).astype(np.float32)
    assert np.array_equal(seal_pores(cup, 0.0, 0.05) > 0, cup > 0)
    # an L of two boxes: its inner corner (concave) is where a closing would fill a fillet
    ell = (-np.minimum(box_sdf(POINTS, (0.0, 0.0, -0.3), (0.4, 0.4, 0.1)),
                       box_sdf(POINTS, (-0.3, 0.0, 0.0), (0.1, 0.4, 0.4)))).astype(np.float32)
    assert np.array_equal(seal_pores(ell, 0.0, 0.05) > 0, ell > 0)
    # a hollow whose opening is wider than the ball: a box open on one side stays open
    box = np.maximum(box_sdf(POINTS, (0.0, 0.0, 0.0), (0.4, 0.4, 0.4)),
                     -box_sdf(POINTS, (0.1, 0.0, 0.0), (0.4, 0.3, 0.3)))
    open_box = (-box).astype(np.float32)
    assert np.array_equal(seal_pores(open_box, 0.0, 0.05) > 0, open_box > 0)


def test_seal_pores_on_a_density_grid_uses_its_level():
    """A density grid (inside: above an auto threshold, not 0): the hollow's cells are lifted over the level."""
    density = np.where(sponge_cube(POINTS) < 0, 20.0, 0.0).astype(np.float32)
    hollow = box_sdf(POINTS, (0.1, 0.0, 0.0), (0.2, 0.2, 0.2)) < -0.01
    sealed = seal_pores(density, 10.0, 0.05)
    assert (sealed[hollow] > 10.0).all()
    assert np.array_equal(sealed[~hollow & (density > 10.0)], density[~hollow & (density > 10.0)])


def test_export_with_seal_radius_closes_the_mesh_over_the_hollow():
    """The export: with ``seal_radius`` one closed surface of genus 0 holding the solid's volume; without it,
    the hollow's walls are surface too (hidden faces, the hollow's volume missing)."""
    def density_of(sdf):
        def density(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy((sdf(x.numpy().astype(np.float64)) < 0).astype(np.float32) * 20.0)
        return density

    def albedo(x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 3), 0.5)

    def export(sdf, radius):
        result = export_field(density_of(sdf), albedo, resolution=128, threshold=10.0, keep_components=1,
                              face_budget=200000, texture_size=64, vertex_colors=True, seal_radius=radius)
        return trimesh.Trimesh(result.vertices, result.faces, process=True)

    sealed, open_ = export(sponge_cube, 0.05), export(sponge_cube, 0.0)
    solid = export(lambda p: box_sdf(p, (0.0, 0.0, 0.0), (0.4, 0.4, 0.4)), 0.0)    # the cube without its hollow
    assert sealed.is_watertight and sealed.euler_number == 2
    assert sealed.volume == pytest.approx(solid.volume, rel=0.005)
    assert open_.volume < solid.volume - 0.05              # the hollow (0.064) is missing from it
    # the hollow's walls are surface in the open one (hidden faces), not in the sealed one
    assert len(open_.faces) > 1.2 * len(solid.faces) and len(sealed.faces) < 1.02 * len(solid.faces)
    # the outside where the solid cube's is
    assert sealed.bounds == pytest.approx(solid.bounds, abs=1e-4)


@pytest.mark.parametrize("radius, filled", [(0.08, True), (0.0, False)])
def test_the_fine_stage_starts_on_the_sealed_solid(tiny_model_path, radius, filled):
    """The hand-over to the fine stage seals as the export does: a coarse field that is a shell over a hidden
    hollow starts the fine stage's SDF solid through the hollow (with ``seal_radius`` 0: hollow)."""
    from backend.engine.fine import FineTrainer
    from backend.engine.guidance import load_guidance
    from backend.engine.trainer import Trainer
    from tests.test_fine import fine_settings

    settings = fine_settings(seal_radius=radius)
    guidance = load_guidance("tiny-random", "cpu")
    coarse = Trainer(settings, guidance, torch.device("cpu"))
    # the coarse field's density: the sponge cube's, a NeRF-like plateau with a soft skin, its pore 0.12 wide
    # (open on the fine stage's 128^3 start grid, narrower than the 0.16 a seal of radius 0.08 closes)
    coarse.occupied_density = lambda x: 20.0 * torch.sigmoid(
        torch.from_numpy(-sponge_cube(x.detach().cpu().numpy().astype(np.float64), 0.06)).float() / 0.01)
    fine = FineTrainer(settings, guidance, torch.device("cpu"))
    fine.init_from_coarse(coarse)
    hollow_centre, cube_wall = torch.tensor([[0.1, 0.0, 0.0]]), torch.tensor([[-0.3, 0.0, 0.0]])
    with torch.no_grad():
        assert fine.inside(cube_wall).item() > 0
        assert (fine.inside(hollow_centre).item() > 0) == filled
