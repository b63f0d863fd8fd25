"""Batch from markers: every Empty of a collection (or with a 'prompt' property) becomes a job."""

from __future__ import annotations

import uuid

import bpy

from .. import importer, jobs
from ..jobs import UserError
from ..shared import settings as S
from .common import DreampropOperator, new_job, panel_settings, validated


def find_markers(scene) -> list:
    """Empties of the chosen collection (recursively), plus any Empty with a 'prompt' property."""
    dp = scene.dreamprop
    markers = []
    if dp.batch_collection is not None:
        markers += [o for o in dp.batch_collection.all_objects if o.type == 'EMPTY']
    if dp.batch_prompt_property:
        markers += [o for o in scene.objects if o.type == 'EMPTY' and "prompt" in o and o not in markers]
    return sorted(markers, key=lambda o: o.name)


def marker_overrides(marker) -> dict:
    """A marker's custom properties named like a setting (prompt, seed, steps, ...) override the panel."""
    names = set(S.names())
    return {k: (v if not hasattr(v, "to_dict") else v.to_dict()) for k, v in marker.items() if k in names}


class DREAMPROP_OT_batch(DreampropOperator, bpy.types.Operator):
    """One job per marker; each result is placed at its marker's location, rotation and size"""

    bl_idname = "dreamprop.batch"
    bl_label = "Generate Batch"
    bl_options = {'REGISTER', 'UNDO'}

    def run(self, context):
        scene = context.scene
        markers = find_markers(scene)
        if not markers:
            raise UserError("no markers: choose a collection of Empties, or give Empties a 'prompt' "
                            "custom property")
        planned = []
        for marker in markers:   # validate all first: a bad marker must not start half a batch
            settings = panel_settings(scene, **marker_overrides(marker))
            try:
                planned.append((marker, validated(settings)))
            except UserError as exc:
                raise UserError(f"marker {marker.name}: {exc}") from None
        batch_id = uuid.uuid4().hex
        for marker, settings in planned:
            job = new_job(scene, 'BATCH', marker.matrix_world.copy(),
                          fit_size=importer.marker_fit_size(marker), marker=marker, batch_id=batch_id)
            jobs.submit(scene, job, settings)
        self.report({'INFO'}, f"Batch of {len(planned)} jobs submitted")


CLASSES = (DREAMPROP_OT_batch,)
