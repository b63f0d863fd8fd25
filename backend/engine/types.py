"""The engine's public types: what ``api.generate`` takes and gives back.

In a module of their own so that ``api`` (the entry point the CLI and the workers use) and
``trainer`` (the loop that produces these objects) can both import them without importing each
other. Pure Python: no torch, so a caller can handle these objects without loading the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


class Cancelled(Exception):
    """Raised by ``generate`` when ``should_cancel()`` returned True (a checkpoint was saved first)."""

    def __init__(self, step: int):
        super().__init__(f"cancelled at step {step}")
        self.step = step


class ModelNotFoundError(FileNotFoundError):
    """The ``model`` setting names no model this machine has (and downloading is off)."""


@dataclass
class ProgressEvent:
    """Sent to the progress callback every ``preview_interval`` steps and once per export stage."""

    step: int                       # steps done so far
    total: int                      # the step budget
    losses: dict                    # name -> float (detached; only read on callback steps)
    elapsed_s: float                # wall time of this run so far (resumed runs: since resume)
    eta_s: float                    # estimated seconds to the end of optimisation
    stage: str = "optimise"         # "init" (fitting a refine mesh, the fine stage's hand-over) | "optimise"
                                    # (coarse) | "fine" (the fine stage: backend.engine.stages) | "export"
    preview_png: Optional[bytes] = None   # render from the fixed preview camera, preview_size^2
    proxy_glb: Optional[bytes] = None     # coarse mesh (vertex colours) every proxy_mesh_interval steps
    message: str = ""


@dataclass
class GenerationResult:
    glb: bytes                      # the textured mesh, glTF binary, Y-up
    turntable_png: bytes            # a strip of views of the exported mesh
    metadata: dict = field(default_factory=dict)  # settings, timings, face/vertex counts, final losses


ProgressCallback = Callable[[ProgressEvent], None]
