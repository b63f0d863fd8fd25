"""End to end in real Blender against a real backend process (run by tests/test_addon_e2e.py).

usage: <bpy python> scenario_e2e.py <addon.zip> <config.json> <results.json>
config: {"python": backend interpreter, "root": repo, "port": free TCP port, "out": output folder,
         optional "checks": [names to run], "serve_args": the backend's serve flags}

The backend is started the way an artist starts it: the add-on's Start Backend button (local mode,
python + folder from the preferences), on loopback, CPU, the built-in tiny-random prior. The timer
function is pumped by hand (background Blender runs no timers). Operators are called as the panel
buttons call them.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import bpy
import numpy as np
from mathutils import Euler, Vector

import harness

ZIP, CONFIG, OUT = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
TINY = dict(model="tiny-random", steps=4, resolution_schedule="32x1", samples_per_ray=32, mesh_resolution=32,
            texture_size=64, face_budget=2000, hash_log2_size=12, preview_interval=2, proxy_mesh_interval=2,
            checkpoint_interval=2, albedo_warmup_steps=2, orientation_ramp_steps=2, fine_steps=3,
            fine_resolution=32)
JOB_TIMEOUT = 240.0
REFINE_TIMEOUT = 900.0   # the engine builds the mesh's SDF first: minutes on a busy 2-core CPU
measure = {"ticks_before_reload": None}


def scene():
    return bpy.context.scene


def set_panel(**values):
    pg = scene().dreamprop.settings
    for k, v in {**TINY, **values}.items():
        setattr(pg, k, v)
    pg.seed_random = False


def job_of(job_id):
    return next(j for j in scene().dreamprop.jobs if j.job_id == job_id)


def latest_job():
    return scene().dreamprop.jobs[-1]


def finished(request_ids):
    jobs = [j for j in scene().dreamprop.jobs if j.request_id in request_ids]
    bad = [j for j in jobs if j.state in ('FAILED', 'CANCELLED')]
    assert not bad, [(j.prompt, j.state, j.message) for j in bad]
    return all(j.state == 'FINISHED' for j in jobs)


def check_start_backend():
    harness.install(ZIP)
    p = harness.prefs()
    p.mode = 'LOCAL'
    p.python_path = CONFIG["python"]
    p.backend_dir = CONFIG["root"]
    # (config "serve_args": e.g. a Ray-backed server, tests/test_server_ray.py)
    p.serve_args = CONFIG.get("serve_args") or f"--port {CONFIG['port']} --devices cpu --workers 1"
    t0 = time.monotonic()
    assert bpy.ops.dreamprop.start_backend() == {'FINISHED'}
    jobs = harness.module("jobs")
    with open(os.path.join(CONFIG["out"], "backend.pid"), "w") as f:
        f.write(str(jobs.state().backend.pid))
    # Test Connection right away: "the backend is starting", and a timer waits for its answer
    assert bpy.ops.dreamprop.test_connection() == {'FINISHED'}
    harness.run_timer(harness.module("operators.connection").wait_for_backend, 120, what="wait for the backend")
    info = jobs.state().server_info
    assert info["server_version"] and "builtin" in jobs.server_models(), info
    lines = harness.module("preferences").info_lines(info)
    return {"startup_s": time.monotonic() - t0, "info": lines}


def check_failed_job_is_reported():
    """A job the worker cannot run: the server's message reaches the job list and a report."""
    set_panel(prompt="a chair", model="no-such-model")
    assert bpy.ops.dreamprop.generate() == {'FINISHED'}
    harness.pump(lambda: latest_job().state == 'FAILED', JOB_TIMEOUT, what="the failed event")
    job = latest_job()
    reports = harness.module("jobs").state().reports
    assert "no-such-model" in job.message and "Traceback" not in job.message, job.message
    assert reports[-1][0] == 'ERROR' and job.message in reports[-1][1], reports[-1]
    return {"message": job.message}


