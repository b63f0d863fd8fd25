"""Test connection, start / stop a local backend process."""

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


class DREAMPROP_OT_test_connection(DreampropOperator, bpy.types.Operator):
    """Ask the backend for its version, GPU and models"""

    bl_idname = "dreamprop.test_connection"
    bl_label = "Test Connection"

    def run(self, context):
        from ..shared.client import AuthError, ServerError

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
        try:
            args = shlex.split(p.serve_args)
        except ValueError as exc:
            raise UserError(f"extra arguments: {exc}") from None
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
            log.write(f"\n--- {time.ctime()}: {python} -m backend serve {' '.join(args)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen([python, "-m", "backend", "serve", *args], cwd=workdir, env=env,
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        **kwargs)
            except OSError as exc:
                raise UserError(f"cannot start {python}: {exc}") from None
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
        path = _connection_file()
        try:
            with open(path, encoding="utf-8") as f:
                pid = int(json.load(f)["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"no local backend to stop (no usable connection file at {path})") from None
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError as exc:
            raise UserError(f"cannot stop pid {pid}: {exc}") from None
        jobs.close_client()
        self.report({'INFO'}, f"Stopping the backend (pid {pid})")


CLASSES = (DREAMPROP_OT_test_connection, DREAMPROP_OT_start_backend, DREAMPROP_OT_stop_backend)
