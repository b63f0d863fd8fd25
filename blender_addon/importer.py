"""Meshes in and out of the scene: result import, placement, live proxy meshes, refine export.

- The backend's GLB is Y-up (glTF) with the engine's front facing Blender's front view (-Y);
  Blender's glTF importer turns it upright. Results are imported with that importer (image-texture
  material), proxies are read with numpy by ``glb.read_glb_mesh`` (one small vertex-coloured mesh,
  replaced in place every few seconds: much cheaper than the importer, no new datablocks per update).
- Placement: a job stores a world matrix (3D cursor, marker or refined object) and an optional
  ``fit_size``: a marker's result is scaled so its largest bounding-box side fills the marker
  (display size x scale, both ways from the centre) and centred on it.
- Refine: the selected object's evaluated mesh is exported as GLB in object-local coordinates,
  centred and scaled into the engine's scene; the inverse of that normalisation goes into the
  job's matrix so the result lands on the original. A generated object refined from its job's
  checkpoint needs no normalisation: the result comes back in the original's own frame.
"""

from __future__ import annotations

import json
import os
import tempfile

import bpy
import numpy as np
from mathutils import Matrix, Vector

from .glb import read_glb_mesh

PROXY_MATERIAL = "Dreamprop Proxy"
PROXY_COLOR_ATTR = "Col"
REFINE_HALF_EXTENT = 0.6    # = TARGET_HALF_EXTENT of backend/engine/mesh_init.py (see normalisation)
NAME_CHARS = 48             # object names are at most 63 bytes


def set_mesh_data(mesh: bpy.types.Mesh, verts: np.ndarray, faces: np.ndarray,
                  colors: np.ndarray | None = None) -> None:
    """Replace a mesh's geometry in place (triangles; per-vertex colours as a colour attribute)."""
    mesh.clear_geometry()
    mesh.vertices.add(len(verts))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(verts, np.float32).ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", np.ascontiguousarray(faces, np.int32).ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    if colors is not None and len(colors) == len(verts):
        attr = mesh.color_attributes.new(PROXY_COLOR_ATTR, 'FLOAT_COLOR', 'POINT')
        attr.data.foreach_set("color", np.ascontiguousarray(colors, np.float32).ravel())
        mesh.color_attributes.active_color = attr
        mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index
    mesh.update()


def _proxy_material() -> bpy.types.Material:
    mat = bpy.data.materials.get(PROXY_MATERIAL)
    if mat is None:
        mat = bpy.data.materials.new(PROXY_MATERIAL)
        mat.use_nodes = True
        nodes = mat.node_tree.nodes
        bsdf = next(n for n in nodes if n.type == 'BSDF_PRINCIPLED')
        attr = nodes.new("ShaderNodeAttribute")
        attr.attribute_name = PROXY_COLOR_ATTR
        mat.node_tree.links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def update_proxy(job, glb: bytes, scene: bpy.types.Scene) -> bpy.types.Object:
    """Create or refresh the job's proxy object from a coarse GLB, placed like the final result."""
    verts, faces, colors = read_glb_mesh(glb)
    obj = job.proxy
    if obj is None or obj.name not in bpy.data.objects:
        mesh = bpy.data.meshes.new(f"Proxy {object_name(job.prompt)}")
        obj = bpy.data.objects.new(mesh.name, mesh)
        obj["dreamprop_proxy_of"] = job.job_id
        _target_collection(job, scene).objects.link(obj)
        obj.data.materials.append(_proxy_material())
        job.proxy = obj
    set_mesh_data(obj.data, verts, faces, colors)
    if colors is not None and len(colors):   # solid view in "Object" colour mode: the mean colour
        obj.color = (*colors[:, :3].mean(axis=0), 1.0)
    obj.matrix_world = placement_matrix(job, local_bounds(verts))
    return obj


def remove_proxy(job) -> None:
    obj = job.proxy
    job.proxy = None
    if obj is not None and obj.name in bpy.data.objects:
        mesh = obj.data
        bpy.data.objects.remove(obj, do_unlink=True)
        if mesh is not None and mesh.users == 0:
            bpy.data.meshes.remove(mesh)


# -- placement -----------------------------------------------------------------------------------
def job_matrix(job) -> Matrix:
    m = list(job.matrix)
    return Matrix([m[0:4], m[4:8], m[8:12], m[12:16]])


