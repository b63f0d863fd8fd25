"""Dreamprop for Blender: text-to-3D props from a sidebar, with live previews, refine and batch.

Layout: ``preferences`` (backend mode and connection), ``properties`` (settings built from the shared
schema, jobs list), ``panels`` (3D Viewport sidebar), ``operators/`` (generate, cancel, refine,
batch, import again, connection, backend process), ``jobs`` (the timer that talks to the server),
``importer`` (GLB import, placement, proxy meshes, refine export), ``glb`` (the bpy-free GLB
reader of the proxy meshes), ``presets`` (quality presets).
``shared/`` is the project's protocol/client/settings package, copied in by build_addon.py.
"""

from __future__ import annotations

import bpy
from bpy.app.handlers import persistent

from . import jobs, operators, panels, preferences, properties

MODULES = (properties, preferences, operators, panels, jobs)


@persistent
def _on_load_post(*_args):
    # another .blend: start a fresh client so every active job of this file is attached again
    # from its own saved event sequence number
    jobs.close_client()
    jobs.ensure_timer()


def register():
    for module in MODULES:
        module.register()
    bpy.app.handlers.load_post.append(_on_load_post)


def unregister():
    if _on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load_post)
    for module in reversed(MODULES):
        module.unregister()
