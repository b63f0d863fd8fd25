"""Operators: generate / re-run, cancel, refine, batch, import again, connection and backend."""

from __future__ import annotations

import bpy

from . import batch, connection, generate, job_ops, refine

MODULES = (generate, job_ops, refine, batch, connection)


def classes():
    return [cls for m in MODULES for cls in m.CLASSES]


def register():
    for cls in classes():
        bpy.utils.register_class(cls)


def unregister():
    connection.stop_waiting()
    for cls in reversed(classes()):
        bpy.utils.unregister_class(cls)
