"""The 3D Viewport sidebar tab "Dreamprop": prompt, settings, Generate, progress, refine, batch, jobs."""

from __future__ import annotations

import textwrap

import bpy

from . import estimate, image_source, jobs, presets, properties, vocabulary
from .operators.batch import find_markers
from .shared import settings as S

CATEGORY = "Dreamprop"
CAMERA = ("elevation_min", "elevation_max", "azimuth_min", "azimuth_max", "distance_min", "distance_max",
          "fovy_min", "fovy_max")
OPTIM = ("steps", "resolution_schedule", "guidance_scale", "stages", "hollow", "fine_steps", "fine_resolution")
EXPORT = ("mesh_resolution", "mesh_threshold", "mesh_level", "face_budget", "texture_size", "seal_radius")
MAIN = ("prompt", "negative_prompt", "seed", "model")
STATE_ICONS = {"SUBMITTING": 'EXPORT', "QUEUED": 'SORTTIME', "RUNNING": 'PLAY', "FINISHED": 'CHECKMARK',
               "FAILED": 'ERROR', "CANCELLED": 'CANCEL'}


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_text(job) -> str:
    if job.state == 'RUNNING' and job.total:
        if job.step >= job.total and job.stage:   # exporting: "marching_cubes 17%", ...
            return f"{job.step} / {job.total}, {job.stage}"
        eta = f", ETA {_fmt_time(job.eta_s)}" if job.eta_s else ""
        return f"{job.step} / {job.total}{eta}"
    return job.stage or job.bl_rna.properties["state"].enum_items[job.state].name


def draw_progress(layout, job, *, cancel=True, index=-1) -> None:
    row = layout.row(align=True)
    factor = job.step / job.total if job.total else 0.0
    row.progress(factor=factor, type='BAR', text=progress_text(job))
    if cancel and job.active:
        row.operator("dreamprop.cancel", text="", icon='CANCEL').index = index


def draw_wrapped(layout, text: str, icon: str = 'NONE', width: int = 48) -> None:
    """A long message as several labels (a label cuts its text at the panel's edge)."""
    col = layout.column(align=True)
    for i, line in enumerate(textwrap.wrap(text, width) or [""]):
        col.label(text=line, icon=icon if i == 0 else 'BLANK1')


def draw_vocabulary_hint(layout, pg) -> None:
    """With the built-in prior: say when the prompt is not one it knows (the search offers them)."""
    prompt = pg.prompt.strip()
    if prompt and vocabulary.known(pg.model, prompt) is False:
        n = len(vocabulary.prompts(pg.model))
        layout.label(text=f"Not one of the {pg.model} model's {n} prompts: click the prompt to pick one",
                     icon='INFO')


def draw_setting(layout, pg, name: str) -> None:
    if hasattr(pg, name + properties.OPTIONAL_SUFFIX):
        row = layout.row(align=True)
        sub = row.row(align=True)
        sub.enabled = not getattr(pg, name + properties.OPTIONAL_SUFFIX)
        sub.prop(pg, name)
        row.prop(pg, name + properties.OPTIONAL_SUFFIX, toggle=True)
    else:
        layout.prop(pg, name)


def draw_estimate(layout, pg) -> None:
    """Time and peak memory of the current settings on the server's device (``estimate.py`` fetches it)."""
    estimate.note_settings(properties.settings_dict(pg))
    box = layout.box()
    for i, (text, icon) in enumerate(estimate.lines()):
        if i == 0:
            row = box.row(align=True)
            row.label(text=text, icon=icon)
            row.operator("dreamprop.refresh_estimate", text="", icon='FILE_REFRESH')
        elif icon == 'ERROR':
            draw_wrapped(box, text, icon=icon)
        else:
            box.label(text=text, icon=icon)


class _Panel:
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = CATEGORY


