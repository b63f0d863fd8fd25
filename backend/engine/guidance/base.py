"""The small interface every guidance implements (threestudio's ``BaseObject`` guidance, reduced).

A guidance type is registered by name (``backend.engine.registry``) and picked by the
``guidance_type`` setting. Shapes are written as in nerfstudio (``Float[Tensor, "B H W 3"]``), in
the docstrings only: the project does not depend on jaxtyping.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:
    from backend.engine.cameras import CameraBatch
    from backend.engine.types import ReferenceImage
    from shared.settings import GenerationSettings


def avoid_text(template: str, prompt: str) -> str:
    """The ``avoid_prompt`` setting said of ``prompt``: its ``{prompt}`` replaced ("{prompt} filled" for "a red
    mug" is "a red mug filled"); a template without it is the avoid prompt as it stands."""
    return template.replace("{prompt}", prompt)


@dataclass
class PromptEmbeddings:
    """Conditional embeddings per view name ("front", "side", ... of the view naming; "" = no suffix)
    and the unconditional (negative prompt) embedding, all already on the guidance's device."""

    by_view: dict            # view name -> Float[Tensor, "1 T D"]
    uncond: torch.Tensor     # Float[Tensor, "1 T D"]
    #: the ``avoid_prompt``'s embeddings per view name, as ``by_view`` (None: no avoid term)
    avoid: Optional[dict] = None

    def for_views(self, views: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond, uncond), each Float[Tensor, "B T D"], for B = len(views)."""
        cond = torch.cat([self.by_view[v] for v in views], dim=0)
        return cond, self.uncond.expand(len(views), *self.uncond.shape[1:])

    def avoid_for_views(self, views: list[str]) -> Optional[torch.Tensor]:
        """The avoid prompt's Float[Tensor, "B T D"] for B = len(views) (None without one)."""
        return None if self.avoid is None else torch.cat([self.avoid[v] for v in views], dim=0)


@dataclass
class GuidanceRequest:
    """One job's part of a guidance evaluation: its renders and everything per job that goes with them
    (the arguments of ``Guidance.__call__``, plus the job's own device ``generator``, from which every
    random draw of the guidance for these renders is made; None: the global RNG)."""

    rgb: torch.Tensor                    # Float[Tensor, "B H W 3"] in [0, 1], with gradient
    embeddings: PromptEmbeddings
    views: list[str]
    cameras: Optional["CameraBatch"]
    guidance_scale: float
    t_range: tuple[float, float]
    generator: Optional[torch.Generator] = None
    #: the renders' shading ("albedo", "lambertian", "textureless"; "" = not said): what
    #: ``shape_colour.ShapeColourGuidance`` routes by
    shading: str = ""
    #: weight of the embeddings' ``avoid`` term (the ``avoid_scale`` setting; 0: none)
    avoid_scale: float = 0.0
    #: weight of the denoising term eps(uncond) - noise (the ``sds_noise_weight`` setting; 1: SDS)
    noise_weight: float = 1.0
    #: the shape prior's guidance scale for these renders when a shape prior guides them (the
    #: ``shape_guidance_scale`` setting; 0: ``guidance_scale``)
    shape_guidance_scale: float = 0.0


class Guidance(ABC):
    """Turns renders into a loss whose gradient is the guidance signal.

    Loading (``load_guidance`` / ``load_guidance_for``) constructs a type as
    ``cls(model_path, device, half_precision=...)`` and keeps it for the next runs of the process;
    ``configure(settings)`` then sets a run's own options."""

    #: image side the guidance model works at (renders are resized to it)
    resolution: int
    #: a short name for logs and metadata
    name: str
    #: the setting whose value the trainer passes as ``guidance_scale`` (image-conditioned types: their own)
    scale_setting: str = "guidance_scale"
    #: the folder ``model="builtin"`` means for this type (None: the built-in text prior)
    builtin_model = None
    #: the renders of one object it judges together (a multi-view prior, ``multiview.py``): the trainer draws
    #: each batch as groups of this many cameras around one object (``cameras.sample_cameras``)
    views_per_object: int = 1

    @abstractmethod
    def __init__(self, model_path: str, device: torch.device | str, *, half_precision: bool = True):
        """Load the model from the local folder ``model_path`` onto ``device``."""

    @abstractmethod
    def configure(self, settings: GenerationSettings) -> None:
        """Per-run options from the run's settings (one loaded model serves the runs of a worker)."""

    @abstractmethod
    def encode_prompts(self, prompt: str, negative_prompt: str, view_suffixes: dict[str, str],
                       avoid_prompt: str = "") -> PromptEmbeddings:
        """Embeddings of ``prompt`` alone ("") and with each view's suffix (view name -> suffix,
        ``backend.engine.cameras.view_suffixes``; empty when prompts are not view-dependent), and the same
        of ``avoid_prompt`` when given (a type without the avoid term ignores it)."""

    def set_reference(self, reference: ReferenceImage) -> None:
        """Condition on a reference image (image-conditioned types; text-only types refuse)."""
        raise TypeError(f"guidance {type(self).__name__} is not conditioned on an image")

    @abstractmethod
    def __call__(self, rgb: torch.Tensor, embeddings: PromptEmbeddings, views: list[str], *,
                 cameras: CameraBatch, guidance_scale: float, t_range: tuple[float, float]) -> dict:
        """One guidance evaluation for a batch of B renders.

        - ``rgb``: Float[Tensor, "B H W 3"] in [0, 1], with gradient.
        - ``views``: the view name of each render (keys of ``embeddings.by_view``; "" = no suffix).
        - ``cameras``: the camera of each render: ``elevation``, ``azimuth`` (degrees) and ``distance``,
          Float[Tensor, "B"] on the CPU, ``c2w`` Float[Tensor, "B 4 4"] and ``fovy`` Float[Tensor, "B"]
          on the device; what a view-conditioned guidance needs to relate a render to its reference.
        - ``t_range``: (min, max) diffusion time, fractions of the schedule.

        Returns {"loss_sds": Float[Tensor, ""] whose gradient is the guidance, ...diagnostics}."""

    #: True when ``guide_many`` evaluates several jobs' renders in one model call
    batches_jobs: bool = False

    def guide_many(self, requests: list[GuidanceRequest]) -> list[dict]:
        """Guidance for several jobs at once (``backend.engine.batching``), one result dict per request,
        each as ``__call__`` returns it for that request alone. The default evaluates the requests one
        by one; a guidance that can share one model call overrides it (and sets ``batches_jobs``)."""
        return [self(r.rgb, r.embeddings, r.views, cameras=r.cameras, guidance_scale=r.guidance_scale,
                     t_range=r.t_range) for r in requests]
