"""Where each generation setting's value comes from, in one place for the CLI, the server and the add-on.

Four layers, each overriding the one before::

    schema default  <  the model's recommended settings  <  preset  <  explicit values

- *schema default*: ``GenerationSettings`` (threestudio's dreamfusion-sd budget, made for Stable
  Diffusion on a GPU);
- *the model's recommended settings*: what a model was made for. The built-in prior was trained with
  one fixed camera, small renders and a small grid (``PRESETS["builtin"]``, the same dict that
  ``backend.prior.recommended_settings`` returns); with the schema's 10,000 steps at 64 px it runs
  for hours on a CPU, with settings it was never made for. An image job (``guidance_type`` zero123)
  with ``model="builtin"`` (the project's view prior) gets ``PRESETS["builtin-image"]``, on a GPU
  ``builtin-image-gpu`` (four views a step; the text preset renders four on every device). Other
  models recommend nothing;
- *preset*: a named budget the user chose (``--preset draft``, the panel's quality buttons); a
  model's preset (``builtin``) names its settings for the device the job runs on, like Auto;
- *explicit values*: a flag, a submitted setting, a value typed into the panel.

The model itself is layered first (explicit, else preset, else the schema default), because it
decides which recommended settings apply. Pure Python, no backend import: Blender imports it.
"""

from __future__ import annotations

from .presets import PRESETS, preset_settings
from .settings import IMAGE_GUIDANCE_TYPES, GenerationSettings

# Model name -> the preset in ``shared/presets.py`` that holds its recommended settings.
MODEL_PRESETS: dict[str, str] = {"builtin": "builtin"}
# The same for image jobs (a guidance type of ``IMAGE_GUIDANCE_TYPES``): "builtin" is the view prior.
IMAGE_MODEL_PRESETS: dict[str, str] = {"builtin": "builtin-image"}
# A model's preset on a GPU, where it has one of its own.
GPU_PRESETS: dict[str, str] = {"builtin-image": "builtin-image-gpu"}


def on_gpu(device: str | None) -> bool:
    """Whether ``device`` ("cpu", "cuda", "cuda:1"; None: unknown, taken as the CPU) is a GPU."""
    return isinstance(device, str) and device.startswith("cuda")


def recommended_settings(model: str, guidance_type: str | None = None, device: str | None = "cpu") -> dict:
    """The settings ``model`` was made for, used as ``guidance_type`` (default: the text guidance) on
    ``device`` (empty: the schema defaults suit it, or ``model`` is not even text: validation names it
    later)."""
    table = IMAGE_MODEL_PRESETS if guidance_type in IMAGE_GUIDANCE_TYPES else MODEL_PRESETS
    name = table.get(model) if isinstance(model, str) else None
    if name and on_gpu(device):
        name = GPU_PRESETS.get(name, name)
    return dict(PRESETS[name]) if name else {}


def named_preset(name: str | None, device: str | None = "cpu") -> dict:
    """Preset ``name``'s values for a job on ``device`` (none: {}): a model's preset ("builtin") names the
    model's settings for that device, its ``GPU_PRESETS`` entry on a GPU. KeyError names the allowed names."""
    if not name:
        return {}
    return preset_settings(GPU_PRESETS.get(name, name) if on_gpu(device) else name)


def layered_values(explicit: dict, *, preset: str | None = None, recommended: dict | None = None,
                   device: str | None = "cpu") -> dict:
    """The values the layers give, as a settings dict (not yet validated; schema defaults not filled in).

    ``explicit``: only what the user gave. ``recommended``: the model's recommended settings when the
    caller knows them better (default: ``recommended_settings(model, guidance_type, device)``, ``device``
    the one the job will run on). A bad preset name raises KeyError with the allowed names."""
    preset_values = named_preset(preset, device)
    model = explicit.get("model", preset_values.get("model", GenerationSettings.model))
    guidance_type = explicit.get("guidance_type", preset_values.get("guidance_type", GenerationSettings.guidance_type))
    if recommended is None:
        recommended = recommended_settings(model, guidance_type, device)
    values = {**recommended, **preset_values, **explicit}
    if guidance_type in IMAGE_GUIDANCE_TYPES and "shape_model" not in explicit and not _pairs_builtin_text_prior(values):
        # The image preset's shape prior (the built-in one) pairs with the built-in text prior, in a job that uses
        # it; with another text prior, or none (no prompt and auto_prompt off), the preset has none to offer.
        values.pop("shape_model", None)
    return values


def _pairs_builtin_text_prior(values: dict) -> bool:
    """An image job's settings (not yet validated) that run the built-in text prior: joint mode or a prompt
    read from the picture (``GenerationSettings.joint_text_guidance`` / ``prompt_from_picture``)."""
    get = lambda name: values.get(name, getattr(GenerationSettings, name))   # noqa: E731 - schema default
    try:
        weight = float(get("text_guidance_weight"))
    except (TypeError, ValueError):
        return True             # a bad value: validation names it
    return (str(get("text_model")).strip() == "builtin" and weight > 0
            and (bool(str(get("prompt")).strip()) or str(get("auto_prompt")).lower() in ("true", "1")))


def resolve(explicit: dict, *, preset: str | None = None, recommended: dict | None = None,
            device: str | None = "cpu", require_prompt: bool = True) -> GenerationSettings:
    """Validated settings from the four layers for a job on ``device`` (SettingError names the bad field)."""
    if not isinstance(explicit, dict):
        return GenerationSettings.from_dict(explicit)   # raises: "settings: must be an object"
    return GenerationSettings.from_dict(
        layered_values(explicit, preset=preset, recommended=recommended, device=device),
        require_prompt=require_prompt)
