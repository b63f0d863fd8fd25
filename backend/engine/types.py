"""The engine's public types: what ``api.generate`` takes and gives back.

In a module of their own so that ``api`` (the entry point the CLI and the workers use) and
``trainer`` (the loop that produces these objects) can both import them without importing each
other. Pure Python: no torch, so a caller can handle these objects without loading the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    import torch


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


@dataclass
class ReferenceImage:
    """The picture an image-conditioned run starts from, and where its camera was.

    - ``rgb``: Float[Tensor, "H W 3"] in [0, 1] (the colour; outside the mask it is ignored);
    - ``mask``: Float[Tensor, "H W"] in [0, 1], 1 on the object (from the image's alpha channel or a
      segmentation);
    - ``elevation``, ``azimuth`` (degrees) and ``distance`` of the reference camera in the engine's
      camera convention (``backend.engine.cameras``: Z up, azimuth 0 looks from +X, positive azimuth
      turns counter-clockwise seen from above), looking at the origin;
    - ``fovy``: its vertical field of view, degrees.

    A view-conditioned guidance relates every render's camera to this one (``Guidance.set_reference``).
    """

    rgb: torch.Tensor
    mask: torch.Tensor
    elevation: float = 0.0
    azimuth: float = 0.0
    distance: float = 1.8
    fovy: float = 50.0

    def __post_init__(self):
        if len(self.rgb.shape) != 3 or self.rgb.shape[-1] != 3:
            raise ValueError(f"reference rgb must be H x W x 3, got {tuple(self.rgb.shape)}")
        if tuple(self.mask.shape) != tuple(self.rgb.shape[:2]):
            raise ValueError(f"reference mask must be H x W = {tuple(self.rgb.shape[:2])}, got {tuple(self.mask.shape)}")
        if not -90.0 <= self.elevation <= 90.0:
            raise ValueError(f"reference elevation must be in [-90, 90] degrees, got {self.elevation}")
        if not self.distance > 0.0:
            raise ValueError(f"reference distance must be > 0, got {self.distance}")

    def composited(self, background: float = 1.0) -> torch.Tensor:
        """Float[Tensor, "H W 3"]: the object over a solid ``background`` (white, as Zero-1-to-3 was trained)."""
        m = self.mask[..., None]
        return self.rgb * m + background * (1.0 - m)
