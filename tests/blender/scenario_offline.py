"""Add-on checks that need Blender but no server (run by tests/test_addon_blender.py).

usage: <bpy python> scenario_offline.py <addon.zip> <inputs.json> <results.json>
inputs: {"textured_glb", "proxy_glb_a", "proxy_glb_b"} made with trimesh by the pytest side, and
"vocabulary" (the built-in prior's prompts, from backend.prior.vocabulary) and "plain_settings" (what
``shared.layering`` gives a plain command) read there.
"""

from __future__ import annotations

import json
import math
import os
import sys

import bpy
import numpy as np
from mathutils import Euler, Matrix, Vector

import harness

ZIP, INPUTS, OUT = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
JOB_ID = "ab" * 16


def fake_job(**fields):
    """A job record as the add-on makes one (no server involved: only the placement data)."""
    job = bpy.context.scene.dreamprop.jobs.add()
    job.job_id, job.prompt = JOB_ID, fields.pop("prompt", "a tall test box")
    for k, v in fields.items():
        setattr(job, k, v)
    return job


def check_install():
    harness.install(ZIP)
    import zmq
    assert "extensions" in zmq.__file__, zmq.__file__   # the bundled wheel, not a system pyzmq
    return {"zmq": zmq.zmq_version(), "pyzmq": zmq.__version__}


def check_properties_match_schema():
    S = harness.module("shared.settings")
    props = harness.module("properties")
    pg = bpy.context.scene.dreamprop.settings
    rna = pg.bl_rna.properties
    # a new scene shows what a plain command runs: the schema defaults under the default model's
    # recommended settings (the built-in prior's), the same layers as the CLI and the server
    plain = INPUTS["plain_settings"]
    for f in S.GenerationSettings.spec():
        p, m = rna[f.name], f.metadata
        assert p.description == S.setting_help(f), f.name
        if m["optional"]:
            assert rna[f.name + props.OPTIONAL_SUFFIX].default is (plain[f.name] is None), f.name
        elif p.type in ('INT', 'FLOAT'):
            assert math.isclose(p.default, plain[f.name], rel_tol=1e-6), (f.name, p.default, plain[f.name])
        elif p.type == 'ENUM':
            assert p.default == plain[f.name] and [i.identifier for i in p.enum_items] == list(m["choices"]), f.name
        else:
            assert p.default == plain[f.name], (f.name, p.default, plain[f.name])
        if p.type in ('INT', 'FLOAT'):
            assert math.isclose(p.hard_min, m["lo"], rel_tol=1e-6) and math.isclose(p.hard_max, m["hi"], rel_tol=1e-6), f.name
    assert props.settings_dict(pg) == plain
    assert plain["steps"] != S.GenerationSettings.steps   # the prior's budget, not the schema's
    pg.mesh_threshold_auto = False
    pg.mesh_threshold = 12.5
    assert props.settings_dict(pg)["mesh_threshold"] == 12.5
    pg.mesh_threshold_auto = True
    assert props.settings_dict(pg)["mesh_threshold"] is None
    return {"settings": len(S.GenerationSettings.spec())}


