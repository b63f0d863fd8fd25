"""The triangles of a GLB (binary glTF 2.0) as numpy arrays, in Blender's Z-up frame: how the
add-on reads the live proxy meshes (``importer.update_proxy``) without Blender's glTF importer.

No bpy here (and no relative imports), so the tests run it in the project's own environment. It
is written by hand because the add-on ships only what Blender's Python has (numpy) plus pyzmq:
trimesh or pygltflib would be new wheels for every platform. It reads what a GLB may hold for a
mesh: the node hierarchy (matrix or TRS), every triangle primitive (other modes are skipped),
indexed or not, strided or packed buffer views, and COLOR_0 as float or normalized integers (RGB
or RGBA). Results keep going through Blender's importer (materials, textures).
"""

from __future__ import annotations

import json
import struct

import numpy as np

_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32,
               5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def _split_glb(data: bytes) -> tuple[dict, bytes]:
    if len(data) < 20 or data[:4] != b"glTF":
        raise ValueError("not a binary glTF file")
    _, _, length = struct.unpack_from("<4sII", data, 0)
    pos, doc, binary = 12, None, b""
    while pos + 8 <= min(length, len(data)):
        size, kind = struct.unpack_from("<II", data, pos)
        chunk = data[pos + 8: pos + 8 + size]
        if kind == 0x4E4F534A:   # JSON
            doc = json.loads(chunk.decode("utf-8"))
        elif kind == 0x004E4942:  # BIN
            binary = chunk
        pos += 8 + size
    if doc is None:
        raise ValueError("GLB without a JSON chunk")
    return doc, binary


def _accessor(doc: dict, binary: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    dtype = np.dtype(_COMPONENTS[acc["componentType"]])
    width, count = _WIDTH[acc["type"]], acc["count"]
    view = doc["bufferViews"][acc["bufferView"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    stride = view.get("byteStride") or dtype.itemsize * width
    raw = np.frombuffer(binary, dtype=np.uint8, count=stride * (count - 1) + dtype.itemsize * width,
                        offset=start)
    out = np.lib.stride_tricks.as_strided(raw, shape=(count, width * dtype.itemsize), strides=(stride, 1))
    out = np.ascontiguousarray(out).view(dtype).reshape(count, width)
    if acc.get("normalized") and dtype.kind in "iu":
        out = out.astype(np.float32) / np.iinfo(dtype).max
    return out


def _node_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T
    t = np.asarray(node.get("translation", (0, 0, 0)), dtype=np.float64)
    x, y, z, w = node.get("rotation", (0, 0, 0, 1))
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    m = np.eye(4)
    m[:3, :3] = r * np.asarray(node.get("scale", (1, 1, 1)), dtype=np.float64)
    m[:3, 3] = t
    return m


def read_glb_mesh(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """All triangles of a GLB as (vertices (N,3) in Blender's Z-up frame, faces (M,3), RGBA (N,4) or None)."""
    doc, binary = _split_glb(data)
    verts, faces, colors, offset = [], [], [], 0
    scene = doc.get("scenes", [{}])[doc.get("scene", 0)] if doc.get("scenes") else {}
    stack = [(i, np.eye(4)) for i in scene.get("nodes", range(len(doc.get("nodes", []))))]
    while stack:
        index, parent = stack.pop()
        node = doc["nodes"][index]
        world = parent @ _node_matrix(node)
        stack.extend((c, world) for c in node.get("children", ()))
        if "mesh" not in node:
            continue
        for prim in doc["meshes"][node["mesh"]]["primitives"]:
            if prim.get("mode", 4) != 4 or "POSITION" not in prim["attributes"]:
                continue
            p = _accessor(doc, binary, prim["attributes"]["POSITION"]).astype(np.float64)
            p = p @ world[:3, :3].T + world[:3, 3]
            idx = (_accessor(doc, binary, prim["indices"]).reshape(-1, 3).astype(np.int64)
                   if "indices" in prim else np.arange(len(p)).reshape(-1, 3))
            if "COLOR_0" in prim["attributes"]:
                c = _accessor(doc, binary, prim["attributes"]["COLOR_0"]).astype(np.float32)
                if c.shape[1] == 3:
                    c = np.concatenate([c, np.ones((len(c), 1), np.float32)], axis=1)
            else:
                c = np.ones((len(p), 4), np.float32)
            verts.append(p)
            faces.append(idx + offset)
            colors.append(c)
            offset += len(p)
    if not verts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), None
    v = np.concatenate(verts)
    v = np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)   # glTF Y-up -> Blender Z-up (as the importer)
    return v.astype(np.float32), np.concatenate(faces).astype(np.int32), np.concatenate(colors)
