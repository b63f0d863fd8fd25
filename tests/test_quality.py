"""Quality benchmark: the metrics on analytic meshes, and a 2-prompt CPU run of the real pipeline."""

import json

import numpy as np
import pytest
import torch

from backend.bench import metrics as M
from backend.prior import available, shapes
from tests.helpers import load_rgb, object_fraction


def analytic_export(shape, yaw=0.0, colour=(0.85, 0.1, 0.1), resolution=96, vertex_colors=False, shift=(0, 0, 0)):
    """A canonical shape through the real exporter (density from its SDF)."""
    from backend.export.mesh import export_field

    offset = torch.tensor(shift, dtype=torch.float32)

    def density(p):
        return 100.0 * torch.sigmoid(-shapes.sdf(shape, shapes.rotate_z(p - offset, -yaw)) / 0.01)

    def albedo(p):
        return torch.tensor(colour).expand(len(p), 3)

    return export_field(density, albedo, resolution=resolution, threshold=None, keep_components=1, face_budget=20000,
                        texture_size=256, vertex_colors=vertex_colors)


def sdf_of(shape):
    return lambda p: shapes.sdf(shape, p)


@pytest.mark.parametrize("vertex_colors", [False, True])
def test_glb_comes_back_in_engine_coordinates_with_its_colours(vertex_colors):
    result = analytic_export("cone", vertex_colors=vertex_colors, resolution=64)
    mesh = M.load_glb(result.glb)
    assert np.abs(mesh.vertices - result.vertices).max() < 1e-5          # glTF axis change undone
    assert mesh.vertices[:, 2].max() == pytest.approx(shapes.CONE_HALF_H, abs=0.05)   # apex up (engine Z)
    pts, face, bary = M.sample_surface(mesh.vertices, mesh.faces, 2000, np.random.default_rng(0))
    colours = mesh.colors_at(face, bary)
    assert np.abs(colours - [0.85, 0.1, 0.1]).max() < 0.01


@pytest.mark.parametrize("shape", ["sphere", "torus", "capsule"])
def test_voxelized_export_matches_the_ground_truth(shape):
    mesh = M.load_glb(analytic_export(shape).glb)
    occ = M.voxelize(mesh.vertices, mesh.faces, 64)
    assert M.iou(occ, M.sdf_occupancy(sdf_of(shape), 64)) > 0.95


def test_best_yaw_recovers_a_rotated_cube():
    mesh = M.load_glb(analytic_export("cube", yaw=30.0).glb)
    occ = M.voxelize(mesh.vertices, mesh.faces, 64)
    assert M.iou(occ, M.sdf_occupancy(sdf_of("cube"), 64)) < 0.85          # unrotated: clearly worse
    best, yaw = M.best_yaw_iou(occ, sdf_of("cube"), period=shapes.YAW_PERIOD["cube"])
    assert best > 0.95 and min(abs(yaw - 30.0), abs(yaw - 30.0 + 90)) <= 1.0


def test_metrics_penalise_wrong_size_position_and_colour():
    truth = analytic_export("sphere", resolution=64)
    good = M.evaluate_mesh(M.load_glb(truth.glb), sdf_of("sphere"), (0.85, 0.1, 0.1), period=0)
    assert good["iou"] > 0.95 and good["chamfer"] < 0.015 and good["albedo_error"] < 0.01
    moved = M.evaluate_mesh(M.load_glb(analytic_export("sphere", resolution=64, shift=(0, 0, 0.2)).glb),
                            sdf_of("sphere"), (0.85, 0.1, 0.1), period=0)
    assert moved["iou"] < 0.6 and moved["chamfer"] > 0.1
    blue = M.evaluate_mesh(M.load_glb(truth.glb), sdf_of("sphere"), (0.12, 0.25, 0.85), period=0)
    assert blue["albedo_error"] == pytest.approx((0.73 + 0.15 + 0.75) / 3, abs=0.01)
    empty = M.evaluate_mesh(M.LoadedMesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64)), sdf_of("sphere"),
                            (1, 0, 0))
    assert empty["empty"] and empty["iou"] == 0.0


def test_chamfer_is_zero_for_identical_sets_and_the_offset_for_shifted_ones():
    rng = np.random.default_rng(0)
    a = rng.random((500, 3))
    a[:, 2] = 0.0                                     # a flat patch: its copy 0.5 above is 0.5 away
    assert M.chamfer(a, a) == 0.0
    assert M.chamfer(a, a + [0.0, 0.0, 0.5]) == pytest.approx(0.5)


def test_summary_applies_the_targets():
    from backend.bench.quality import summarise

    good = [{"iou": 0.8, "albedo_error": 0.05, "chamfer": 0.02, "wall_s": 1.0}] * 3
    assert summarise(good)["passed"]
    assert not summarise(good + [{"iou": 0.45, "albedo_error": 0.05, "chamfer": 0.02, "wall_s": 1.0}])["passed"]
    assert not summarise(good + [{"iou": 0.0, "albedo_error": 1.0, "chamfer": float("nan"), "empty": True,
                                  "wall_s": 1.0}])["passed"]
    assert not summarise(good + [{"skipped": True}])["passed"]


def test_bench_cli(capsys):
    from backend.__main__ import main

    assert main(["bench", "speed"]) == 2          # no CUDA here: a clear message, not a crash
    assert "needs a CUDA GPU" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "quality", "--help"])
    assert exit_info.value.code == 0
    from backend.bench.quality import expand_prompts

    assert expand_prompts(["cube"])[0] == "a red cube" and len(expand_prompts(["cube"])) == 8
    assert expand_prompts(["orange torus", "a blue cone"]) == ["an orange torus", "a blue cone"]
    with pytest.raises(ValueError):
        expand_prompts(["a red dragon"])


@pytest.mark.slow
@pytest.mark.skipif(not available(), reason="backend/prior/weights is not installed")
def test_builtin_prior_recovers_a_cube_and_a_sphere_on_cpu(tmp_path):
    """The whole product on CPU with its default settings for the built-in prior: generate, export
    the GLB, load it back and compare with the analytic shape (the benchmark's CPU subset)."""
    from backend.bench.quality import CPU_SUBSET, main

    torch.set_num_threads(max(1, torch.get_num_threads()))
    assert main(["--device", "cpu", "--prompts", *CPU_SUBSET, "--seeds", "0", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "quality.json").read_text())["results"]
    assert [r["prompt"] for r in results] == ["a red cube", "a blue sphere"]
    for r in results:
        assert not r.get("error") and not r["empty"], r
        assert r["iou"] >= 0.5, r
    # The report holds the numbers of quality.json: each prompt's row and the seed's verdict row.
    md = (tmp_path / "quality.md").read_text()
    for r in results:
        assert f"| {r['prompt']} | {r['iou']:.3f} | {r['albedo_error']:.3f} | {r['chamfer']:.4f} |" in md, r
    ious = [r["iou"] for r in results]
    assert f"| 0 | 2 | {np.mean(ious):.3f} | {min(ious):.3f} | " in md
    # The turntable grid: the two results side by side, each a label and its 8-view strip (96 px
    # views) in which the object shows in every view.
    grid = load_rgb(tmp_path / "turntables_seed0.png")
    cell_w = 190 + 8 * 96 + 4
    assert grid.shape == (96 + 4, 2 * cell_w, 3)
    for i in range(2):
        strip = grid[:96, i * cell_w + 190: i * cell_w + 190 + 8 * 96]
        assert all(object_fraction(view, (255, 255, 255)) > 0.01 for view in np.split(strip, 8, axis=1)), i
