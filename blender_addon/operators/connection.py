"""Test connection, start / stop a local backend process.

A backend started here needs a few seconds before it listens (its connection file names its pid
once it does): Test Connection pressed in that window waits for it from a ``bpy.app.timers``
callback instead of failing (and never blocks Blender while it waits).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time

import bpy

from .. import jobs
from ..jobs import UserError
from ..preferences import info_lines
from ..shared import paths
from .common import DreampropOperator

TEST_TIMEOUT_S = 3.0
STARTING_WAIT_S = 30.0   # Test Connection while the backend starts: wait this long for it (busy 2-core CPUs)
RETRY_INTERVAL_S = 0.25


class DREAMPROP_OT_test_connection(DreampropOperator, bpy.types.Operator):
    """Ask the backend for its version, GPU and models"""

    bl_idname = "dreamprop.test_connection"
    bl_label = "Test Connection"

    def run(self, context):
        from ..shared.client import AuthError, ServerError

        pid = _starting_backend_pid()
        if pid is not None:
            _StartupWait.begin(pid)
            self.report({'INFO'}, f"The backend is starting (pid {pid}): testing the connection again "
                                  f"for up to {STARTING_WAIT_S:g} s")
            return
        client = jobs.get_client()
        try:   # the one blocking call of the add-on: a button press, a short timeout
            info = client.request("info_request", {}, timeout=TEST_TIMEOUT_S).content
        except TimeoutError:
            hint = ": is the backend running?" if jobs.prefs().mode == 'LOCAL' else ""
            raise UserError(f"no answer from {client.endpoint} within {TEST_TIMEOUT_S:g} s{hint}") from None
        except (AuthError, ServerError) as exc:
            raise UserError(str(exc)) from None
        jobs.set_server_info(info)
        self.report({'INFO'}, f"Connected to {client.endpoint}: " + "; ".join(info_lines(info)))


def _connection_file() -> str:
    p = jobs.prefs()
    return bpy.path.abspath(p.connection_file) if p.connection_file else paths.default_connection_file()


def _connection_file_pid() -> int | None:
    try:
        with open(_connection_file(), encoding="utf-8") as f:
            return int(json.load(f)["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


_started_at: dict[int, float] = {}   # pid of a backend started here -> time.time() of the start


def _backend_listening(pid: int) -> bool:
    """The connection file is this backend's: it names its pid, or (a launcher in between, as a
    Windows venv's python.exe) it was written after the start."""
    if _connection_file_pid() == pid:
        return True
    try:
        return os.path.getmtime(_connection_file()) >= _started_at.get(pid, float("inf"))
    except OSError:
        return False


def _starting_backend_pid() -> int | None:
    """pid of the backend started from this Blender while it is running but not listening yet."""
    st = jobs.state()
    if jobs.prefs().mode != 'LOCAL' or st.backend is None or st.backend.poll() is not None:
        return None
    return None if _backend_listening(st.backend.pid) else st.backend.pid


class _StartupWait:
    """Test Connection pressed while the backend was starting: a timer polls (file checks and the
    shared client's non-blocking info request, nothing that blocks) until it answers, dies or the
    wait runs out, and reports the outcome like Test Connection does."""

    pid = 0
    deadline = 0.0
    asked = False

    @classmethod
    def begin(cls, pid: int) -> None:
        cls.pid, cls.deadline, cls.asked = pid, time.monotonic() + STARTING_WAIT_S, False
        if not bpy.app.timers.is_registered(wait_for_backend):
            bpy.app.timers.register(wait_for_backend, first_interval=RETRY_INTERVAL_S)


def stop_waiting() -> None:
    """Add-on disabled: no timer may call into its unloaded modules."""
    if bpy.app.timers.is_registered(wait_for_backend):
        bpy.app.timers.unregister(wait_for_backend)


def wait_for_backend() -> float | None:
    """``bpy.app.timers`` callback of ``_StartupWait``: the next interval, or None when done."""
    w, st = _StartupWait, jobs.state()
    if st.backend is None or st.backend.pid != w.pid or st.backend.poll() is not None:
        return None   # it exited (or was stopped): the main timer reports that, with its log's last line
    late = time.monotonic() > w.deadline
    if not w.asked:
        if not _backend_listening(w.pid):
            if late:
                jobs.report('ERROR', f"the backend (pid {w.pid}) did not write {_connection_file()} within "
                                     f"{STARTING_WAIT_S:g} s; log: {st.backend_log}")
                return None
            return RETRY_INTERVAL_S
        jobs.close_client()          # a client made from an older connection file talks to nobody
        st.server_info = {}
        try:
            jobs.send("info", "info_request", {})
        except UserError as exc:
            jobs.report('ERROR', str(exc))
            return None
        w.asked, w.deadline = True, max(w.deadline, time.monotonic() + TEST_TIMEOUT_S)
        return RETRY_INTERVAL_S
    client = st.client
    if st.server_info and client is not None:
        jobs.report('INFO', f"Connected to {client.endpoint}: " + "; ".join(info_lines(st.server_info)))
        return None
    if client is not None and client.auth_error:
        jobs.report('ERROR', client.auth_error)
        return None
    if late:
        endpoint = client.endpoint if client is not None else _connection_file()
        jobs.report('ERROR', f"no answer from {endpoint} within {STARTING_WAIT_S:g} s; log: {st.backend_log}")
        return None
    return RETRY_INTERVAL_S