def check_presets():
    P = harness.module("shared.presets")
    presets = harness.module("presets")
    L, S = harness.module("shared.layering"), harness.module("shared.settings")
    pg = bpy.context.scene.dreamprop.settings
    assert pg.quality == 'AUTO' and presets.matching(pg) == 'AUTO' and pg.model == "builtin"
    recommended = L.recommended_settings("builtin")
    for name in P.QUALITY_PRESETS:
        pg.quality = name.upper()
        # a preset's own values, over the model's recommended settings for the keys it leaves out
        for key, value in {**recommended, **P.preset_settings(name)}.items():
            assert presets.same_value(getattr(pg, key), value), (name, key, getattr(pg, key), value)
        assert presets.matches(pg, name.upper())
    pg.steps = 1234
    assert presets.matching(pg) == 'CUSTOM' and not presets.matches(pg, pg.quality)

    # Auto follows the model: Stable Diffusion gets the schema defaults, the prior its own again
    pg.quality = 'AUTO'
    assert pg.steps == recommended["steps"]
    pg.model = "runwayml/stable-diffusion-v1-5"
    assert pg.steps == S.GenerationSettings.steps
    assert presets.same_value(pg.distance_min, S.GenerationSettings.distance_min)
    assert presets.matching(pg) == 'AUTO'
    pg.model = "builtin"
    assert pg.steps == recommended["steps"] and presets.matches(pg, 'AUTO')
    # a value typed by hand wins: changing the model keeps it
    pg.steps = 321
    pg.model = "runwayml/stable-diffusion-v1-5"
    assert pg.steps == 321 and presets.same_value(pg.distance_min, recommended["distance_min"])
    pg.model = "builtin"
    pg.quality = 'AUTO'
    assert props_are(pg, INPUTS["plain_settings"])

    # Auto is the recommendation for the server's device: a GPU server's info reply turns an untouched
    # Auto panel to the GPU's values, a CPU server's back; values typed by hand stay. The text prior's
    # values are the same on every device since session 50 (a GPU reply changes nothing), so for the rest
    # of this check the prior has a GPU preset of its own (two views a step), as a model may
    jobs = harness.module("jobs")
    assert L.recommended_settings("builtin", device="cuda") == recommended
    jobs.set_server_info({"device": "cuda"})
    assert props_are(pg, INPUTS["plain_settings"]) and pg.quality == 'AUTO'
    jobs.set_server_info({"device": "cpu"})
    P.PRESETS["builtin-gpu-check"] = {**P.PRESETS["builtin"], "resolution_schedule": "48x2"}
    L.GPU_PRESETS["builtin"] = "builtin-gpu-check"
    gpu = L.recommended_settings("builtin", device="cuda")
    assert gpu["resolution_schedule"] != recommended["resolution_schedule"]
    jobs.set_server_info({"device": "cuda"})
    assert pg.resolution_schedule == gpu["resolution_schedule"] and pg.steps == gpu["steps"]
    assert pg.quality == 'AUTO' and presets.matching(pg) == 'AUTO'
    jobs.set_server_info({"device": "cpu"})
    assert pg.resolution_schedule == recommended["resolution_schedule"] and presets.matching(pg) == 'AUTO'
    pg.steps = 777
    jobs.set_server_info({"device": "cuda"})
    assert pg.steps == 777 and pg.resolution_schedule == recommended["resolution_schedule"] and pg.quality == 'AUTO'
    jobs.set_server_info({"device": "cpu"})
    # a file saved with a GPU's Auto values, opened before any server answered, reads Custom; a GPU
    # server's answer shows Auto again
    with presets.suspended():
        for key, value in presets.values('AUTO', "builtin", "cuda").items():
            setattr(pg, key, value)
        pg.quality = 'CUSTOM'
    jobs.set_server_info({"device": "cuda"})
    assert pg.quality == 'AUTO' and pg.resolution_schedule == gpu["resolution_schedule"]
    jobs.set_server_info({"device": "cpu"})
    assert pg.quality == 'AUTO' and pg.resolution_schedule == recommended["resolution_schedule"]
    # the Builtin button is the prior's settings for the device too; Draft is the same anywhere
    pg.quality = 'BUILTIN'
    jobs.set_server_info({"device": "cuda"})
    assert pg.quality == 'BUILTIN' and pg.resolution_schedule == gpu["resolution_schedule"]
    pg.quality = 'DRAFT'
    draft = pg.resolution_schedule
    jobs.set_server_info({"device": "cpu"})
    assert pg.quality == 'DRAFT' and pg.resolution_schedule == draft == P.preset_settings("draft")["resolution_schedule"]
    pg.quality = 'AUTO'
    assert props_are(pg, INPUTS["plain_settings"])
    del L.GPU_PRESETS["builtin"], P.PRESETS["builtin-gpu-check"]
    return {"presets": list(P.QUALITY_PRESETS)}


def props_are(pg, settings: dict) -> bool:
    return harness.module("properties").settings_dict(pg) == settings


