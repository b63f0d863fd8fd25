"""Scene properties: the generation settings (built from ``shared/settings.py``) and the jobs list.

Every field of ``GenerationSettings`` becomes a Blender property of the same name, range and
tooltip, so the panel, the CLI and the server agree. Its default is the schema default, except for
the settings the default model recommends (the built-in prior's budget and camera: the "Auto"
quality, ``presets.PANEL_DEFAULTS``), so a new scene shows what a job will run. The optional
``mesh_threshold`` gets a companion ``mesh_threshold_auto`` checkbox (auto = ``None``). The prompt
offers the built-in prior's vocabulary as search suggestions (free text stays allowed). Add-on-only
knobs (seed "random", quality preset, batch and refine options) live beside them, not in the settings.
"""

from __future__ import annotations

import json

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty,
                       FloatVectorProperty, IntProperty, PointerProperty, StringProperty)

from . import presets, vocabulary
from .shared import settings as S

OPTIONAL_SUFFIX = "_auto"
# shown when "auto" is off: threestudio's iso-level; the built-in priors' camera distance and field of view
OPTIONAL_NUMBER_DEFAULT = {"mesh_threshold": 25.0, "reference_distance": 1.8, "reference_fovy": 50.0}

# Jobs that still expect events from the server.
ACTIVE_STATES = {"SUBMITTING", "QUEUED", "RUNNING"}
JOB_STATES = [
    ("SUBMITTING", "Submitting", "Sent to the server, waiting for the job id"),
    ("QUEUED", "Queued", "Accepted by the server, waiting for a GPU"),
    ("RUNNING", "Running", "Optimising"),
    ("FINISHED", "Finished", "Result imported into the scene"),
    ("FAILED", "Failed", "The job failed; see its message"),
    ("CANCELLED", "Cancelled", "Cancelled"),
]


def _label(name: str) -> str:
    text = name.replace("_", " ").capitalize()
    return text.replace("Fovy", "Field of view").replace("Lr", "LR", 1)


def _model_search(self, context, edit_text):
    from . import jobs
    return [m for m in jobs.server_models() if edit_text.lower() in m.lower()] or jobs.server_models()


def _prompt_search(self, context, edit_text):
    """The built-in prior's prompts containing the words typed so far (none for other models)."""
    return vocabulary.search(self.model, edit_text)


def _settings_annotations() -> dict:
    ann = {}
    for f in S.GenerationSettings.spec():
        m, t = f.metadata, S._base_type(f)
        common = dict(name=_label(f.name), description=S.setting_help(f))
        default = presets.PANEL_DEFAULTS[f.name]
        if m["optional"]:
            ann[f.name + OPTIONAL_SUFFIX] = BoolProperty(
                name="Auto", default=default is None, description=f"choose {f.name} automatically")
        if t is bool:
            ann[f.name] = BoolProperty(default=default, **common)
        elif t is int:
            ann[f.name] = IntProperty(default=default, min=int(m["lo"]), max=int(m["hi"]), **common)
        elif t is float:
            default = default if default is not None else OPTIONAL_NUMBER_DEFAULT[f.name]
            ann[f.name] = FloatProperty(default=default, min=m["lo"], max=m["hi"],
                                        precision=6 if 0 < abs(default) < 1e-3 else 3, **common)
        elif m["choices"]:
            ann[f.name] = EnumProperty(items=[(c, c.replace("_", " ").title(), "") for c in m["choices"]],
                                       default=default, **common)
        elif f.name == "model":
            ann[f.name] = StringProperty(default=default, search=_model_search, search_options={'SUGGESTION'},
                                         update=lambda self, ctx: presets.model_changed(self), **common)
        elif f.name == "prompt":
            ann[f.name] = StringProperty(default=default, search=_prompt_search,
                                         search_options={'SUGGESTION', 'SORT'}, **common)
        else:
            ann[f.name] = StringProperty(default=default, **common)
    ann["seed_random"] = BoolProperty(name="Random", default=True,
                                      description="pick a new random seed for every job (it is stored on the result)")
    ann["quality"] = EnumProperty(name="Quality", items=presets.ENUM_ITEMS, default=presets.AUTO,
                                  update=lambda self, ctx: presets.apply(self, self.quality),
                                  description="Auto: the model's recommended settings; or a preset step "
                                              "budget and resolution schedule (over the model's settings)")
    ann["quality_model"] = StringProperty(
        options={'HIDDEN'}, description="the model the quality button's values were last written for")
    return ann


DREAMPROP_PG_settings = type("DREAMPROP_PG_settings", (bpy.types.PropertyGroup,),
                             {"__annotations__": _settings_annotations(),
                              "__doc__": "Generation settings (shared/settings.py)"})


def settings_dict(pg) -> dict:
    """The panel's values as a settings dict (every field, ``None`` for an "auto" optional).

    Blender stores floats in single precision: 0.02 reads back as 0.0199999995. Seven significant
    digits give back the decimal the artist typed (and the schema default)."""
    out = {}
    for f in S.GenerationSettings.spec():
        value = getattr(pg, f.name)
        if f.metadata["optional"] and getattr(pg, f.name + OPTIONAL_SUFFIX):
            value = None
        elif isinstance(value, float):
            value = float(f"{value:.7g}")
        out[f.name] = value
    return out


