"""The engine's public API: one call from settings to a textured GLB.

The CLI and the server's GPU workers use only what is in this module:

    from backend.engine.api import generate, ProgressEvent, GenerationResult, Cancelled
    result = generate(settings, device="auto", callback=on_progress,
                      checkpoint_path="job/ckpt.pt", should_cancel=lambda: False)
    open("out.glb", "wb").write(result.glb)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


class Cancelled(Exception):
    """Raised by ``generate`` when ``should_cancel()`` returned True (a checkpoint was saved first)."""

    def __init__(self, step: int):
        super().__init__(f"cancelled at step {step}")
        self.step = step


@dataclass
class ProgressEvent:
    """Sent to the progress callback every ``preview_interval`` steps and once per export stage."""

    step: int                       # steps done so far
    total: int                      # the step budget
    losses: dict                    # name -> float (detached; only read on callback steps)
    elapsed_s: float                # wall time of this run so far (resumed runs: since resume)
    eta_s: float                    # estimated seconds to the end of optimisation
    stage: str = "optimise"         # "init" (fitting a refine mesh) | "optimise" | "export"
    preview_png: Optional[bytes] = None   # render from the fixed preview camera, preview_size^2
    proxy_glb: Optional[bytes] = None     # coarse mesh (vertex colours) every proxy_mesh_interval steps
    message: str = ""


@dataclass
class GenerationResult:
    glb: bytes                      # the textured mesh, glTF binary, Y-up
    turntable_png: bytes            # a strip of views of the exported mesh
    metadata: dict = field(default_factory=dict)  # settings, timings, face/vertex counts, final losses


ProgressCallback = Callable[[ProgressEvent], None]


def generate(settings, *, device: str = "auto", callback: Optional[ProgressCallback] = None,
             checkpoint_path: Optional[str] = None, should_cancel: Optional[Callable[[], bool]] = None,
             init_mesh_glb: Optional[bytes] = None, init_checkpoint: Optional[str] = None,
             guidance=None) -> GenerationResult:
    """Optimise a field for ``settings`` (a validated ``shared.settings.GenerationSettings``) and export it.

    - ``device``: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".
    - ``checkpoint_path``: where the resumable optimisation state is saved every
      ``settings.checkpoint_interval`` steps; if the file exists (same settings), the run resumes from it.
    - ``should_cancel``: polled every step; when it returns True a checkpoint is saved and ``Cancelled``
      is raised.
    - ``init_mesh_glb``: refine mode: the field is initialised from this mesh (occupancy -> density,
      texture / vertex colours -> albedo) before optimisation.
    - ``init_checkpoint``: refine a result this backend made: start from the field stored in another
      run's checkpoint (fresh optimiser, step 0, this run's settings).
    - ``guidance``: an already-loaded ``Guidance`` to reuse (workers keep models loaded between jobs);
      default: ``load_guidance(settings.model, device)``.
    """
    from backend.engine.trainer import run_generation

    return run_generation(settings, device=device, callback=callback, checkpoint_path=checkpoint_path,
                          should_cancel=should_cancel, init_mesh_glb=init_mesh_glb,
                          init_checkpoint=init_checkpoint, guidance=guidance)
