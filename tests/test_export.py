"""Export stage: marching cubes, cleanup, decimation, UV bake, GLB, proxy, turntable.

Real libraries on analytic fields (spheres, ellipsoids with a bump) whose right answer is known.
"""

import io
import json
import struct

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from scipy import ndimage

from backend.export.mesh import (ENGINE_TO_GLTF, EmptyMeshError, auto_threshold, bake_texture, sample_bilinear,
                                 density_grid, export_field, extract_mesh, proxy_glb, simplify_mesh,
                                 to_glb, unwrap_uv)
from backend.export.raster import rasterize
from backend.export.turntable import render_turntable, turntable_png

R0 = 0.5
PEAK = 50.0


def ball(p, center=(0.0, 0.0, 0.0), radius=R0, axes=(1.0, 1.0, 1.0), sharpness=60.0):
    """Density PEAK inside an ellipsoid, 0 outside, with a smooth wall; PEAK/2 exactly on it."""
    q = (p - p.new_tensor(center)) / p.new_tensor(axes)
    return PEAK * torch.sigmoid((radius - torch.linalg.vector_norm(q, dim=1)) * sharpness)


def sphere(p):
    return ball(p)


def empty(p):
    return torch.zeros(len(p))


def position_colour(p):
    """A colour that is linear in position: exact to check anywhere on a flat triangle."""
    return ((p + 1.0) / 2.0).clamp(0.0, 1.0)


def tall_with_bump(p):
    """Tall along engine Z, with a bump on the +X side."""
    return torch.maximum(ball(p, axes=(0.6, 0.6, 1.4)), ball(p, center=(0.3, 0.0, 0.0), radius=0.12))


def signed_volume(vertices, faces):
    v = np.asarray(vertices, np.float64)[faces]
    return np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0


def gltf_json(glb: bytes) -> dict:
    length, kind = struct.unpack("<I4s", glb[12:20])
    assert kind == b"JSON"
    return json.loads(glb[20:20 + length])


def load_glb(glb: bytes) -> trimesh.Trimesh:
    scene = trimesh.load(io.BytesIO(glb), file_type="glb", process=False)
    (mesh,) = scene.geometry.values()
    return mesh


def bilinear(texture, uv):
    """Reference bilinear lookup (scipy), texel centres at (i + 0.5) / size, v = 0 at the bottom."""
    size = texture.shape[0]
    rows, cols = (1.0 - uv[:, 1]) * size - 0.5, uv[:, 0] * size - 0.5
    return np.stack([ndimage.map_coordinates(texture[..., c].astype(np.float64) / 255.0, [rows, cols],
                                             order=1, mode="nearest") for c in range(3)], axis=1)


@pytest.mark.parametrize("height,width", [(16, 16), (8, 32), (4, 1), (1, 1)])
def test_sample_bilinear_clamps_to_edge_like_scipy(height, width):
    """The one bilinear lookup (turntable and quality metrics) against scipy's, edges included:
    uvs outside [0, 1] and within half a texel of the border take the edge texels."""
    rng = np.random.default_rng(height * 100 + width)
    texture = rng.random((height, width, 3))
    uv = np.concatenate([rng.uniform(-0.3, 1.3, (500, 2)), [[0, 0], [1, 1], [0, 1], [1, 0], [0.5, 0.5]]])
    rows, cols = (1.0 - uv[:, 1]) * height - 0.5, uv[:, 0] * width - 0.5
    expected = np.stack([ndimage.map_coordinates(texture[..., c], [rows, cols], order=1, mode="nearest")
                         for c in range(3)], axis=1)
    assert np.abs(sample_bilinear(texture, uv) - expected).max() < 1e-12


# -- iso-surface --------------------------------------------------------------------------------