def check_vocabulary_ui():
    """The prompt field offers the built-in prior's prompts (the list build_addon.py put into the
    zip is the backend's), only for the built-in model; an unknown prompt gets a hint in the panel."""
    vocabulary, props = harness.module("vocabulary"), harness.module("properties")
    pg = bpy.context.scene.dreamprop.settings
    known = INPUTS["vocabulary"]
    assert vocabulary.prompts("builtin") == known
    assert props._prompt_search(pg, bpy.context, "") == known
    blue = props._prompt_search(pg, bpy.context, "Blue  ")
    assert blue and all("blue" in p for p in blue) and set(blue) < set(known), blue
    assert props._prompt_search(pg, bpy.context, "no such words") == []
    pg.model = "tiny-random"
    assert props._prompt_search(pg, bpy.context, "") == [] and vocabulary.known(pg.model, "a teapot") is None
    pg.model = "builtin"
    rna = pg.bl_rna.properties["prompt"]
    assert rna.type == 'STRING'
    assert vocabulary.known("builtin", "  " + known[0].upper() + " ") is True
    assert vocabulary.known("builtin", "a teapot") is False
    panels = harness.module("panels")
    calls = []
    pg.prompt = "a teapot"
    texts = []
    panels.draw_vocabulary_hint(TextLayout(texts), pg)
    assert len(texts) == 1 and f"{len(known)} prompts" in texts[0], texts
    texts.clear()
    pg.prompt = known[-1]
    panels.draw_vocabulary_hint(TextLayout(texts), pg)
    assert texts == []
    pg.prompt = ""
    return {"prompts": len(known), "blue": blue}


class TextLayout:
    """Collects the label texts a draw function makes."""

    def __init__(self, texts):
        self.texts = texts

    def label(self, text="", icon='NONE'):
        self.texts.append(text)

    def column(self, align=False):
        return self


def check_import_textured_at_cursor():
    importer = harness.module("importer")
    scene = bpy.context.scene
    scene.cursor.location = (1.0, 2.0, 3.0)
    job = fake_job()
    importer.store_matrix(job, Matrix.Translation(scene.cursor.location))
    settings = {"prompt": job.prompt, "seed": 42, "steps": 20}
    obj = importer.import_result(job, INPUTS["textured_glb"], scene, settings)
    assert obj.name == "a tall test box" and obj.type == 'MESH'
    assert (obj.matrix_world.translation - Vector((1, 2, 3))).length < 1e-6
    dims = obj.dimensions
    assert dims.z > dims.y > dims.x, tuple(dims)   # glTF +Y (the tall side) is Blender +Z: upright
    images = [n.image for m in obj.data.materials for n in m.node_tree.nodes if n.type == 'TEX_IMAGE']
    assert images and all(i.packed_file for i in images), images
    assert obj["dreamprop_job_id"] == JOB_ID and obj["dreamprop_seed"] == 42
    assert json.loads(obj["dreamprop_settings"]) == settings
    return {"dimensions": tuple(dims)}


def check_image_job_named_after_the_prompt_read():
    """An image job typed without a prompt: the engine read one from the picture (auto_prompt), and the
    imported object is named after it."""
    importer = harness.module("importer")
    scene = bpy.context.scene
    job = fake_job(prompt="")
    importer.store_matrix(job, Matrix.Identity(4))
    metadata = {"reference": {"mask_source": "alpha", "prompt_from_picture": {"prompt": "a wooden barrel", "used": True}}}
    obj = importer.import_result(job, INPUTS["textured_glb"], scene, {"prompt": ""}, metadata)
    assert obj.name.startswith("a wooden barrel") and obj["dreamprop_prompt"] == "a wooden barrel", obj.name
    return {"name": obj.name}


def check_fit_to_marker():
    importer = harness.module("importer")
    scene = bpy.context.scene
    marker = bpy.data.objects.new("marker", None)
    scene.collection.objects.link(marker)
    marker.empty_display_type = 'CUBE'
    marker.empty_display_size = 0.5
    marker.location, marker.rotation_euler, marker.scale = (5, 0, 0), Euler((0, 0, math.pi / 2)), (2, 2, 2)
    bpy.context.view_layer.update()
    job = fake_job(prompt="fitted box", marker=marker, fit_size=importer.marker_fit_size(marker))
    importer.store_matrix(job, marker.matrix_world.copy())
    obj = importer.import_result(job, INPUTS["textured_glb"], scene, {"prompt": "fitted box"})
    bpy.context.view_layer.update()
    lo, hi = harness.world_bounds(obj)
    size = hi - lo
    # largest side = display size (both ways) x scale = 2 * 0.5 * 2; centred on the marker
    assert abs(size.max() - 2.0) < 1e-4, size
    assert np.allclose((lo + hi) / 2, (5, 0, 0), atol=1e-4), (lo + hi) / 2
    # rotated 90 degrees about Z: the box's X side (0.4) now runs along world Y
    assert size[1] < size[0], size
    return {"world_size": size.tolist()}