def load_settings(pg, data: dict) -> None:
    """Put a settings dict (e.g. one stored on a generated object) back into the panel."""
    with presets.suspended():   # neither the model's update nor the quality may overwrite them
        for f in S.GenerationSettings.spec():
            if f.name not in data:
                continue
            value = data[f.name]
            if f.metadata["optional"]:
                setattr(pg, f.name + OPTIONAL_SUFFIX, value is None)
                if value is None:
                    continue
            setattr(pg, f.name, value)
        pg.quality = presets.matching(pg)   # show which button the loaded values are
        pg.quality_model = pg.model


# (identifier, name, description, icon, number): image_source.SOURCES without importing it (it imports jobs)
_IMAGE_SOURCES = [("NONE", "Prompt", "text to 3D: no picture", 'FONT_DATA', 0),
                  ("FILE", "File", "a picture file (PNG, JPEG, WebP, ...); alpha = the object's mask", 'FILE_IMAGE', 1),
                  ("IMAGE", "Image", "an image open in Blender (Image Editor)", 'IMAGE_DATA', 2),
                  ("CAMERA", "Camera", "render the active camera now (transparent film: the object's mask)",
                   'CAMERA_DATA', 3)]


class DREAMPROP_PG_job(bpy.types.PropertyGroup):
    """One job this scene started; saved in the .blend so jobs re-attach after a reload."""

    job_id: StringProperty(name="Job id", description="the server's job id")
    request_id: StringProperty(description="message id of the submit request, until the server answers")
    kind: EnumProperty(items=[("GENERATE", "Generate", ""), ("REFINE", "Refine", ""), ("BATCH", "Batch", "")])
    state: EnumProperty(items=JOB_STATES, default="SUBMITTING")
    prompt: StringProperty()
    settings_json: StringProperty(description="the submitted settings (JSON)")
    step: IntProperty()
    total: IntProperty()
    eta_s: FloatProperty()
    stage: StringProperty()
    message: StringProperty(description="the server's message for a failed job")
    warning: StringProperty(description="the server's warning on submit (e.g. a prompt outside the built-in "
                                        "prior's vocabulary, with the nearest known prompts)")
    last_seq: IntProperty(description="last event sequence number seen (re-attach resumes after it)")
    cancel_requested: BoolProperty()
    # a string: FloatProperty is single precision, 2 minutes apart at today's epoch seconds
    submitted_at: StringProperty(description="time.time() when the job was submitted")
    # where the result goes: world matrix of the placement frame; fit_size > 0 scales the result so
    # its largest bounding-box side is fit_size (markers); otherwise engine units are kept.
    matrix: FloatVectorProperty(size=16, default=(1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1))
    fit_size: FloatProperty()
    batch_id: StringProperty()
    marker: PointerProperty(type=bpy.types.Object, description="the batch marker this job belongs to")
    source: PointerProperty(type=bpy.types.Object, description="the refined object")
    keep_original: BoolProperty(default=True)
    proxy: PointerProperty(type=bpy.types.Object)
    result: PointerProperty(type=bpy.types.Object)
    result_path: StringProperty(subtype='FILE_PATH', description="cached result GLB")
    metadata_json: StringProperty(description="the result's metadata from the server (JSON)")
    image_path: StringProperty(subtype='FILE_PATH', description="image job: the picture sent (cached copy)")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def settings(self) -> dict:
        return json.loads(self.settings_json) if self.settings_json else {}

    @property
    def metadata(self) -> dict:
        return json.loads(self.metadata_json) if self.metadata_json else {}


class DREAMPROP_PG_scene(bpy.types.PropertyGroup):
    settings: PointerProperty(type=DREAMPROP_PG_settings)
    # image to 3D: where Generate takes the reference picture from (image_source.py)
    image_source: EnumProperty(name="Source", items=_IMAGE_SOURCES, default="NONE",
                               description="generate from the prompt only, or from a picture (the prompt is "
                                           "then optional and, when given, guides too)")
    image_path: StringProperty(name="Picture", subtype='FILE_PATH',
                               description="a PNG/JPEG/WebP picture of one object (alpha = its mask, else a "
                                           "plain backdrop)")
    image: PointerProperty(type=bpy.types.Image, name="Image", description="an image open in Blender")
    jobs: CollectionProperty(type=DREAMPROP_PG_job)
    active_job_index: IntProperty(name="Active job")
    show_proxy: BoolProperty(
        name="Live proxy mesh", default=True,
        description="show a coarse mesh at the target while the job runs; when the "
                    "proxy_mesh_interval setting is 0 (its default) jobs ask for one every "
                    "5 x preview_interval steps, and at least 5 per run")
    refine_keep_original: BoolProperty(name="Keep original", default=True,
                                       description="keep the refined object visible (else hide it)")
    refine_use_checkpoint: BoolProperty(
        name="Resume from checkpoint", default=True,
        description="for a mesh this backend generated, continue from its optimisation state when the "
                    "server still has it (the mesh is sent too, as the fallback)")
    batch_collection: PointerProperty(type=bpy.types.Collection, name="Markers",
                                      description="every Empty in this collection becomes a job")
    batch_prompt_property: BoolProperty(
        name="Empties with a 'prompt' property", default=True,
        description="also use every Empty in the scene that has a 'prompt' custom property")


CLASSES = (DREAMPROP_PG_settings, DREAMPROP_PG_job, DREAMPROP_PG_scene)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.dreamprop = PointerProperty(type=DREAMPROP_PG_scene)


def unregister():
    del bpy.types.Scene.dreamprop
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