def test_marching_cubes_sphere_radius_and_outward_winding():
    vertices, faces = extract_mesh(sphere, resolution=64, threshold=PEAK / 2)
    radius = np.linalg.norm(vertices, axis=1)
    assert vertices.dtype == np.float32 and faces.dtype == np.int32
    assert abs(radius.mean() - R0) < 0.02 * R0
    assert signed_volume(vertices, faces) == pytest.approx(4 / 3 * np.pi * R0 ** 3, rel=0.05)


@pytest.mark.parametrize("radius, haze, tolerance", [
    (R0, 0.0, 0.02), (R0, 0.5, 0.02), (R0, 5.0, 0.02), (R0, 20.0, 0.02),
    (0.15, 0.5, 0.05),       # small: most of its voxels are soft wall
])
def test_auto_threshold_finds_the_surface_through_haze(radius, haze, tolerance):
    def field(p):
        return ball(p, radius=radius) + haze

    assert haze < auto_threshold(density_grid(field, resolution=64)) < PEAK + haze
    vertices, faces = extract_mesh(field, resolution=64)
    assert abs(np.linalg.norm(vertices, axis=1).mean() - radius) < tolerance * radius


def test_keep_components_drops_floaters():
    def with_floater(p):
        return torch.maximum(sphere(p), ball(p, center=(0.75, 0.75, 0.75), radius=0.1))

    vertices, _ = extract_mesh(with_floater, resolution=64, keep_components=1)
    assert np.linalg.norm(vertices, axis=1).max() < R0 + 0.05
    vertices, _ = extract_mesh(with_floater, resolution=64, keep_components=2)
    assert np.linalg.norm(vertices - 0.75, axis=1).min() < 0.15


def test_a_part_detached_by_a_cell_wide_gap_is_kept_a_far_or_tiny_one_is_not():
    """A head a cell above its body (a lamp post's lamp over its pole) is part of the object; the same head
    far off, or a speck beside the body, is a floater."""
    cell = 2.0 / 63

    def body_and(head_z, head_radius):
        return lambda p: torch.maximum(sphere(p), ball(p, center=(0.0, 0.0, head_z), radius=head_radius))

    vertices, _ = extract_mesh(body_and(R0 + 0.15 + 1.5 * cell, 0.15), resolution=64, keep_components=1)
    assert vertices[:, 2].max() > R0 + 0.25                       # the head is there
    vertices, _ = extract_mesh(body_and(R0 + 0.15 + 0.3, 0.15), resolution=64, keep_components=1)
    assert vertices[:, 2].max() < R0 + 0.05                       # far: a floater
    vertices, _ = extract_mesh(body_and(R0 + 0.04 + 1.5 * cell, 0.04), resolution=64, keep_components=1)
    assert vertices[:, 2].max() < R0 + 0.05                       # tiny: a floater


def test_empty_field_gives_empty_mesh_and_a_clear_error():
    vertices, faces = extract_mesh(empty, resolution=32)
    assert vertices.shape == (0, 3) and faces.shape == (0, 3)
    with pytest.raises(EmptyMeshError, match=r"threshold .*\[0, 0\].*empty"):
        export_field(empty, position_colour, resolution=32, threshold=None, keep_components=1,
                     face_budget=1000, texture_size=64, vertex_colors=False)


def test_too_high_threshold_says_what_to_change():
    with pytest.raises(EmptyMeshError, match=r"threshold 80.*Lower mesh_threshold below 50") as err:
        export_field(sphere, position_colour, resolution=32, threshold=80.0, keep_components=1,
                     face_budget=1000, texture_size=64, vertex_colors=False)
    assert err.value.threshold == 80.0 and err.value.density_max == pytest.approx(PEAK, rel=0.01)


def test_simplify_respects_the_budget():
    vertices, faces = extract_mesh(sphere, resolution=64, threshold=PEAK / 2)
    assert len(faces) > 9000
    small_v, small_f = simplify_mesh(vertices, faces, 2000)
    assert 1500 <= len(small_f) <= 2000
    assert np.array_equal(np.unique(small_f), np.arange(len(small_v)))     # no loose vertices
    assert abs(np.linalg.norm(small_v, axis=1).mean() - R0) < 0.03 * R0
    same_v, same_f = simplify_mesh(small_v, small_f, 5000)
    assert same_v is small_v and same_f is small_f