def check_unknown_prompt_warning():
    """A prompt the built-in prior does not know: the server's warning, naming the nearest known
    prompts, reaches the job record (drawn in the panel) and a warning report; the job still runs."""
    set_panel(prompt="a blue teapot", model="builtin", seed=5)
    assert bpy.ops.dreamprop.generate() == {'FINISHED'}
    request_id = latest_job().request_id
    harness.pump(lambda: latest_job().job_id, JOB_TIMEOUT, what="the submit reply")
    job = latest_job()
    assert job.request_id == request_id and job.state in ('QUEUED', 'RUNNING', 'FINISHED'), job.state
    assert "vocabulary" in job.warning and "'a blue " in job.warning, job.warning
    reports = harness.module("jobs").state().reports
    assert ('WARNING', job.warning) in reports, reports[-3:]
    assert bpy.ops.dreamprop.cancel(index=len(scene().dreamprop.jobs) - 1) == {'FINISHED'}
    harness.pump(lambda: latest_job().state in ('CANCELLED', 'FINISHED', 'FAILED'), JOB_TIMEOUT,
                 what="the job to end")
    assert latest_job().state != 'FAILED', latest_job().message
    return {"warning": job.warning}


def check_generate_then_reload_reattaches():
    """Generate at the cursor; after the first preview the add-on is reloaded (disable + enable, fresh
    modules); the job is re-attached from the saved jobs list and its result imported."""
    sc = scene()
    sc.cursor.location = (2.0, -1.0, 0.5)
    set_panel(prompt="a red mushroom", seed=11)
    t0 = time.perf_counter()
    assert bpy.ops.dreamprop.generate() == {'FINISHED'}
    operator_ms = 1e3 * (time.perf_counter() - t0)
    job = latest_job()
    request_id = job.request_id
    jobs = harness.module("jobs")
    harness.pump(lambda: jobs.state().first_preview_s, JOB_TIMEOUT, what="the first preview")
    img = bpy.data.images.get(jobs.PREVIEW_IMAGE)
    assert img is not None and img.size[0] > 0 and img["dreamprop_job_id"] == job.job_id
    harness.pump(lambda: job_of(job.job_id).proxy is not None, JOB_TIMEOUT, what="the proxy mesh")
    proxy = job_of(job.job_id).proxy
    assert len(proxy.data.polygons) > 0 and (proxy.matrix_world.translation - sc.cursor.location).length < 1e-5
    job_id, first_preview = job.job_id, dict(jobs.state().first_preview_s)
    measure["ticks_before_reload"] = jobs.stats()
    assert job_of(job_id).state == 'RUNNING', job_of(job_id).state

    harness.reload_addon()
    jobs = harness.module("jobs")
    assert jobs.state().client is None and job_of(job_id).active
    harness.pump(lambda: finished({request_id}), JOB_TIMEOUT, what="the job to finish after the reload")
    job = job_of(job_id)
    obj = job.result
    assert obj is not None and obj.type == 'MESH' and obj.name == "a red mushroom"
    assert (obj.matrix_world.translation - Vector((2.0, -1.0, 0.5))).length < 1e-5
    images = [n.image for m in obj.data.materials for n in m.node_tree.nodes if n.type == 'TEX_IMAGE' and n.image]
    assert images and images[0].size[0] == TINY["texture_size"], images
    assert obj["dreamprop_job_id"] == job_id and obj["dreamprop_prompt"] == "a red mushroom"
    assert obj["dreamprop_seed"] == 11
    stored = json.loads(obj["dreamprop_settings"])
    assert all(stored[k] == v for k, v in TINY.items()), stored
    assert job.proxy is None and not [o for o in bpy.data.objects if "dreamprop_proxy_of" in o]
    lo, hi = harness.world_bounds(obj)
    return {"operator_ms": operator_ms, "first_preview_s": first_preview[job_id], "faces": len(obj.data.polygons),
            "size": (hi - lo).tolist(), "ticks_after_reload": jobs.stats()}