def check_proxy_replaced_in_place():
    importer = harness.module("importer")
    scene = bpy.context.scene
    job = fake_job(prompt="proxy test")
    importer.store_matrix(job, Matrix.Translation((0, -3, 0)))
    a = importer.update_proxy(job, open(INPUTS["proxy_glb_a"], "rb").read(), scene)
    na = len(a.data.vertices)
    b = importer.update_proxy(job, open(INPUTS["proxy_glb_b"], "rb").read(), scene)
    assert a == b and job.proxy == b, "the proxy object is reused"
    assert len(b.data.vertices) != na and len(b.data.polygons) > 0
    col = b.data.color_attributes.get(importer.PROXY_COLOR_ATTR)
    values = np.empty(len(col.data) * 4, np.float32)
    col.data.foreach_get("color", values)
    assert np.allclose(values.reshape(-1, 4).mean(axis=0)[:3], (0, 0, 1), atol=0.02)   # proxy b is blue
    assert (b.matrix_world.translation - Vector((0, -3, 0))).length < 1e-6
    name, nb = b.name, len(b.data.vertices)
    importer.remove_proxy(job)
    assert name not in bpy.data.objects and job.proxy is None
    return {"vertices": [na, nb]}


def check_batch_markers():
    batch = harness.module("operators.batch")
    scene = bpy.context.scene
    col = bpy.data.collections.new("Markers")
    scene.collection.children.link(col)
    for i, name in enumerate(["m1", "m2"]):
        e = bpy.data.objects.new(name, None)
        e.location = (i * 3, 5, 0)
        col.objects.link(e)
    col.objects.link(bpy.data.objects.new("not a marker", bpy.data.meshes.new("m")))
    loose = bpy.data.objects.new("loose", None)
    loose["prompt"] = "a lamp"
    loose["seed"] = 7
    loose["colour"] = "ignored: not a setting"
    scene.collection.objects.link(loose)
    scene.dreamprop.batch_collection = col
    names = [o.name for o in batch.find_markers(scene)]
    assert names == ["loose", "m1", "m2"], names
    assert batch.marker_overrides(loose) == {"prompt": "a lamp", "seed": 7}
    scene.dreamprop.batch_prompt_property = False
    assert [o.name for o in batch.find_markers(scene)] == ["m1", "m2"]
    scene.dreamprop.batch_prompt_property = True
    return {"markers": names}


def check_refine_export():
    importer = harness.module("importer")
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(2, 1, 0), rotation=(0.3, 0, 0.5))
    cube = bpy.context.active_object
    cube.scale = (1, 2, 0.5)
    bpy.context.view_layer.update()
    glb, matrix = importer.export_refine_glb(cube, bpy.context)
    assert bpy.context.active_object == cube and cube.select_get(), "selection restored"
    assert "dreamprop_refine_export" not in bpy.data.objects
    verts, faces, _ = harness.module("glb").read_glb_mesh(glb)
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    assert np.allclose(hi, -lo, atol=1e-5) and abs(hi.max() - importer.REFINE_HALF_EXTENT) < 1e-5, (lo, hi)
    world = np.array([tuple(matrix @ Vector(v)) for v in verts])
    expected = np.array([tuple(cube.matrix_world @ v.co) for v in cube.data.vertices])
    for p in world:   # every exported vertex lands on a cube vertex after placement
        assert np.min(np.linalg.norm(expected - p, axis=1)) < 1e-4, p
    path = os.path.join(os.path.dirname(OUT), "refine_input.glb")   # test_addon_blender.py validates it
    with open(path, "wb") as f:
        f.write(glb)
    return {"glb_bytes": len(glb), "faces": len(faces), "glb": path}


def check_errors_are_reports():
    p = harness.prefs()
    p.mode = 'LOCAL'
    p.connection_file = "/nonexistent/connection.json"
    pg = bpy.context.scene.dreamprop.settings
    pg.prompt = "a chair"
    n = len(bpy.context.scene.dreamprop.jobs)
    messages = []
    for setup in (lambda: None, lambda: setattr(pg, "elevation_min", 60.0)):
        setup()
        try:
            bpy.ops.dreamprop.generate()
        except RuntimeError as exc:   # an operator's ERROR report, as Python sees it
            messages.append(str(exc))
        else:
            raise AssertionError("generate should have reported an error")
    pg.elevation_min = -10.0
    p.mode = 'REMOTE'   # the bpy module runs with online access off, as Blender does by default
    try:
        bpy.ops.dreamprop.generate()
    except RuntimeError as exc:
        messages.append(str(exc))
    p.mode = 'LOCAL'
    assert "Online access is off" in messages[2], messages
    assert "no dreamprop server connection file" in messages[0], messages
    assert "elevation min: must be <= elevation_max" in messages[1], messages
    assert all("Traceback" not in m for m in messages)
    assert len(bpy.context.scene.dreamprop.jobs) == n, "no job record for a request that was not sent"
    return {"messages": messages}