# -- UV bake ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def baked_sphere():
    vertices, faces = simplify_mesh(*extract_mesh(sphere, resolution=48, threshold=PEAK / 2), 3000)
    vertices, faces, uvs = unwrap_uv(vertices, faces, texture_size=256)
    texture = bake_texture(vertices, faces, uvs, position_colour, size=256)
    return vertices, faces, uvs, texture


def test_unwrap_gives_a_uv_per_vertex_in_the_unit_square(baked_sphere):
    vertices, faces, uvs, texture = baked_sphere
    assert uvs.shape == (len(vertices), 2) and faces.max() == len(vertices) - 1
    assert uvs.min() >= 0.0 and uvs.max() <= 1.0
    assert texture.shape == (256, 256, 3) and texture.dtype == np.uint8


def test_baked_texels_match_the_field_on_their_triangle(baked_sphere):
    vertices, faces, uvs, texture = baked_sphere
    size = texture.shape[0]
    rng = np.random.default_rng(0)
    face = rng.integers(0, len(faces), 4000)
    uv_tri = uvs[faces[face]].astype(np.float64)
    bary = rng.dirichlet([4.0, 4.0, 4.0], len(face))
    uv = np.einsum("kc,kcd->kd", bary, uv_tri)
    row = np.floor((1.0 - uv[:, 1]) * size).astype(int)
    col = np.floor(uv[:, 0] * size).astype(int)
    # The texel centre mapped to 3D through this triangle's (affine) UV -> 3D map.
    centre = np.stack([(col + 0.5) / size, 1.0 - (row + 0.5) / size], axis=1)
    b12 = np.linalg.solve(np.stack([uv_tri[:, 1] - uv_tri[:, 0], uv_tri[:, 2] - uv_tri[:, 0]], axis=2),
                          (centre - uv_tri[:, 0])[:, :, None])[:, :, 0]
    weights = np.column_stack([1.0 - b12.sum(axis=1), b12])
    point = np.einsum("kc,kcd->kd", weights, vertices[faces[face]].astype(np.float64))
    expected = (point + 1.0) / 2.0
    error = np.abs(texture[row, col] / 255.0 - expected)
    assert error.max() < 3.0 / 255.0


def test_bake_dilates_colours_across_chart_borders(baked_sphere):
    """Bilinear lookups on chart borders (edge midpoints) must read the surface, not background,
    at full resolution and at the next mip level."""
    vertices, faces, uvs, texture = baked_sphere
    uv = 0.5 * (uvs[faces[:, 0]] + uvs[faces[:, 1]])
    expected = (0.5 * (vertices[faces[:, 0]] + vertices[faces[:, 1]]) + 1.0) / 2.0
    assert np.abs(bilinear(texture, uv) - expected).max() < 0.03
    mip = texture.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    assert np.abs(bilinear(mip, uv) - expected).max() < 0.05


# -- GLB ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def textured_export():
    calls = []
    result = export_field(tall_with_bump, position_colour, resolution=48, threshold=None,
                          keep_components=1, face_budget=3000, texture_size=128, vertex_colors=False,
                          progress=lambda stage, fraction: calls.append((stage, fraction)))
    return result, calls


