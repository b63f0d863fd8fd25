"""The prompts a model knows (the built-in prior's vocabulary), for the panel's prompt search.

Blender cannot import the backend (torch) to ask the prior, so build_addon.py writes the list into
the extension as ``vocabulary.json`` on every build, from the same grammar the backend checks
prompts with (``backend.prior.vocabulary``): it grows with the prior. Without the file (the add-on
run from a source folder, not a build) the search offers nothing and the server's warning on
submit still names the nearest prompts.
"""

from __future__ import annotations

import functools
import json
import os

FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vocabulary.json")


@functools.cache
def _table() -> dict[str, tuple[str, ...]]:
    try:
        with open(FILE, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return {str(model): tuple(str(p) for p in prompts) for model, prompts in data.items()
            if isinstance(prompts, list)}


def prompts(model: str) -> list[str]:
    """Every prompt ``model`` knows; empty for a model without a fixed vocabulary (Stable Diffusion)."""
    return list(_table().get(model.strip(), ()))


def search(model: str, text: str) -> list[str]:
    """The known prompts containing every word typed so far (all of them for an empty field)."""
    words = text.lower().split()
    return [p for p in prompts(model) if all(w in p for w in words)]


def known(model: str, prompt: str) -> bool | None:
    """Whether ``prompt`` is one of ``model``'s prompts (case and spacing aside); None when the model
    has no fixed vocabulary or the list is missing. The backend's check (its grammar) is the exact
    one: it also accepts view suffixes and the like; the panel only hints."""
    listed = prompts(model)
    if not listed:
        return None
    return " ".join(prompt.lower().split()) in listed
