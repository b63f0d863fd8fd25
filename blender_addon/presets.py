"""Quality presets of the panel: Auto (the model's recommended settings), draft / standard / high /
builtin (``shared/presets.py``) and Custom.

The CLI's ``--preset`` and this panel read the same table and layer it the same way
(``shared.layering``: schema default < the model's recommended settings < preset < your values), so
"draft" means the same step budget, resolution schedule and export sizes on both sides.

What the panel shows is what a job runs. A button writes its values into the settings, for every
key any preset or model recommendation sets (the layered value, the schema default where no layer
names one), so switching back and forth never leaves a value of the previous preset behind:

- **Auto** (the default): the model's recommended settings: with the built-in prior its own small
  budget and fixed camera (minutes on a CPU), with Stable Diffusion the schema defaults. The
  panel's initial values are Auto's for the default model, so a new scene runs the prior as made.
- A preset: its values over the model's recommended settings.
- A value you type wins: it is sent as shown (the panel says "changed by hand").
- Changing the model re-applies the selected button for the new model, unless you changed values
  by hand (they are kept; Custom never changes anything).
- Auto is the recommendation for the server's device (its info reply), for a model whose recommended
  settings differ by device (``shared.layering.GPU_PRESETS``; the text prior's are the same everywhere
  since session 50). When the add-on learns the device, panels on Auto whose values are untouched take
  the new device's (``set_device``).
"""

from __future__ import annotations

import contextlib
import math

from .shared import layering as L
from .shared import presets as P
from .shared import settings as S

_DEFAULTS = S.GenerationSettings().to_dict()
DEFAULT_MODEL = S.GenerationSettings.model
AUTO = "AUTO"
KEYS = sorted({k for name in P.QUALITY_PRESETS for k in P.preset_settings(name)}
              | {k for model in L.MODEL_PRESETS for k in L.recommended_settings(model)})
NAMES = (AUTO, *(name.upper() for name in P.QUALITY_PRESETS))   # the buttons that write values


# The server's device as its last info reply said ("cpu" until one came): Auto recommends for it.
_device = "cpu"


def device() -> str:
    return _device


def values(name: str, model: str, on: str | None = None) -> dict:
    """What button ``name`` writes for ``model`` on device ``on`` (default: the server's): every key in KEYS."""
    layered = L.layered_values({"model": model}, preset=None if name == AUTO else name.lower(),
                               device=_device if on is None else on)
    return {k: layered.get(k, _DEFAULTS[k]) for k in KEYS}


def set_device(new: str, groups) -> None:
    """The server runs jobs on ``new`` ("cpu"/"cuda"): each settings group of ``groups`` with its button's
    values untouched since the button wrote them takes the button's values for ``new`` (Auto's and
    Builtin's differ by device); values changed by hand stay; a Custom group shows the button its values
    now match (a file saved with a GPU's Auto values reads Auto again once a GPU server answers)."""
    global _device
    old, _device = _device, (new if isinstance(new, str) else "cpu")
    if _device == old:
        return
    for pg in groups:
        if pg.quality in NAMES and matches(pg, pg.quality, on=old):
            apply(pg, pg.quality)
        elif pg.quality not in NAMES:      # Custom: a button's values for the new device show as that button
            with suspended():
                pg.quality = matching(pg)


def _describe(values: dict) -> str:
    return (f"{values['steps']:,} steps, renders {values['resolution_schedule']}, "
            f"mesh grid {values.get('mesh_resolution', _DEFAULTS['mesh_resolution'])}, "
            f"{values.get('texture_size', _DEFAULTS['texture_size'])} px texture")


# Initial panel values: Auto for the default model (the properties' defaults are built from these).
PANEL_DEFAULTS: dict = {**_DEFAULTS, **values(AUTO, DEFAULT_MODEL)}

# (identifier, name, description, icon, number): the numbers are what a .blend stores, so the items
# added later (Auto) get new numbers and files saved before keep their choice.
_BUILTIN_CPU, _BUILTIN_GPU = values(AUTO, 'builtin', 'cpu'), values(AUTO, 'builtin', 'cuda')
ENUM_ITEMS = [(AUTO, "Auto", "the model's recommended settings for the server's device (built-in prior: "
               f"{_describe(_BUILTIN_CPU)}"
               + ("" if _BUILTIN_GPU == _BUILTIN_CPU else f"; on a GPU renders {_BUILTIN_GPU['resolution_schedule']}")
               + "; Stable Diffusion: the standard budget)", 'NONE', 5)]
ENUM_ITEMS += [(name.upper(), name.title(), _describe({**_DEFAULTS, **P.preset_settings(name)}), 'NONE', number)
               for number, name in enumerate(P.QUALITY_PRESETS)]
ENUM_ITEMS.append(("CUSTOM", "Custom", "your own values", 'NONE', len(P.QUALITY_PRESETS)))

_suspended = False


def apply(pg, name: str) -> None:
    """Write button ``name`` for the panel's model into the settings (no-op for CUSTOM / while suspended)."""
    if _suspended or name not in NAMES:
        return
    with suspended():   # writing values must not re-enter through the model's update
        for key, value in values(name, pg.model).items():
            setattr(pg, key, value)
        pg.quality_model = pg.model


def model_changed(pg) -> None:
    """The model's update: re-apply the selected button for the new model unless values were changed
    by hand for the old one (``quality_model``: the model the button was last applied for)."""
    if _suspended or pg.quality not in NAMES or pg.model == pg.quality_model:
        return
    if matches(pg, pg.quality, pg.quality_model or DEFAULT_MODEL):
        apply(pg, pg.quality)


def same_value(a, b) -> bool:
    """Blender stores float properties in single precision: 0.1 comes back as 0.10000000149."""
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def matches(pg, name: str, model: str | None = None, on: str | None = None) -> bool:
    """Whether the group has button ``name``'s values for ``model`` (default: the panel's model) on
    device ``on`` (default: the server's)."""
    if name not in NAMES:
        return name == "CUSTOM"
    return all(same_value(getattr(pg, k), v) for k, v in values(name, model or pg.model, on).items())


def matching(pg) -> str:
    """The button whose values the group currently has (Auto first), or CUSTOM."""
    return next((name for name in NAMES if matches(pg, name)), "CUSTOM")


@contextlib.contextmanager
def suspended():
    """Set ``quality`` without overwriting the values it would apply."""
    global _suspended
    _suspended, old = True, _suspended
    try:
        yield
    finally:
        _suspended = old