def test_export_reports_stages_and_counts(textured_export):
    result, calls = textured_export
    stages = ["density", "marching_cubes", "simplify", "uv_unwrap", "bake", "glb"]
    assert [stage for stage, _ in calls] == stages + ["done"]
    fractions = [fraction for _, fraction in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert list(result.timings) == stages and all(t >= 0 for t in result.timings.values())
    assert result.n_faces == len(result.faces) <= 3000 and result.n_vertices == len(result.vertices)
    assert 0 < result.threshold < PEAK


def test_glb_has_a_matte_pbr_material_and_the_texture(textured_export):
    result, _ = textured_export
    doc = gltf_json(result.glb)
    (material,) = doc["materials"]
    pbr = material["pbrMetallicRoughness"]
    assert pbr["baseColorFactor"] == [1.0, 1.0, 1.0, 1.0]
    assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == 1.0
    assert "baseColorTexture" in pbr and material["doubleSided"] is True
    assert {"POSITION", "NORMAL", "TEXCOORD_0"} <= set(doc["meshes"][0]["primitives"][0]["attributes"])

    mesh = load_glb(result.glb)
    assert np.allclose(mesh.visual.uv, result.uvs, atol=1e-6)
    assert np.array_equal(np.asarray(mesh.visual.material.baseColorTexture.convert("RGB")), result.texture)
    assert mesh.visual.material.metallicFactor == 0.0 and mesh.visual.material.roughnessFactor == 1.0


def test_glb_is_y_up_with_the_engine_front_on_gltf_plus_z(textured_export):
    result, _ = textured_export
    assert np.isclose(np.linalg.det(ENGINE_TO_GLTF), 1.0)
    mesh = load_glb(result.glb)
    lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    extent = hi - lo
    assert extent[1] > 1.8 * extent[0] and extent[1] > 1.8 * extent[2]      # tall in Y
    assert hi[2] > -lo[2] + 0.05                                             # the +X bump -> +Z
    assert abs(hi[0] + lo[0]) < 0.03                                         # symmetric across X
    assert signed_volume(mesh.vertices, mesh.faces) > 0                      # still outward


def test_vertex_colour_mode_writes_color_0():
    result = export_field(sphere, position_colour, resolution=32, threshold=None, keep_components=1,
                          face_budget=1000, texture_size=64, vertex_colors=True)
    assert result.uvs is None and result.texture is None
    doc = gltf_json(result.glb)
    attributes = doc["meshes"][0]["primitives"][0]["attributes"]
    assert "COLOR_0" in attributes and "TEXCOORD_0" not in attributes
    accessors = doc["accessors"]
    assert accessors[attributes["COLOR_0"]]["count"] == accessors[attributes["POSITION"]]["count"]
    assert doc["materials"][0]["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    mesh = load_glb(result.glb)
    colours = mesh.visual.vertex_attributes["color"]
    assert len(colours) == len(mesh.vertices) == result.n_vertices
    expected = (result.vertices + 1.0) / 2.0 * 255.0
    assert np.abs(colours[:, :3].astype(float) - expected).max() <= 1.0


def test_to_glb_rejects_mismatched_colours():
    vertices, faces = np.eye(3, dtype=np.float32), np.array([[0, 1, 2]], np.int32)
    with pytest.raises(ValueError, match="vertex colours"):
        to_glb(vertices, faces, vertex_colors=np.zeros((2, 3)))


def test_proxy_glb_is_vertex_coloured():
    # Its speed is measured by `python -m backend.export.bench_export`, not asserted here.
    glb = proxy_glb(sphere, position_colour)
    assert "COLOR_0" in gltf_json(glb)["meshes"][0]["primitives"][0]["attributes"]
    assert len(load_glb(glb).faces) <= 5000
    assert proxy_glb(empty, position_colour) is None


# -- rasteriser and turntable ----------------------------------------------------------------------

def test_rasterize_covers_each_pixel_once_with_exact_barycentrics():
    square = np.array([[[2, 3], [10, 3], [10, 7]], [[2, 3], [10, 7], [2, 7]]], np.float64)
    frags = rasterize(square, 16, 16)
    ys, xs = np.divmod(frags.pixel, 16)
    assert sorted(zip(ys, xs)) == [(y, x) for y in range(3, 7) for x in range(2, 10)]
    centres = np.einsum("kc,kcd->kd", frags.bary, square[frags.triangle])
    assert np.allclose(centres, np.stack([xs + 0.5, ys + 0.5], axis=1))


def test_rasterize_depth_test_keeps_the_nearest_triangle():
    tri = np.array([[0, 0], [8, 0], [0, 8]], np.float64)
    frags = rasterize(np.stack([tri, tri]), 8, 8, depth=np.array([[2.0] * 3, [1.0] * 3]))
    assert len(frags.pixel) == 36 and (frags.triangle == 1).all()


def test_turntable_shows_the_textured_object_from_each_side(textured_export):
    result, _ = textured_export
    strip = render_turntable(result.vertices, result.faces, uvs=result.uvs, texture=result.texture,
                             views=4, size=64)
    assert strip.shape == (64, 256, 3) and strip.dtype == np.uint8
    views = [strip[:, i * 64:(i + 1) * 64].astype(float) for i in range(4)]
    for view in views:
        mask = (view != 255).any(axis=2)
        assert 0.1 < mask.mean() < 0.9
        rows, cols = np.nonzero(mask)
        assert abs(rows.mean() - 31.5) < 6 and abs(cols.mean() - 31.5) < 6

    def red_over_green(view, cols=slice(None)):
        mask = (view[:, cols] != 255).any(axis=2)
        return view[:, cols][mask, 0].mean() / view[:, cols][mask, 1].mean()

    # Red grows with engine x: the front view (azimuth 0, from +X) is reddest, the back the least;
    # from +Y (azimuth 90) the +X side is on the left.
    assert red_over_green(views[0]) > 1.15 and red_over_green(views[2]) < 0.85
    assert red_over_green(views[1], slice(0, 32)) > red_over_green(views[1], slice(32, 64)) + 0.2

    png = turntable_png(result.vertices, result.faces, uvs=result.uvs, texture=result.texture,
                        views=4, size=64)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), strip)