class DREAMPROP_PT_generate(_Panel, bpy.types.Panel):
    bl_idname = "DREAMPROP_PT_generate"
    bl_label = "Dreamprop"

    def draw(self, context):
        layout = self.layout
        dp = context.scene.dreamprop
        pg = dp.settings
        layout.use_property_split = False
        layout.row(align=True).prop(dp, "image_source", expand=True)
        if dp.image_source == 'FILE':
            layout.prop(dp, "image_path", text="")
        elif dp.image_source == 'IMAGE':
            layout.template_ID(dp, "image", open="image.open")
        elif dp.image_source == 'CAMERA':
            camera = context.scene.camera
            layout.label(text=f"Renders {camera.name} on Generate" if camera else "The scene has no active camera",
                         icon='CAMERA_DATA' if camera else 'ERROR')
        layout.prop(pg, "prompt", text="", placeholder="Prompt: what to make" if dp.image_source == 'NONE'
                    else "Prompt (optional): guides too")
        draw_vocabulary_hint(layout, pg)
        layout.prop(pg, "negative_prompt", text="Negative")
        row = layout.row(align=True)
        sub = row.row(align=True)
        sub.enabled = not pg.seed_random
        sub.prop(pg, "seed")
        row.prop(pg, "seed_random", toggle=True, icon='FILE_REFRESH')
        layout.prop(pg, "model")
        row = layout.row(align=True)
        row.prop(pg, "quality", expand=True)
        if not presets.matches(pg, pg.quality):
            layout.label(text="Preset values changed by hand", icon='INFO')
        draw_estimate(layout, pg)
        row = layout.row()
        row.scale_y = 1.5
        row.operator("dreamprop.generate", icon='SHADERFX')
        layout.prop(dp, "show_proxy")
        running = [(i, j) for i, j in enumerate(dp.jobs) if j.active]
        client = jobs.state().client
        if running and (client is None or not client.connected):
            where = client.endpoint if client is not None else "the backend"
            layout.label(text=f"Waiting for {where}...", icon='ERROR')
        for i, job in running[-4:]:
            layout.label(text=job.prompt or ("(from picture)" if job.image_path else "(refine)"),
                         icon=STATE_ICONS[job.state])
            draw_progress(layout, job, index=i)
            if job.warning:
                draw_wrapped(layout, job.warning, icon='ERROR')
        if len(running) > 4:
            layout.label(text=f"... and {len(running) - 4} more (Jobs)")
        img = bpy.data.images.get(jobs.PREVIEW_IMAGE)
        reference = bpy.data.images.get(image_source.REFERENCE_IMAGE)
        if reference is not None and not any(j.image_path for _, j in running):
            reference = None        # the picture only shows while its job runs
        if img is not None or reference is not None:
            box = layout.box()
            _, job = jobs.find_job(job_id=img.get("dreamprop_job_id", "")) if img is not None else (None, None)
            box.label(text=f"Preview: {job.prompt if job else ''}", icon='IMAGE_DATA')
            row = box.row()
            for image, title in ((reference, "Reference"), (img, "Live")):
                if image is not None:
                    col = row.column()
                    col.label(text=title)
                    preview = image.preview or image.preview_ensure()
                    col.template_icon(icon_value=preview.icon_id, scale=8.0 if reference is None else 5.0)


class _SubPanel(_Panel):
    bl_parent_id = "DREAMPROP_PT_generate"
    bl_options = {'DEFAULT_CLOSED'}
    NAMES: tuple = ()

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        pg = context.scene.dreamprop.settings
        col = layout.column(align=True)
        for name in self.NAMES:
            draw_setting(col, pg, name)


class DREAMPROP_PT_optimisation(_SubPanel, bpy.types.Panel):
    bl_label = "Steps and Guidance"
    bl_options = set()
    NAMES = OPTIM


class DREAMPROP_PT_camera(_SubPanel, bpy.types.Panel):
    bl_label = "Cameras"
    NAMES = CAMERA


class DREAMPROP_PT_export(_SubPanel, bpy.types.Panel):
    bl_label = "Export"
    NAMES = EXPORT


class DREAMPROP_PT_advanced(_SubPanel, bpy.types.Panel):
    """Every other setting of shared/settings.py, by group."""

    bl_label = "Advanced"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        pg = context.scene.dreamprop.settings
        shown = set(CAMERA + OPTIM + EXPORT + MAIN)
        for group, fields in S.groups().items():
            rest = [f.name for f in fields if f.name not in shown]
            if rest:
                col = layout.column(align=True)
                col.label(text=group.capitalize())
                for name in rest:
                    draw_setting(col, pg, name)