def store_matrix(job, matrix: Matrix) -> None:
    job.matrix = [v for row in matrix for v in row]


def local_bounds(verts: np.ndarray) -> tuple[Vector, Vector]:
    if not len(verts):
        return Vector((0, 0, 0)), Vector((0, 0, 0))
    return Vector(verts.min(axis=0).tolist()), Vector(verts.max(axis=0).tolist())


def placement_matrix(job, bounds: tuple[Vector, Vector], metadata: dict | None = None) -> Matrix:
    """World matrix for a mesh whose local (import-frame) bounding box is ``bounds``."""
    base = job_matrix(job) @ init_correction(metadata)
    if job.fit_size <= 0:
        return base
    lo, hi = bounds
    largest = max(hi - lo)
    scale = job.fit_size / largest if largest > 1e-9 else 1.0
    return base @ Matrix.Scale(scale, 4) @ Matrix.Translation(-(lo + hi) / 2)


def marker_fit_size(marker: bpy.types.Object) -> float:
    """An Empty spans +-display size along each local axis: the result's largest side fills that."""
    return 2.0 * marker.empty_display_size


def read_prompt(metadata: dict | None) -> str:
    """The prompt the engine read from the picture of an image job typed without one ("" if none)."""
    read = ((metadata or {}).get("reference") or {}).get("prompt_from_picture") or {}
    return str(read.get("prompt", "")) if read.get("used") else ""


def object_name(prompt: str) -> str:
    text = " ".join(prompt.split()) or "Dreamprop"
    return text if len(text) <= NAME_CHARS else text[: NAME_CHARS - 1].rstrip() + "…"


def _target_collection(job, scene) -> bpy.types.Collection:
    """Where a job's objects go: the marker's / refined object's collection, else the active one."""
    anchor = job.marker or job.source
    collections = [c for c in (anchor.users_collection if anchor else ()) if c.library is None]
    if collections:
        return collections[0]
    layer = bpy.context.view_layer
    if layer is not None and layer in scene.view_layers.values():
        return layer.active_layer_collection.collection
    return scene.collection


# -- result import -------------------------------------------------------------------------------
def _op_kwargs(op, **wanted) -> dict:
    """Only the options this Blender's operator has (glTF options change between versions)."""
    names = set(op.get_rna_type().properties.keys())
    return {k: v for k, v in wanted.items() if k in names}


def import_result(job, glb_path: str, scene: bpy.types.Scene, settings: dict,
                  metadata: dict | None = None) -> bpy.types.Object:
    """Import the finished GLB, place it, name it after the prompt, store the job's settings on it."""
    before = set(bpy.data.objects)
    op = bpy.ops.import_scene.gltf
    with _override_for_scene(scene):
        result = op(filepath=glb_path, **_op_kwargs(op, import_scene_as_collection=False,
                                                    import_select_created_objects=False,
                                                    import_pack_images=True))
    if 'FINISHED' not in result:
        raise RuntimeError(f"the glTF importer could not read {os.path.basename(glb_path)}")
    new = [o for o in bpy.data.objects if o not in before]
    meshes = [o for o in new if o.type == 'MESH']
    if not meshes:
        for o in new:
            bpy.data.objects.remove(o, do_unlink=True)
        raise RuntimeError("the result has no mesh")
    roots = [o for o in new if o.parent not in new]
    # import-frame bounds of every mesh, then one matrix for all roots (normally one mesh)
    corners = np.array([tuple(o.matrix_world @ Vector(c)) for o in meshes for c in o.bound_box])
    placement = placement_matrix(job, local_bounds(corners), metadata)
    for root in roots:
        root.matrix_world = placement @ root.matrix_world
    main = max(meshes, key=lambda o: len(o.data.polygons))
    prompt = job.prompt or read_prompt(metadata)
    name = object_name(prompt)
    main.name = name
    main.data.name = name
    target = _target_collection(job, scene)
    for o in new:   # the importer links into the active collection; move next to the target
        if target not in o.users_collection:
            for c in list(o.users_collection):
                c.objects.unlink(o)
            target.objects.link(o)
    for mat in main.data.materials:
        for node in (mat.node_tree.nodes if mat and mat.node_tree else ()):
            if node.type == 'TEX_IMAGE' and node.image and not node.image.packed_file:
                node.image.pack()
    main["dreamprop_job_id"] = job.job_id
    main["dreamprop_prompt"] = prompt
    main["dreamprop_seed"] = int(settings.get("seed", 0))
    main["dreamprop_settings"] = json.dumps(settings, sort_keys=True)
    return main