def check_cancel_mid_run():
    set_panel(prompt="a thing to cancel", steps=400, checkpoint_interval=0)
    before = set(bpy.data.objects)
    assert bpy.ops.dreamprop.generate() == {'FINISHED'}
    job = latest_job()
    request_id = job.request_id
    harness.pump(lambda: latest_job().state == 'RUNNING' and latest_job().step > 0, JOB_TIMEOUT,
                 what="the job to run")
    job = latest_job()
    step = job.step
    assert bpy.ops.dreamprop.cancel(index=len(scene().dreamprop.jobs) - 1) == {'FINISHED'}
    harness.pump(lambda: latest_job().state == 'CANCELLED', JOB_TIMEOUT, what="the cancelled event")
    job = latest_job()
    assert job.request_id == request_id and job.result is None and job.proxy is None
    assert set(bpy.data.objects) == before, "no object is left behind"
    status = harness.module("jobs").get_client().status(job.job_id)
    assert status["state"] == "cancelled", status
    first_preview = harness.module("jobs").state().first_preview_s[job.job_id]
    return {"cancelled_at_step": step, "of": job.total, "first_preview_s_warm_worker": first_preview}


def check_refine_cube():
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(-3.0, 2.0, 1.0), rotation=(0.0, 0.0, 0.7))
    cube = bpy.context.active_object
    cube.scale = (1.5, 1.5, 1.5)
    bpy.context.view_layer.update()
    set_panel(prompt="a mossy stone block", seed=3)
    assert bpy.ops.dreamprop.refine() == {'FINISHED'}
    job = latest_job()
    assert job.kind == 'REFINE' and job.source == cube
    request_id = job.request_id
    harness.pump(lambda: finished({request_id}), REFINE_TIMEOUT, what="the refine job")
    obj = latest_job().result
    # the result frame is the cube's frame: same location and rotation, the cube's size
    loc, rot, _ = obj.matrix_world.decompose()
    cloc, crot, _ = cube.matrix_world.decompose()
    assert (loc - cloc).length < 1e-4 and rot.rotation_difference(crot).angle < 1e-4, (loc, cloc)
    lo, hi = harness.world_bounds(obj)
    clo, chi = harness.world_bounds(cube)
    centre_offset = float(np.linalg.norm((lo + hi) / 2 - (clo + chi) / 2))
    assert centre_offset < 0.5, centre_offset
    assert 0.3 < (hi - lo).max() / (chi - clo).max() < 1.6, (hi - lo, chi - clo)
    assert cube.visible_get(), "keep original is on"
    return {"centre_offset": centre_offset, "result_size": (hi - lo).tolist(), "cube_size": (chi - clo).tolist()}


