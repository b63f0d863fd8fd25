"""Every GLB the project writes passes the Khronos glTF-Validator, the reference checker glTF
importers are tested against, with no issue at all: a generated result and its live proxy meshes,
exports in both colour modes (texture, vertex colours), and meshes with the awkward parts real
exports have (faces without area, unused vertices). The add-on's refine export is checked in
test_addon_blender.py.

The validator is the npm package ``gltf-validator``, installed into tests/gltf by ``make test`` (its
``gltf-validator`` step); see tests/helpers.py: no node or no package fails these tests, never skips.
"""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from backend.engine.api import generate
from backend.export.mesh import export_field, proxy_glb, to_glb
from tests.helpers import assert_valid_gltf, gltf_validate, tiny_settings


def _write(folder, glbs: dict) -> list:
    paths = []
    for name, data in glbs.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def test_a_generated_result_and_its_proxy_meshes_pass(tiny_model_path, tmp_path):
    events = []
    settings = tiny_settings(steps=4, preview_interval=2, proxy_mesh_interval=2, blob_density=20.0)
    result = generate(settings, device="cpu", callback=events.append)
    proxies = {f"proxy{e.step}.glb": e.proxy_glb for e in events if e.proxy_glb is not None}
    assert len(proxies) == 2
    assert_valid_gltf(_write(tmp_path, {"result.glb": result.glb, **proxies}))


def test_awkward_meshes_pass(tmp_path):
    """A face without area and a vertex no face uses (what simplification and marching cubes can
    leave) still give unit normals; a textured export and a proxy of an analytic field pass too."""
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 2, 2], [0.5, 0, 0]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2], [0, 5, 1]], np.int32)
    uvs = np.random.default_rng(0).random((len(vertices), 2)).astype(np.float32)
    texture = np.full((8, 8, 3), 200, np.uint8)

    def density(p):
        return 100.0 * (p.norm(dim=1) < 0.5).float()

    def albedo(p):
        return (p + 1) / 2

    textured, coloured = (export_field(density, albedo, resolution=32, threshold=None, keep_components=1,
                                       face_budget=500, texture_size=64, vertex_colors=mode) for mode in (False, True))
    assert_valid_gltf(_write(tmp_path, {
        "coloured.glb": to_glb(vertices, faces, vertex_colors=np.ones((len(vertices), 3)) * 0.5),
        "textured.glb": to_glb(vertices, faces, uvs=uvs, texture=texture),
        "plain.glb": to_glb(vertices, faces),
        "field_textured.glb": textured.glb,
        "field_vertex_coloured.glb": coloured.glb,
        "proxy.glb": proxy_glb(density, albedo, resolution=32)}))


def test_the_validator_reports_zero_normals(tmp_path):
    """The check can fail: a GLB with a zero-length normal (what the exporter wrote before) is an
    error for the validator."""
    mesh = trimesh.Trimesh(vertices=[[0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 3, 3]], faces=[[0, 1, 2]],
                           vertex_normals=[[0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]], process=False)
    path = _write(tmp_path, {"bad.glb": mesh.export(file_type="glb", include_normals=True)})
    (report,) = gltf_validate(path)
    assert "ACCESSOR_VECTOR3_NON_UNIT" in {m["code"] for m in report["issues"]["messages"]}
    with pytest.raises(AssertionError, match="ACCESSOR_VECTOR3_NON_UNIT"):
        assert_valid_gltf(path)
