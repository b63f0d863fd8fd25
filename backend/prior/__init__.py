"""The built-in prior: a small text-to-image latent diffusion model trained by this project on
procedural renders of simple shapes, saved in diffusers layout under ``weights/``.

- ``grammar``: what it can draw (shapes x colours, prompt grammar);
- ``shapes``: the analytic shapes (training renders and benchmark ground truth);
- ``render``: the training images, made with the engine's own cameras and shading;
- ``model``: the architecture; ``train``: ``python -m backend.prior.train``;
- ``recommended_settings``: the generation settings to use with it (CPU-friendly; on a GPU four views a step).
"""

from __future__ import annotations

from pathlib import Path

from shared import layering
from shared.presets import PRESETS

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# The generation settings the prior was made for live with the other presets in shared/presets.py
# (the CLI's --preset builtin / cpu-demo and the Blender panel's "Builtin" preset read them there).
# Its camera is fixed (distance 1.8, fovy 50, no eye or look-at jitter) because a prior that sees
# the same object at 2.6x different apparent sizes and off-centre by +-0.2 cannot tell SDS how big
# the object is or where it sits: with the default ranges the first prior grew every shape to
# ~1.3x its size and let it drift down (see README.md).
PRESET: dict = PRESETS["builtin"]
CAMERA: dict = {k: PRESET[k] for k in ("distance_min", "distance_max", "fovy_min", "fovy_max",
                                       "camera_perturb", "center_perturb")}


def recommended_settings(device: str | None = "cpu") -> dict:
    """Setting overrides for generating with ``model="builtin"`` on ``device``: a fresh copy of its
    preset (four views a step on every device since session 50: shared/presets.py says why)."""
    return layering.recommended_settings("builtin", device=device)


def available() -> bool:
    return (WEIGHTS_DIR / "model_index.json").is_file()