def test_turntable_of_vertex_colours_and_of_nothing():
    vertices, faces = extract_mesh(sphere, resolution=32)
    colours = np.tile([[0.0, 0.0, 1.0]], (len(vertices), 1))
    view = render_turntable(vertices, faces, vertex_colors=colours, views=1, size=32)
    mask = (view != 255).any(axis=2)
    assert (view[mask, 2] > view[mask, 0]).all() and (view[mask, 2] - view[mask, 0]).mean() > 100
    blank = render_turntable(np.zeros((0, 3)), np.zeros((0, 3), int), views=2, size=16, background=(0, 0, 0))
    assert blank.shape == (16, 32, 3) and not blank.any()


def test_turntable_skips_back_faces_only_where_none_can_show(monkeypatch):
    """A closed mesh's back faces are always hidden, so the turntable skips them (half the
    rasterising): no pixel changes, whichever way the triangles wind. An open box keeps them: its
    inside shows through the opening, and its silhouette stays that of the closed box."""
    import backend.export.turntable as turntable

    box = trimesh.creation.box((1.0, 0.8, 0.6))
    skipped = render_turntable(box.vertices, box.faces, views=4, size=48)
    assert np.array_equal(render_turntable(box.vertices, box.faces[:, ::-1], views=4, size=48), skipped)
    open_faces = box.faces[box.face_normals[:, 2] < 0.5]            # the top (+Z) face removed
    opened = render_turntable(box.vertices, open_faces, views=4, size=48)
    monkeypatch.setattr(turntable, "_outward_sign", lambda vertices, faces: 0.0)   # rasterise every face
    assert np.array_equal(render_turntable(box.vertices, box.faces, views=4, size=48), skipped)
    assert np.array_equal(render_turntable(box.vertices, open_faces, views=4, size=48), opened)
    background = (skipped == 255).all(axis=2)
    assert np.array_equal((opened == 255).all(axis=2), background) and background.mean() < 0.9
    assert not np.array_equal(opened, skipped)                          # the inside is seen from above
