"""Refine the selected mesh: resume a generated one's job, or send any mesh as GLB, with a prompt.

The backend refines with its fine stage alone (``backend/engine/stages.py``): a signed distance field
started on the mesh itself (or on the parent job's field), so the shape is kept, sharpened and
textured, for the panel's ``fine_steps``."""

from __future__ import annotations

import bpy

from .. import importer, jobs
from ..jobs import UserError
from .common import DreampropOperator, new_job, panel_settings, validated


class DREAMPROP_OT_refine(DreampropOperator, bpy.types.Operator):
    """Sharpen and texture the active mesh with the prompt and fine-stage steps of the panel, keeping
    its shape; the result is placed on the original (kept or hidden, see the option)"""

    bl_idname = "dreamprop.refine"
    bl_label = "Refine Selected"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == 'MESH'

    def run(self, context):
        scene, obj = context.scene, context.active_object
        dp = scene.dreamprop
        prompt = dp.settings.prompt.strip() or str(obj.get("dreamprop_prompt", ""))
        settings = validated(panel_settings(scene, prompt=prompt))
        try:
            glb, glb_matrix = importer.export_refine_glb(obj, context)
        except RuntimeError as exc:
            raise UserError(str(exc)) from None
        parent = str(obj.get("dreamprop_job_id", "")) if dp.refine_use_checkpoint else ""
        fields = dict(source=obj, keep_original=dp.refine_keep_original)
        if parent:
            # the server starts from the parent's checkpoint (or its result mesh): the result
            # comes back in the frame of the original's mesh data
            job = new_job(scene, 'REFINE', obj.matrix_world.copy(), **fields)
            jobs.submit(scene, job, settings, parent_job_id=parent, fallback=(glb, glb_matrix))
        else:
            job = new_job(scene, 'REFINE', glb_matrix, **fields)
            jobs.submit(scene, job, settings, glb=glb)
        self.report({'INFO'}, f"Refining {obj.name}" + (" from its job" if parent else
                                                         f" ({len(glb) // 1024} KiB mesh)"))


CLASSES = (DREAMPROP_OT_refine,)
