"""A local backend started from Blender, as a new user meets it (run by tests/test_addon_local_backend.py).

usage: <bpy python> scenario_local_backend.py <addon.zip> <config.json> <results.json>
config: {"python": backend interpreter, "root": repo, "port": free TCP port, "out": output folder}

Real Blender (bpy), the add-on installed from its zip, real ``python -m backend serve`` processes
started by the Start Backend button (loopback, ``--workers 0``: no torch, a few seconds to start).
Background Blender runs no timers, so the add-on's timer functions are called by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile

import bpy

import harness

ZIP, CONFIG, OUT = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
START_TIMEOUT = 120.0   # a busy 2-core CI machine; the add-on's own wait is 30 s


@contextlib.contextmanager
def captured_stdout(into: list):
    """What Blender prints on fd 1 meanwhile (operator reports: "Info: ..."), appended to ``into``."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            into.append(tmp.read().decode("utf-8", "replace"))
    print(into[-1], end="")   # keep it in the log too


def connection():
    return harness.module("operators.connection")


def setup_prefs(**values):
    p = harness.prefs()
    p.mode = 'LOCAL'
    p.python_path = CONFIG["python"]
    p.backend_dir = CONFIG["root"]
    p.serve_args = f"--port {CONFIG['port']} --workers 0"
    p.connection_file = ""
    p.worker_threads = 0
    for k, v in values.items():
        setattr(p, k, v)
    return p


def start_backend():
    assert bpy.ops.dreamprop.start_backend() == {'FINISHED'}
    proc = harness.module("jobs").state().backend
    with open(os.path.join(CONFIG["out"], "backend.pids"), "a") as f:   # the pytest side kills leftovers
        f.write(f"{proc.pid}\n")
    return proc


def stop_backend(proc):
    """Stop Backend, as the button does; the process is gone when this returns."""
    if proc.poll() is None:
        assert bpy.ops.dreamprop.stop_backend() == {'FINISHED'}
        proc.wait(60)
    harness.module("jobs").tick()   # notices the exit, drops the client


@contextlib.contextmanager
def started_backend():
    """Start Backend for the duration of a check (stopped even when the check fails)."""
    proc = start_backend()
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)
        harness.module("jobs").tick()


def wait_for_backend_timer() -> list:
    """Run the add-on's wait-for-backend timer (as Blender would) until it stops; its reports."""
    jobs, fn = harness.module("jobs"), connection().wait_for_backend
    assert bpy.app.timers.is_registered(fn), "Test Connection did not start waiting for the backend"
    before = len(jobs.state().reports)
    harness.run_timer(fn, START_TIMEOUT, what="wait for the backend")
    return jobs.state().reports[before:]


def check_install():
    harness.install(ZIP)
    return {"module": harness.ADDON_MODULE}


def check_test_connection_right_after_start_waits_for_the_backend():
    """Test Connection pressed just after Start Backend: not "press Start Backend" but "starting", then
    the answer once the server listens, from a timer (the operator itself returns at once)."""
    setup_prefs()
    jobs = harness.module("jobs")
    out = []
    with started_backend() as proc:
        with captured_stdout(out):
            result = bpy.ops.dreamprop.test_connection()   # an ERROR report would raise RuntimeError here
        assert result == {'FINISHED'}, result
        assert "backend is starting" in out[0] and str(proc.pid) in out[0], out[0]
        reports = wait_for_backend_timer()
        assert reports and reports[-1][0] == 'INFO' and reports[-1][1].startswith("Connected to"), reports
        info = jobs.state().server_info
        assert info.get("server_version") and info.get("owner"), info
        # once it listens, Test Connection answers at once again
        with captured_stdout(out):
            assert bpy.ops.dreamprop.test_connection() == {'FINISHED'}
        assert "Connected to" in out[-1] and not bpy.app.timers.is_registered(connection().wait_for_backend), out
        stop_backend(proc)
    return {"operator_report": out[0].strip(), "timer_report": reports[-1][1]}


def check_connection_file_preference_is_used_by_start_backend():
    """The Connection file preference: the backend started here writes it there and Test Connection
    reaches the server through it."""
    path = os.path.join(CONFIG["out"], "custom place", "my-connection.json")
    assert not os.path.exists(path)
    setup_prefs(connection_file=path)
    jobs = harness.module("jobs")
    with started_backend() as proc:
        assert bpy.ops.dreamprop.test_connection() == {'FINISHED'}
        reports = wait_for_backend_timer()
        assert reports and reports[-1][1].startswith("Connected to"), reports
        with open(path) as f:
            written = json.load(f)
        assert written["pid"] == proc.pid and written["port"] == CONFIG["port"], written
        assert jobs.get_client().endpoint == written["endpoint"]
        stop_backend(proc)
    return {"connection_file": path, "written_by_pid": written["pid"], "backend_pid": proc.pid}


def check_started_backend_leaves_blender_a_core():
    """Start Backend passes --worker-threads: every core but one by default, the preference when set,
    nothing of its own when the extra arguments already give one; the server accepts the flag."""
    cores = len(os.sched_getaffinity(0))
    setup_prefs()
    with started_backend() as proc:
        args = list(proc.args)
        assert args.count("--worker-threads") == 1, args
        threads = int(args[args.index("--worker-threads") + 1])
        assert threads == max(1, cores - 1), (threads, cores)
        assert threads < cores or cores == 1, (threads, cores)
        # the real server took the flag: it answers (an unknown flag would have ended it with status 2)
        assert bpy.ops.dreamprop.test_connection() == {'FINISHED'}
        reports = wait_for_backend_timer() if bpy.app.timers.is_registered(connection().wait_for_backend) else []
        assert harness.module("jobs").state().server_info.get("server_version"), reports
        stop_backend(proc)

    p = setup_prefs(worker_threads=3)
    command = connection().serve_command("python", p)
    assert command[command.index("--worker-threads") + 1] == "3", command
    p = setup_prefs(worker_threads=3, serve_args="--workers 0 --worker-threads=2")
    command = connection().serve_command("python", p)
    assert "--worker-threads=2" in command and "--worker-threads" not in command, command
    return {"cores": cores, "worker_threads": threads, "command": args[1:]}


def check_live_proxy_settings():
    """What Generate sends with "Live proxy mesh" on: the built-in prior's preset as it is, and the same
    preset cut to a tiny CPU budget (the pytest side runs a real generation with the latter)."""
    common = harness.module("operators.common")
    scene = bpy.context.scene
    pg = scene.dreamprop.settings
    scene.dreamprop.show_proxy = True
    pg.quality = 'BUILTIN'
    pg.seed_random = False
    pg.prompt = "a red cube"
    preset = common.validated(common.panel_settings(scene))
    for key, value in dict(model="tiny-random", steps=10, mesh_resolution=32, texture_size=64, face_budget=2000,
                           hash_log2_size=12, albedo_warmup_steps=2).items():
        setattr(pg, key, value)
    tiny = common.validated(common.panel_settings(scene))
    return {"preset": preset, "tiny": tiny}


if __name__ == "__main__":
    sys.exit(harness.run_checks([
        check_install, check_test_connection_right_after_start_waits_for_the_backend,
        check_connection_file_preference_is_used_by_start_backend, check_started_backend_leaves_blender_a_core,
        check_live_proxy_settings], OUT))
