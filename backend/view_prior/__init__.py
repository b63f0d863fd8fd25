"""The project's view-conditioned prior: a small Zero-1-to-3 trained on renders of the text prior's
procedural objects (pairs of views of one object and their relative camera), in the diffusers
layout of published Zero-1-to-3 conversions, under ``weights/``.

- ``model``: the architecture and the layout writer; ``train``: ``python -m backend.view_prior.train``;
- the engine's ``zero123`` guidance loads it for ``model="builtin"``.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def available() -> bool:
    return (WEIGHTS_DIR / "model_index.json").is_file()
