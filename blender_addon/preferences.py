"""Add-on preferences: where the backend is (local process or remote server) and how to reach it."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from . import jobs
from .shared import paths


def _reset_client(self, context):
    jobs.close_client()


class DREAMPROP_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    mode: EnumProperty(
        name="Backend", update=_reset_client,
        items=[('LOCAL', "Local", "a backend process on this computer, found through its connection file"),
               ('REMOTE', "Remote", "a server on another machine, reached with CurveZMQ key files")])
    # local
    python_path: StringProperty(
        name="Python", subtype='FILE_PATH',
        description="the Python of the environment where dreamprop's backend is installed "
                    "(e.g. .../dreamprop/.venv/bin/python); not Blender's own Python")
    backend_dir: StringProperty(
        name="Dreamprop folder", subtype='DIR_PATH',
        description="the dreamprop checkout / install folder (working directory of the backend); "
                    "empty when the backend package is installed into that Python")
    serve_args: StringProperty(
        name="Extra arguments", description="added to `python -m backend serve` (e.g. --device cpu)")
    worker_threads: IntProperty(
        name="Worker threads", default=0, min=0, max=1024,
        description="CPU threads of each worker of a backend started here (serve --worker-threads); "
                    "0: every core but one, so Blender keeps a core (next to a busy Blender a worker "
                    "on every core runs several times slower)")
    connection_file: StringProperty(
        name="Connection file", subtype='FILE_PATH', update=_reset_client,
        description=f"the local server's connection file (empty: {paths.default_connection_file()})")
    local_client_secret_key_file: StringProperty(
        name="Client key", subtype='FILE_PATH', update=_reset_client,
        description="only for a local server started with --curve: this client's .key_secret file")
    # remote
    host: StringProperty(name="Host", default="", update=_reset_client)
    port: IntProperty(name="Port", default=paths.DEFAULT_PORT, min=1, max=65535, update=_reset_client)
    server_public_key_file: StringProperty(
        name="Server public key", subtype='FILE_PATH', update=_reset_client,
        description="the server's .key file (from `python -m backend keygen` on the server)")
    client_secret_key_file: StringProperty(
        name="Client secret key", subtype='FILE_PATH', update=_reset_client,
        description="this client's .key_secret file; its public key must be allowed on the server")
    timeout: FloatProperty(name="Timeout", default=10.0, min=1.0, max=300.0, subtype='TIME_ABSOLUTE',
                           update=_reset_client, description="seconds to wait for a reply")

    def draw(self, context):
        layout = self.layout
        layout.row().prop(self, "mode", expand=True)
        box = layout.box()
        if self.mode == 'LOCAL':
            box.prop(self, "python_path")
            box.prop(self, "backend_dir")
            box.prop(self, "serve_args")
            box.prop(self, "worker_threads")
            row = box.row()
            running = jobs.state().backend is not None
            row.operator("dreamprop.start_backend", icon='PLAY')
            row.operator("dreamprop.stop_backend", icon='CANCEL')
            if running:
                box.label(text=f"Backend started by Blender, pid {jobs.state().backend.pid}; "
                               f"log: {jobs.state().backend_log}", icon='INFO')
            box.prop(self, "connection_file")
            box.prop(self, "local_client_secret_key_file")
            box.label(text="Loopback connection; it still counts as network use for Blender's online access.",
                      icon='INFO')
        else:
            row = box.row()
            row.prop(self, "host")
            row.prop(self, "port")
            box.prop(self, "server_public_key_file")
            box.prop(self, "client_secret_key_file")
            if not bpy.app.online_access:
                box.label(text="Online access is off (Preferences > System > Network): remote mode is blocked",
                          icon='ERROR')
        layout.prop(self, "timeout")
        layout.operator("dreamprop.test_connection", icon='LINKED')
        info = jobs.state().server_info
        if info:
            col = layout.column(align=True)
            for line in info_lines(info):
                col.label(text=line)


def info_lines(info: dict) -> list[str]:
    """The server's info reply as a few readable lines (version, GPU, models, queue)."""
    version = info.get("server_version") or info.get("version") or "?"
    lines = [f"Server {version}, protocol {info.get('protocol_version', '?')}"]
    gpus = info.get("gpus") or []
    if gpus:
        names = [g.get("name", str(g)) if isinstance(g, dict) else str(g) for g in gpus]
        lines.append("GPU: " + ", ".join(names))
    else:
        lines.append(f"Device: {info.get('device', 'cpu')} (no GPU)")
    lines.append("Models: " + (", ".join(jobs.server_models()) or "none"))
    if "queue_length" in info or "workers" in info:
        workers = info.get("workers")
        nworkers = len(workers) if isinstance(workers, (list, dict)) else workers
        lines.append(f"Queue: {info.get('queue_length', 0)} jobs, workers: {nworkers}")
    return lines


def register():
    bpy.utils.register_class(DREAMPROP_AP_preferences)


def unregister():
    bpy.utils.unregister_class(DREAMPROP_AP_preferences)