def _override_for_scene(scene):
    """Context for running an import/export operator from a timer (window when there is one)."""
    wm = bpy.context.window_manager
    window = bpy.context.window or (wm.windows[0] if wm and wm.windows else None)
    kwargs = {"scene": scene}
    if window is not None:
        kwargs["window"] = window
        kwargs["view_layer"] = window.view_layer if window.scene == scene else scene.view_layers[0]
    return bpy.context.temp_override(**kwargs)


# -- refine export -------------------------------------------------------------------------------
def normalisation(verts: np.ndarray) -> Matrix:
    """Object-local -> the frame the engine optimises in: bounding box centred, largest half-side
    REFINE_HALF_EXTENT. The engine centres and scales a received mesh the same way, so for it this
    is the identity and the result comes back in this frame."""
    lo, hi = local_bounds(verts)
    half = max(hi - lo) / 2
    scale = REFINE_HALF_EXTENT / half if half > 1e-9 else 1.0
    return Matrix.Scale(scale, 4) @ Matrix.Translation(-(lo + hi) / 2)


def engine_to_blender(v) -> Vector:
    """Engine coordinates (Z up, front +X) -> Blender's glTF-import frame (Z up, front -Y)."""
    return Vector((v[1], -v[0], v[2]))


def init_correction(metadata: dict) -> Matrix:
    """If the engine reports how it normalised a received mesh (``metadata["init_transform"]`` =
    {"center": engine xyz, "scale": s}), the matrix from its result frame back to the sent frame."""
    t = (metadata or {}).get("init_transform") or {}
    try:
        center, scale = engine_to_blender(t["center"]), float(t["scale"])
    except (KeyError, TypeError, ValueError, IndexError):
        return Matrix.Identity(4)
    return Matrix.Translation(center) @ Matrix.Scale(1.0 / scale, 4) if scale > 0 else Matrix.Identity(4)


def export_refine_glb(obj: bpy.types.Object, context) -> tuple[bytes, Matrix]:
    """The object's evaluated mesh (modifiers applied, materials/textures/colours) as GLB bytes in
    the engine's frame, and the world matrix that puts a mesh in that frame back on ``obj``."""
    depsgraph = context.evaluated_depsgraph_get()
    mesh = bpy.data.meshes.new_from_object(obj.evaluated_get(depsgraph), preserve_all_data_layers=True,
                                           depsgraph=depsgraph)
    tmp = None
    scene = context.scene
    selected = [o for o in context.view_layer.objects if o.select_get()]
    active = context.view_layer.objects.active
    try:
        if not mesh.polygons:
            raise RuntimeError(f"{obj.name} has no faces to refine")
        verts = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", verts)
        norm = normalisation(verts.reshape(-1, 3))
        mesh.transform(norm)
        tmp = bpy.data.objects.new("dreamprop_refine_export", mesh)
        scene.collection.objects.link(tmp)
        for o in selected:
            o.select_set(False)
        tmp.select_set(True)
        context.view_layer.objects.active = tmp
        fd, path = tempfile.mkstemp(suffix=".glb", prefix="dreamprop_refine_")
        os.close(fd)
        try:
            op = bpy.ops.export_scene.gltf
            with _override_for_scene(scene):
                op(filepath=path, **_op_kwargs(
                    op, export_format='GLB', use_selection=True, export_apply=False, export_yup=True,
                    export_animations=False, export_cameras=False, export_lights=False,
                    export_extras=False, export_materials='EXPORT', export_vertex_color='ACTIVE',
                    export_image_format='AUTO'))
            with open(path, "rb") as f:
                data = f.read()
        finally:
            os.unlink(path)
    finally:
        if tmp is not None:
            bpy.data.objects.remove(tmp, do_unlink=True)
        bpy.data.meshes.remove(mesh)
        for o in selected:
            if o.name in context.view_layer.objects:
                o.select_set(True)
        context.view_layer.objects.active = active
    return data, obj.matrix_world @ norm.inverted()