def check_batch_two_markers():
    sc = scene()
    col = bpy.data.collections.new("Prop markers")
    sc.collection.children.link(col)
    specs = [("barrel spot", (0.0, 6.0, 0.0), 0.0, 1.0, 1.0, "a wooden barrel"),
             ("crate spot", (4.0, 6.0, 1.0), math.radians(45), 0.75, 0.5, "a small crate")]
    markers = []
    for name, loc, rz, size, scale, prompt in specs:
        e = bpy.data.objects.new(name, None)
        e.empty_display_type = 'CUBE'
        e.location, e.rotation_euler, e.empty_display_size, e.scale = loc, Euler((0, 0, rz)), size, (scale,) * 3
        e["prompt"] = prompt
        col.objects.link(e)
        markers.append(e)
    sc.dreamprop.batch_collection = col
    set_panel(prompt="", seed=5)
    assert bpy.ops.dreamprop.batch() == {'FINISHED'}
    members = [j for j in sc.dreamprop.jobs if j.kind == 'BATCH']
    assert len(members) == 2 and len({j.batch_id for j in members}) == 1
    ids = {j.request_id for j in members}
    progress_seen = set()

    def done():
        for j in scene().dreamprop.jobs:
            if j.request_id in ids and j.step:
                progress_seen.add(j.marker.name)   # per-marker progress on the job records
        return finished(ids)

    # Blender closes and the file is opened again while the batch runs: the jobs list re-attaches
    harness.pump(lambda: done() or any(j.step for j in scene().dreamprop.jobs if j.request_id in ids),
                 JOB_TIMEOUT, what="batch progress")
    path = os.path.join(CONFIG["out"], "batch.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)   # load_post: a fresh client, jobs attached from the file
    sc = scene()
    markers = [bpy.data.objects[name] for name, *_ in specs]
    reopened = {j.request_id: j.state for j in sc.dreamprop.jobs if j.request_id in ids}
    harness.pump(done, 2 * JOB_TIMEOUT, what="both batch jobs")
    out = {"states_when_reopened": reopened}
    for j in sc.dreamprop.jobs:
        if j.request_id not in ids:
            continue
        marker, obj = j.marker, j.result
        assert obj is not None and obj.name.startswith(marker["prompt"])
        lo, hi = harness.world_bounds(obj)
        expected = 2 * marker.empty_display_size * marker.scale[0]
        centre = (lo + hi) / 2
        assert np.allclose(centre, tuple(marker.location), atol=0.02 * expected + 1e-3), (centre, marker.location)
        # fitted in the marker's frame: the largest local side equals the marker's size
        local = np.array([tuple(Vector(c)) for c in obj.bound_box])
        local_size = (local.max(0) - local.min(0)) * np.array(obj.matrix_world.to_scale())
        assert abs(local_size.max() - expected) < 1e-3 * expected, (local_size, expected)
        _, rot, _ = obj.matrix_world.decompose()
        assert rot.rotation_difference(marker.matrix_world.to_quaternion()).angle < 1e-4
        out[marker.name] = {"size": local_size.tolist(), "expected": expected}
    assert progress_seen == {m.name for m in markers}, progress_seen
    return out


def check_render_cycles():
    """The picture an artist would see: the generated prop, Cycles on CPU."""
    sc = scene()
    obj = next(o for o in bpy.data.objects if o.get("dreamprop_prompt") == "a red mushroom")
    for o in bpy.data.objects:
        o.hide_render = o != obj
    lo, hi = harness.world_bounds(obj)
    centre, radius = Vector(((lo + hi) / 2).tolist()), float(np.linalg.norm(hi - lo)) / 2
    cam = bpy.data.objects.new("render cam", bpy.data.cameras.new("render cam"))
    sc.collection.objects.link(cam)
    cam.location = centre + Vector((1.2, -2.2, 1.0)).normalized() * radius * 3.2
    cam.rotation_euler = (centre - cam.location).to_track_quat('-Z', 'Y').to_euler()
    sun = bpy.data.objects.new("render sun", bpy.data.lights.new("render sun", 'SUN'))
    sun.data.energy = 3.0
    sun.rotation_euler = (0.6, 0.2, 0.8)
    sc.collection.objects.link(sun)
    sc.camera = cam
    world = sc.world or bpy.data.worlds.new("World")
    sc.world = world
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.35, 0.38, 0.45, 1)
    sc.render.engine = 'CYCLES'
    sc.cycles.device = 'CPU'
    sc.cycles.samples = 16
    sc.cycles.use_denoising = False
    sc.render.resolution_x = sc.render.resolution_y = 320
    sc.render.filepath = os.path.join(CONFIG["out"], "render.png")
    t0 = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    assert os.path.isfile(sc.render.filepath)        # its content is checked by test_cycles_render
    return {"png": sc.render.filepath, "seconds": time.perf_counter() - t0}


def check_stop_backend():
    jobs = harness.module("jobs")
    proc = jobs.state().backend
    assert proc is None   # started by the add-on before its reload: found through the connection file
    assert bpy.ops.dreamprop.stop_backend() == {'FINISHED'}
    with open(os.path.join(CONFIG["out"], "backend.pid")) as f:
        pid = int(f.read())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return {"stopped": pid}
        try:
            os.waitpid(pid, os.WNOHANG)   # our child: reap it
        except ChildProcessError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"backend {pid} still running")


def summary():
    jobs = harness.module("jobs")
    return {"ticks_before_reload": measure["ticks_before_reload"], "ticks_after_reload": jobs.stats(),
            "reports": jobs.state().reports[-20:]}


if __name__ == "__main__":
    chosen = CONFIG.get("checks")
    checks = [check_start_backend, check_generate_then_reload_reattaches, check_failed_job_is_reported,
              check_unknown_prompt_warning,
              check_cancel_mid_run, check_batch_two_markers, check_render_cycles, check_refine_cube,
              check_stop_backend, summary]
    sys.exit(harness.run_checks([c for c in checks if not chosen or c.__name__ in chosen or
                                 c.__name__ in ("check_start_backend", "check_stop_backend", "summary")], OUT))
