"""blender_addon/glb.py, the add-on's GLB reader (live proxy meshes), without Blender: loaded from
its file, as it has no bpy and no relative imports. Checked against trimesh's reader."""

from __future__ import annotations

import importlib.util
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh

from backend.export.mesh import ENGINE_TO_GLTF, to_glb

ROOT = Path(__file__).resolve().parent.parent

spec = importlib.util.spec_from_file_location("dreamprop_addon_glb", ROOT / "blender_addon" / "glb.py")
glb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(glb)


def gltf_to_blender(v: np.ndarray) -> np.ndarray:
    """glTF Y-up -> Blender Z-up, as Blender's glTF importer does."""
    return np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)


def test_reads_the_backends_proxy_mesh_with_its_colours():
    box = trimesh.creation.box(extents=(1.0, 0.5, 0.25))
    engine = np.asarray(box.vertices, np.float32)
    colours = np.random.default_rng(0).random((len(engine), 3))
    verts, faces, rgba = glb.read_glb_mesh(to_glb(engine, np.asarray(box.faces, np.int32), vertex_colors=colours))
    assert np.allclose(verts, gltf_to_blender(engine @ ENGINE_TO_GLTF.T), atol=1e-6)
    assert np.array_equal(faces, box.faces)
    assert rgba.shape == (len(engine), 4) and np.all(rgba[:, 3] == 1.0)
    assert np.abs(rgba[:, :3] - colours).max() <= 0.5 / 255 + 1e-6          # 8-bit normalised COLOR_0


def test_node_transforms_and_several_meshes_match_trimesh():
    scene = trimesh.Scene()
    a = trimesh.creation.icosphere(subdivisions=1, radius=0.3)
    b = trimesh.creation.box(extents=(0.2, 0.4, 0.6))
    spin = trimesh.transformations.rotation_matrix(0.7, [0.3, 1.0, 0.2])
    scene.add_geometry(a, node_name="a", transform=trimesh.transformations.translation_matrix([1, 2, 3]) @ spin)
    scene.add_geometry(b, node_name="b", parent_node_name="a",
                       transform=trimesh.transformations.scale_matrix(2.0) @ spin)
    data = scene.export(file_type="glb")
    verts, faces, rgba = glb.read_glb_mesh(data)
    expected = trimesh.load(io.BytesIO(data), file_type="glb").to_geometry()
    assert len(faces) == len(expected.faces) == len(a.faces) + len(b.faces)
    # The same triangles in world space (in whatever order the two readers list the meshes).
    ours = np.sort(np.round(verts[faces].reshape(-1, 9), 5), axis=0)
    theirs = np.sort(np.round(gltf_to_blender(np.asarray(expected.vertices))[expected.faces].reshape(-1, 9), 5), axis=0)
    assert np.allclose(ours, theirs, atol=1e-4)
    assert np.all(rgba == 1.0)                      # no COLOR_0: white


def _glb(doc: dict, binary: bytes) -> bytes:
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(binary), 0x004E4942) + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def test_interleaved_buffer_view_trs_nodes_and_non_indexed_triangles():
    """POSITION and float RGB COLOR_0 interleaved in one strided view, no indices, under a node with
    translation / rotation / scale whose child has a matrix; a line primitive beside it is skipped."""
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1]], np.float32)
    colours = np.linspace(0, 1, 18, dtype=np.float32).reshape(6, 3)
    binary = np.concatenate([positions, colours], axis=1).tobytes()
    quat = np.array([0.1, 0.7, -0.3, 0.6]) / np.linalg.norm([0.1, 0.7, -0.3, 0.6])      # glTF order x, y, z, w
    parent = (trimesh.transformations.translation_matrix([1, -2, 3])
              @ trimesh.transformations.quaternion_matrix(np.roll(quat, 1))                  # wants w, x, y, z
              @ np.diag([2.0, 0.5, 1.5, 1.0]))
    child = trimesh.transformations.rotation_matrix(0.4, [1, 0, 0]) @ trimesh.transformations.translation_matrix([0, 1, 0])
    nodes = [{"translation": [1, -2, 3], "rotation": quat.tolist(), "scale": [2.0, 0.5, 1.5], "children": [1]},
             {"matrix": child.T.ravel().tolist(), "mesh": 0}]                               # column-major
    doc = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": nodes,
           "buffers": [{"byteLength": len(binary)}],
           "bufferViews": [{"buffer": 0, "byteLength": len(binary), "byteStride": 24}],
           "accessors": [{"bufferView": 0, "componentType": 5126, "count": 6, "type": "VEC3"},
                         {"bufferView": 0, "byteOffset": 12, "componentType": 5126, "count": 6, "type": "VEC3"}],
           "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}},
                                      {"attributes": {"POSITION": 0}, "mode": 1}]}]}
    verts, faces, rgba = glb.read_glb_mesh(_glb(doc, binary))
    world = trimesh.transformations.transform_points(positions, parent @ child)
    assert np.allclose(verts, gltf_to_blender(world), atol=1e-5)
    assert faces.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert np.allclose(rgba[:, :3], colours) and np.all(rgba[:, 3] == 1.0)


def test_what_is_not_a_glb_is_a_clear_error():
    with pytest.raises(ValueError, match="not a binary glTF"):
        glb.read_glb_mesh(b"PK\x03\x04 a zip file, not a GLB")
    with pytest.raises(ValueError, match="JSON chunk"):
        glb.read_glb_mesh(struct.pack("<4sII", b"glTF", 2, 20) + struct.pack("<II", 0, 0x004E4942))
    empty = _glb({"asset": {"version": "2.0"}}, b"")
    verts, faces, rgba = glb.read_glb_mesh(empty)
    assert verts.shape == (0, 3) and faces.shape == (0, 3) and rgba is None
