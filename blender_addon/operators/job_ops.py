"""Operators on the jobs list: cancel (one / batch / all), import again, remove, report."""

from __future__ import annotations

import os

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from .. import jobs
from ..jobs import UserError
from .common import DreampropOperator, remove_job


def _job(context, index: int):
    dp = context.scene.dreamprop
    index = dp.active_job_index if index < 0 else index
    if not 0 <= index < len(dp.jobs):
        raise UserError("no such job in this scene's list")
    return dp.jobs[index]


class DREAMPROP_OT_cancel(DreampropOperator, bpy.types.Operator):
    """Cancel a running job (index -1: the active one), every job of a batch, or all jobs"""

    bl_idname = "dreamprop.cancel"
    bl_label = "Cancel"

    index: IntProperty(default=-1, options={'SKIP_SAVE'})
    batch_id: StringProperty(options={'SKIP_SAVE'})
    all: bpy.props.BoolProperty(options={'SKIP_SAVE'})

    def run(self, context):
        dp = context.scene.dreamprop
        if self.all or self.batch_id:
            targets = [j for j in dp.jobs if j.active and (self.all or j.batch_id == self.batch_id)]
        else:
            targets = [_job(context, self.index)]
        for job in targets:
            jobs.cancel(job)
        self.report({'INFO'}, f"cancelling {len(targets)} job(s)")


class DREAMPROP_OT_import_again(DreampropOperator, bpy.types.Operator):
    """Import a finished job's result again (from the cache, else from the server)"""

    bl_idname = "dreamprop.import_again"
    bl_label = "Import Again"
    bl_options = {'REGISTER', 'UNDO'}

    index: IntProperty(default=-1, options={'SKIP_SAVE'})

    def run(self, context):
        job = _job(context, self.index)
        if not job.job_id:
            raise UserError("this job has no result")
        if job.result_path and os.path.exists(bpy.path.abspath(job.result_path)):
            jobs.import_result(context.scene, job)
        else:
            jobs.send("result", "result_request", {"job_id": job.job_id}, job_id=job.job_id)
            self.report({'INFO'}, "asking the server for the result")


class DREAMPROP_OT_remove_job(DreampropOperator, bpy.types.Operator):
    """Remove a job from the list (cancels it first when it is still running)"""

    bl_idname = "dreamprop.remove_job"
    bl_label = "Remove Job"
    bl_options = {'REGISTER', 'UNDO'}

    index: IntProperty(default=-1, options={'SKIP_SAVE'})

    def run(self, context):
        job = _job(context, self.index)
        if job.active:
            jobs.cancel(job)
        from .. import importer
        importer.remove_proxy(job)
        remove_job(context.scene, job)


class DREAMPROP_OT_report(bpy.types.Operator):
    """Show a message from the background timer as a Blender report"""

    bl_idname = "dreamprop.report"
    bl_label = "Dreamprop Report"
    bl_options = {'INTERNAL'}

    level: EnumProperty(items=[('INFO', "Info", ""), ('WARNING', "Warning", ""), ('ERROR', "Error", "")])
    message: StringProperty()

    def execute(self, context):
        self.report({self.level}, self.message)
        return {'FINISHED'}


CLASSES = (DREAMPROP_OT_cancel, DREAMPROP_OT_import_again, DREAMPROP_OT_remove_job, DREAMPROP_OT_report)
