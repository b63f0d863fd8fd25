"""Guidance and geometry types by name, chosen by the ``guidance_type`` / ``geometry_type`` settings.

threestudio's ``register``/``find``, one table per kind. A type registers itself where it is defined:

    @register("guidance", "stable-diffusion")
    class StableDiffusionGuidance(Guidance): ...

and the trainer asks ``find("guidance", settings.guidance_type)``. The built-in types' modules are
imported by ``backend.engine.builtin_types`` (one line each), and their names are also declared in
``shared/settings.py`` (``GUIDANCE_TYPES``, ``GEOMETRY_TYPES``), because the Blender add-on and the
server validate settings without importing the engine; ``tests/test_registry.py`` checks that the
two lists agree. So a new built-in type is: its module with an ``@register`` line, one import in
``builtin_types``, and its name in ``shared/settings.py``. A type registered at run time (a test, a
plugin) becomes a valid value of its setting in that process (``shared.settings.add_choice``).

This module imports no implementation (they import it), so it never closes an import cycle.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from shared import settings as schema
from shared.settings import SettingError

# kind -> the setting that picks it
SETTINGS = {"guidance": "guidance_type", "geometry": "geometry_type"}

_types: dict[str, dict[str, type]] = {kind: {} for kind in SETTINGS}

T = TypeVar("T", bound=type)


def _table(kind: str) -> dict[str, type]:
    if kind not in _types:
        raise ValueError(f"kind must be one of {', '.join(SETTINGS)}, got {kind!r}")
    return _types[kind]


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: make ``cls`` the ``kind`` type called ``name``. A name is registered once."""
    table = _table(kind)

    def decorator(cls: T) -> T:
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} type {name!r} is already registered ({table[name].__qualname__})")
        table[name] = cls
        schema.add_choice(SETTINGS[kind], name)
        return cls

    return decorator


def unregister(kind: str, name: str) -> None:
    """Remove a type registered at run time (tests clean up with this)."""
    _table(kind).pop(name, None)
    schema.remove_choice(SETTINGS[kind], name)


def find(kind: str, name: str) -> type:
    """The class registered as ``name``; an unknown name raises ``SettingError`` naming the setting."""
    table = _table(kind)
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise SettingError(SETTINGS[kind], f"no {kind} type called {name!r} (registered: {known})")
    return table[name]


def names(kind: str) -> list[str]:
    return sorted(_table(kind))