def default_worker_threads() -> int:
    """All cores this process may use but one: the backend's CPU workers leave Blender a core (next
    to a busy process a worker using every core ran several times slower)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def serve_command(python: str, p) -> list[str]:
    """``python -m backend serve`` + the preferences' extra arguments + the worker thread count
    (the Worker threads preference, else ``default_worker_threads()``) unless the extra arguments
    name one."""
    try:
        args = shlex.split(p.serve_args)
    except ValueError as exc:
        raise UserError(f"extra arguments: {exc}") from None
    if not any(a == "--worker-threads" or a.startswith("--worker-threads=") for a in args):
        args += ["--worker-threads", str(p.worker_threads or default_worker_threads())]
    return [python, "-m", "backend", "serve", *args]


class DREAMPROP_OT_start_backend(DreampropOperator, bpy.types.Operator):
    """Start `python -m backend serve` with the Python set in the preferences (runs on after Blender
    quits, so jobs keep going; stop it with Stop Backend)"""

    bl_idname = "dreamprop.start_backend"
    bl_label = "Start Backend"

    def run(self, context):
        p = jobs.prefs()
        st = jobs.state()
        if st.backend is not None and st.backend.poll() is None:
            raise UserError(f"the backend is already running (pid {st.backend.pid})")
        python = bpy.path.abspath(p.python_path)
        if not python or not os.path.isfile(python):
            raise UserError("set the Python of the dreamprop environment in the add-on preferences")
        workdir = bpy.path.abspath(p.backend_dir) if p.backend_dir else None
        if workdir and not os.path.isdir(workdir):
            raise UserError(f"the dreamprop folder {workdir} does not exist")
        command = serve_command(python, p)
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)   # Blender's Python must not leak into the backend's
        env["PYTHONPATH"] = workdir or ""
        env["PYTHONUNBUFFERED"] = "1"
        if p.connection_file:
            env["DREAMPROP_CONNECTION_FILE"] = _connection_file()
        log_path = os.path.join(jobs.cache_dir("logs"), "backend.log")
        kwargs = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt"
                  else {"start_new_session": True})
        with open(log_path, "ab") as log:
            log.write(f"\n--- {time.ctime()}: {shlex.join(command)}\n".encode())
            log.flush()
            started_at = time.time()
            try:
                proc = subprocess.Popen(command, cwd=workdir, env=env,
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        **kwargs)
            except OSError as exc:
                raise UserError(f"cannot start {python}: {exc}") from None
        _started_at[proc.pid] = started_at
        st.backend, st.backend_log, st.backend_stopping = proc, log_path, False
        jobs.close_client()   # reconnect through the new connection file
        jobs.ensure_timer()
        self.report({'INFO'}, f"Backend starting (pid {proc.pid}); log: {log_path}")


class DREAMPROP_OT_stop_backend(DreampropOperator, bpy.types.Operator):
    """Stop the local backend (the one started here, else the one in the connection file); running
    jobs are checkpointed by the server and resume when it starts again"""

    bl_idname = "dreamprop.stop_backend"
    bl_label = "Stop Backend"

    def run(self, context):
        st = jobs.state()
        if st.backend is not None and st.backend.poll() is None:
            st.backend_stopping = True
            st.backend.terminate()
            self.report({'INFO'}, f"Stopping the backend (pid {st.backend.pid})")
            return
        pid = _connection_file_pid()
        if pid is None:
            raise UserError(f"no local backend to stop (no usable connection file at {_connection_file()})")
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError as exc:
            raise UserError(f"cannot stop pid {pid}: {exc}") from None
        jobs.close_client()
        self.report({'INFO'}, f"Stopping the backend (pid {pid})")


CLASSES = (DREAMPROP_OT_test_connection, DREAMPROP_OT_start_backend, DREAMPROP_OT_stop_backend)