class RecordingLayout:
    """Stands in for a UILayout while calling a panel's draw() headless (background Blender has no
    windows): every call is checked against UILayout's RNA (method and keyword names, property
    names on the data, operator idnames and the properties set on them)."""

    FUNCS = {f.identifier: set(f.parameters.keys()) for f in bpy.types.UILayout.bl_rna.functions}
    ATTRS = set(bpy.types.UILayout.bl_rna.properties.keys())
    NESTED = {"row", "column", "box", "split", "column_flow", "grid_flow"}

    def __init__(self, calls):
        object.__setattr__(self, "_calls", calls)

    def __setattr__(self, name, value):
        assert name in self.ATTRS, f"UILayout has no attribute {name}"

    def __getattr__(self, name):
        assert name in self.FUNCS, f"UILayout has no function {name}"

        def call(*args, **kwargs):
            assert not set(kwargs) - self.FUNCS[name], (name, set(kwargs) - self.FUNCS[name])
            self._calls.append(name)
            if name in ("prop", "template_list"):
                pairs = [(args[0], args[1])] if name == "prop" else [(args[2], args[3]), (args[4], args[5])]
                for data, prop in pairs:
                    assert prop in data.bl_rna.properties, f"{data.bl_rna.identifier} has no {prop}"
            if name in self.NESTED:
                return RecordingLayout(self._calls)
            if name == "operator":
                idname = args[0] if args else kwargs["operator"]
                mod, op = idname.split(".")
                return OperatorProps(getattr(getattr(bpy.ops, mod), op).get_rna_type())
            return None
        return call


class OperatorProps:
    def __init__(self, rna):
        object.__setattr__(self, "_rna", rna)

    def __setattr__(self, name, value):
        assert name in self._rna.properties, f"{self._rna.identifier} has no property {name}"


class Drawable:
    """``self`` for a draw() call: the recording layout, everything else from ``base``."""

    def __init__(self, layout, base=None):
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "_base", base)

    def __getattr__(self, name):
        return getattr(self._base, name)


def check_panels_draw():
    panels, prefs_mod = harness.module("panels"), harness.module("preferences")
    jobs = harness.module("jobs")
    scene = bpy.context.scene
    img = bpy.data.images.new(jobs.PREVIEW_IMAGE, 16, 16)
    img["dreamprop_job_id"] = JOB_ID
    running = fake_job(prompt="running job", state='RUNNING', step=3, total=10, eta_s=75.0, batch_id="b" * 32,
                       warning="'running job' is not in the built-in prior's vocabulary (56 prompts): nearest "
                               "known prompts: 'a red cube', 'a red cone', 'a red torus'")
    fake_job(prompt="failed job", state='FAILED', message="out of memory", warning="a warning too")
    scene.dreamprop.settings.prompt = "a prompt the prior does not know"   # the vocabulary hint is drawn
    scene.dreamprop.active_job_index = len(scene.dreamprop.jobs) - 1
    calls = []
    for cls in panels.CLASSES:
        if issubclass(cls, bpy.types.UIList):
            for i, job in enumerate(scene.dreamprop.jobs):
                cls.draw_item(Drawable(RecordingLayout(calls)), bpy.context, RecordingLayout(calls), scene.dreamprop,
                              job, 0, scene.dreamprop, "active_job_index", i)
        else:
            cls.draw(Drawable(RecordingLayout(calls), cls), bpy.context)
    p = harness.prefs()
    for mode in ('LOCAL', 'REMOTE'):
        p.mode = mode
        jobs.set_server_info({"server_version": "0.1.0", "protocol_version": "1.0", "device": "cuda",
                              "gpus": [{"name": "H100"}], "models": ["builtin", "tiny-random"],
                              "queue_length": 2, "workers": [{}]})
        prefs_mod.DREAMPROP_AP_preferences.draw(Drawable(RecordingLayout(calls), p), bpy.context)
    p.mode = 'LOCAL'
    assert "progress" in calls and "template_icon" in calls and "template_list" in calls
    assert panels.progress_text(running) == "3 / 10, ETA 1:15"
    lines = prefs_mod.info_lines(jobs.state().server_info)
    assert "GPU: H100" in lines and "Models: builtin, tiny-random" in lines, lines
    jobs.set_server_info({"device": "cpu"})    # (the info above turned Auto panels to a GPU's values)
    bpy.data.images.remove(img)
    scene.dreamprop.settings.prompt = ""
    return {"layout_calls": len(calls)}