class DREAMPROP_PT_refine(_Panel, bpy.types.Panel):
    bl_label = "Refine Selected"
    bl_parent_id = "DREAMPROP_PT_generate"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        layout = self.layout
        dp = context.scene.dreamprop
        obj = context.active_object
        if obj is None or obj.type != 'MESH':
            layout.label(text="Select a mesh to refine", icon='INFO')
        else:
            made = "dreamprop_job_id" in obj
            layout.label(text=f"{obj.name}{' (generated)' if made else ''}", icon='MESH_DATA')
            if made and not dp.settings.prompt.strip():
                layout.label(text=f"Prompt: {obj.get('dreamprop_prompt', '')}")
        # Refine runs the fine stage alone, from this mesh: its budget is the fine stage's.
        layout.prop(dp.settings, "fine_steps")
        layout.prop(dp, "refine_keep_original")
        layout.prop(dp, "refine_use_checkpoint")
        layout.operator("dreamprop.refine", icon='MOD_REMESH')
        if obj is not None and "dreamprop_settings" in obj:
            row = layout.row(align=True)
            row.operator("dreamprop.rerun", text="Regenerate", icon='FILE_REFRESH').variation = False
            row.operator("dreamprop.rerun", text="Variation", icon='MOD_NOISE').variation = True
            layout.operator("dreamprop.load_settings", icon='IMPORT')


class DREAMPROP_PT_batch(_Panel, bpy.types.Panel):
    bl_label = "Batch from Markers"
    bl_parent_id = "DREAMPROP_PT_generate"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        layout = self.layout
        dp = context.scene.dreamprop
        layout.prop(dp, "batch_collection")
        layout.prop(dp, "batch_prompt_property")
        n = len(find_markers(context.scene))
        layout.label(text=f"{n} marker{'s' if n != 1 else ''}; a marker's 'prompt' (or any setting) "
                          "property overrides the panel", icon='EMPTY_AXIS')
        layout.operator("dreamprop.batch", icon='OUTLINER_OB_EMPTY')
        batches = {}
        for i, job in enumerate(dp.jobs):
            if job.batch_id:
                batches.setdefault(job.batch_id, []).append((i, job))
        for batch_id, members in list(batches.items())[-3:]:
            box = layout.box()
            done = sum(1 for _, j in members if not j.active)
            row = box.row()
            row.label(text=f"Batch: {done}/{len(members)} done")
            if done < len(members):
                row.operator("dreamprop.cancel", text="Cancel Batch", icon='CANCEL').batch_id = batch_id
            for i, job in members:
                box.label(text=f"{job.marker.name if job.marker else '?'}: {job.prompt}",
                          icon=STATE_ICONS[job.state])
                draw_progress(box, job, index=i)


class DREAMPROP_UL_jobs(bpy.types.UIList):
    def draw_item(self, context, layout, data, job, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.label(text=job.prompt or "(no prompt)", icon=STATE_ICONS[job.state])
        row.label(text=progress_text(job) if job.active else job.bl_rna.properties["state"]
                  .enum_items[job.state].name)


class DREAMPROP_PT_jobs(_Panel, bpy.types.Panel):
    bl_label = "Jobs"
    bl_parent_id = "DREAMPROP_PT_generate"

    def draw(self, context):
        layout = self.layout
        dp = context.scene.dreamprop
        layout.template_list("DREAMPROP_UL_jobs", "", dp, "jobs", dp, "active_job_index", rows=3)
        if not 0 <= dp.active_job_index < len(dp.jobs):
            return
        job = dp.jobs[dp.active_job_index]
        col = layout.column(align=True)
        col.label(text=f"{job.kind.title()} job {job.job_id[:8] or '(not yet accepted)'}")
        if job.active:
            draw_progress(col, job, index=dp.active_job_index)
        if job.message:
            col.label(text=job.message, icon='ERROR')
        if job.warning:
            draw_wrapped(col, job.warning, icon='ERROR')
        row = layout.row(align=True)
        row.operator("dreamprop.import_again", icon='IMPORT').index = dp.active_job_index
        row.operator("dreamprop.remove_job", text="", icon='X').index = dp.active_job_index
        if any(j.active for j in dp.jobs):
            layout.operator("dreamprop.cancel", text="Cancel All", icon='CANCEL').all = True


CLASSES = (DREAMPROP_PT_generate, DREAMPROP_PT_optimisation, DREAMPROP_PT_camera, DREAMPROP_PT_export,
           DREAMPROP_PT_advanced, DREAMPROP_PT_refine, DREAMPROP_PT_batch, DREAMPROP_UL_jobs,
           DREAMPROP_PT_jobs)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
