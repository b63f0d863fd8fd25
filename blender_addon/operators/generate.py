"""Generate at the 3D cursor (from the prompt, or from the panel's picture: image to 3D); re-run a
generated object's settings (regenerate / variation)."""

from __future__ import annotations

import json
import random

import bpy
from bpy.props import BoolProperty
from mathutils import Matrix

from .. import estimate, image_source, jobs, pictures, presets, properties
from ..jobs import UserError
from ..shared import layering as L
from ..shared import settings as S
from .common import MAX_SEED, DreampropOperator, new_job, panel_settings, validated, with_proxy_interval


class DREAMPROP_OT_generate(DreampropOperator, bpy.types.Operator):
    """Generate a textured prop from the prompt, or from the picture of the image source; it appears at
    the 3D cursor"""

    bl_idname = "dreamprop.generate"
    bl_label = "Generate"
    bl_options = {'REGISTER', 'UNDO'}

    def run(self, context):
        scene = context.scene
        if scene.dreamprop.image_source != 'NONE':
            return self.run_image(context)
        settings = validated(panel_settings(scene))
        job = new_job(scene, 'GENERATE', Matrix.Translation(scene.cursor.location))
        jobs.submit(scene, job, settings)
        self.report({'INFO'}, f"Generating \"{job.prompt}\" (seed {settings['seed']})")

    def run_image(self, context):
        """Image to 3D: the picture of the image source, the image job's settings (shared.layering's
        recommendation for image jobs when the quality is Auto), the picture shown beside the previews."""
        scene = context.scene
        pg = scene.dreamprop.settings
        data, elevation = image_source.reference_png(scene)
        settings = pictures.image_job_settings(
            panel_settings(scene), image_types=S.IMAGE_GUIDANCE_TYPES, auto_quality=pg.quality == 'AUTO',
            recommended=L.recommended_settings(pg.model, pictures.IMAGE_GUIDANCE, presets.device()),
            elevation=elevation)
        settings = validated(settings)
        job = new_job(scene, 'GENERATE', Matrix.Translation(scene.cursor.location))
        image_source.show_reference(job, data)
        jobs.submit(scene, job, settings, image=data)
        self.report({'INFO'}, f"Generating from the picture{' and ' + repr(job.prompt) if job.prompt else ''} "
                              f"(seed {settings['seed']})")


def _stored_settings(obj) -> dict:
    text = obj.get("dreamprop_settings") if obj else None
    if not text:
        raise UserError("select an object made by Dreamprop (it has a dreamprop_settings property)")
    try:
        return json.loads(text)
    except ValueError:
        raise UserError(f"{obj.name}: dreamprop_settings is not valid JSON") from None


class DREAMPROP_OT_rerun(DreampropOperator, bpy.types.Operator):
    """Run the active generated object's settings again, in its place"""

    bl_idname = "dreamprop.rerun"
    bl_label = "Regenerate"
    bl_options = {'REGISTER', 'UNDO'}

    variation: BoolProperty(name="Variation", description="use a new random seed", default=False)

    @classmethod
    def description(cls, context, props):
        return ("Same settings with a new random seed, in the active object's place" if props.variation
                else "Same settings and seed again, in the active object's place")

    @classmethod
    def poll(cls, context):
        return context.active_object is not None and "dreamprop_settings" in context.active_object

    def run(self, context):
        obj = context.active_object
        settings = _stored_settings(obj)
        if self.variation:
            settings["seed"] = random.randint(0, MAX_SEED)
        settings = validated(with_proxy_interval(context.scene, settings))
        job = new_job(context.scene, 'GENERATE', obj.matrix_world.copy())
        jobs.submit(context.scene, job, settings)


class DREAMPROP_OT_load_settings(DreampropOperator, bpy.types.Operator):
    """Copy the active generated object's settings (prompt, seed, everything) into the panel"""

    bl_idname = "dreamprop.load_settings"
    bl_label = "Load Settings"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        return context.active_object is not None and "dreamprop_settings" in context.active_object

    def run(self, context):
        pg = context.scene.dreamprop.settings
        properties.load_settings(pg, _stored_settings(context.active_object))
        pg.seed_random = False


class DREAMPROP_OT_refresh_estimate(DreampropOperator, bpy.types.Operator):
    """Ask the server again for the time and peak memory of the current settings"""

    bl_idname = "dreamprop.refresh_estimate"
    bl_label = "Refresh Estimate"

    def run(self, context):
        estimate.request_refresh()
        jobs.ensure_timer()


CLASSES = (DREAMPROP_OT_generate, DREAMPROP_OT_rerun, DREAMPROP_OT_load_settings, DREAMPROP_OT_refresh_estimate)