def check_image_source():
    """The panel's image source: an image open in Blender and a render of the active camera become picture
    bytes (returned base64 for the pytest side to check with the server's own reader), the camera's
    pitch becomes the reference elevation, the render settings are put back, the reference preview is
    drawn beside the live one while its job runs."""
    import base64

    source, panels = harness.module("image_source"), harness.module("panels")
    scene = bpy.context.scene
    dp = scene.dreamprop
    # an image open in Blender (generated, never saved: its pixels are encoded)
    size = 64
    img = bpy.data.images.new("concept", size, size, alpha=True)
    y, x = np.mgrid[0:size, 0:size] + 0.5
    inside = ((x - 40) ** 2 + (y - 24) ** 2 < 12 ** 2)        # Blender rows go up: the disc is low right
    px = np.zeros((size, size, 4), np.float32)
    px[inside] = [0.9, 0.1, 0.1, 1.0]
    img.pixels.foreach_set(px.reshape(-1))
    dp.image_source, dp.image = 'IMAGE', img
    from_image, elevation = source.reference_png(scene)
    assert elevation is None
    # a render of the active camera: a red cube seen from 30 degrees up, Workbench, transparent film
    hidden = [o for o in scene.objects if not o.hide_render]     # earlier checks' objects: out of the picture
    for o in hidden:
        o.hide_render = True
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0, 0, 0))
    cube = bpy.context.active_object
    cam_data = bpy.data.cameras.new("ref cam")
    cam = bpy.data.objects.new("ref cam", cam_data)
    scene.collection.objects.link(cam)
    cam.location = (4 * math.cos(math.radians(30)), 0, 4 * math.sin(math.radians(30)))
    cam.rotation_euler = Euler((math.radians(60), 0, math.radians(90)))
    scene.camera = cam
    scene.render.engine = 'BLENDER_WORKBENCH'
    scene.render.resolution_x = scene.render.resolution_y = 64
    before = (scene.render.filepath, scene.render.film_transparent, scene.render.resolution_percentage)
    dp.image_source = 'CAMERA'
    from_camera, cam_elevation = source.reference_png(scene)
    assert abs(cam_elevation - 30.0) < 0.1, cam_elevation
    assert (scene.render.filepath, scene.render.film_transparent, scene.render.resolution_percentage) == before
    # the reference preview: shown beside the live preview while the image job runs
    job = fake_job(prompt="", state='RUNNING', step=1, total=10)
    source.show_reference(job, from_image)
    assert job.image_path and bpy.data.images.get(source.REFERENCE_IMAGE) is not None
    calls = []
    for mode in ('FILE', 'IMAGE', 'CAMERA'):
        dp.image_source = mode
        panels.DREAMPROP_PT_generate.draw(Drawable(RecordingLayout(calls), panels.DREAMPROP_PT_generate), bpy.context)
    assert calls.count("template_icon") == 3 and "template_ID" in calls, calls
    dp.image_source = 'NONE'
    bpy.data.objects.remove(cube), bpy.data.objects.remove(cam)
    for o in hidden:
        o.hide_render = False
    dp.jobs.remove(len(dp.jobs) - 1)
    return {"image_png": base64.b64encode(from_image).decode(), "camera_png": base64.b64encode(from_camera).decode()}


if __name__ == "__main__":
    sys.exit(harness.run_checks([
        check_install, check_properties_match_schema, check_presets, check_vocabulary_ui,
        check_import_textured_at_cursor,
        check_image_job_named_after_the_prompt_read, check_fit_to_marker, check_proxy_replaced_in_place, check_batch_markers, check_refine_export,
        check_errors_are_reports, check_panels_draw, check_image_source], OUT))
