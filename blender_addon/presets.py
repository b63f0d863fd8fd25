"""Quality presets of the panel: draft / standard / high, as defined in ``shared/presets.py``.

The CLI's ``--preset`` and this panel read the same table, so "draft" means the same step budget,
resolution schedule and export sizes on both sides. Applying a preset writes every key any quality
preset sets (the schema default where this preset does not name one), so switching back and forth
never leaves a value of the previous preset behind.
"""

from __future__ import annotations

import contextlib
import math

from .shared import presets as P
from .shared import settings as S

_DEFAULTS = S.GenerationSettings().to_dict()
KEYS = sorted({k for name in P.QUALITY_PRESETS for k in P.preset_settings(name)})
PRESETS: dict[str, dict] = {
    name.upper(): {k: P.preset_settings(name).get(k, _DEFAULTS[k]) for k in KEYS} for name in P.QUALITY_PRESETS
}


def _describe(values: dict) -> str:
    return (f"{values['steps']:,} steps, renders {values['resolution_schedule']}, "
            f"mesh grid {values.get('mesh_resolution', _DEFAULTS['mesh_resolution'])}, "
            f"{values.get('texture_size', _DEFAULTS['texture_size'])} px texture")


ENUM_ITEMS = [(key, key.title(), _describe(values)) for key, values in PRESETS.items()]
ENUM_ITEMS.append(("CUSTOM", "Custom", "your own values"))

_suspended = False


def apply(pg, name: str) -> None:
    """Write preset ``name`` into the settings property group (no-op for CUSTOM / while suspended)."""
    if _suspended or name not in PRESETS:
        return
    for key, value in PRESETS[name].items():
        setattr(pg, key, value)


def same_value(a, b) -> bool:
    """Blender stores float properties in single precision: 0.1 comes back as 0.10000000149."""
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def matching(pg) -> str:
    """The preset whose values the group currently has, or CUSTOM."""
    for name, values in PRESETS.items():
        if all(same_value(getattr(pg, k), v) for k, v in values.items()):
            return name
    return "CUSTOM"


@contextlib.contextmanager
def suspended():
    """Set ``quality`` without overwriting the values it would apply."""
    global _suspended
    _suspended, old = True, _suspended
    try:
        yield
    finally:
        _suspended = old
