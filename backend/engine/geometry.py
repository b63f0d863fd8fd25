"""The interface of a geometry type: what the renderer, the trainer and the exporter use of it.

A geometry is a differentiable 3D field in [-bound, bound]^3 (Z up) giving density and albedo. Types
are registered by name (``backend.engine.registry``) and picked by the ``geometry_type`` setting;
``NeRFField`` ("implicit-volume") is the built-in one. Shapes are written as in nerfstudio
(``Float[Tensor, "N 3"]``), in the docstrings only: the project does not depend on jaxtyping.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from shared.settings import GenerationSettings


class Geometry(nn.Module, metaclass=ABCMeta):
    @classmethod
    @abstractmethod
    def from_settings(cls, settings: GenerationSettings, bound: float = 1.0) -> "Geometry":
        """Build the geometry ``settings`` describe, in [-bound, bound]^3."""

    @abstractmethod
    def density(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: Float[Tensor, "N 3"] points -> Float[Tensor, "N"] volume density (>= 0)."""

    @abstractmethod
    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: Float[Tensor, "N 3"] points -> Float[Tensor, "N 3"] colour in [0, 1]."""

    @abstractmethod
    def forward(self, x: torch.Tensor, with_normals: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``x``: Float[Tensor, "N 3"] -> (density Float[Tensor, "N"], albedo Float[Tensor, "N 3"],
        outward unit normals Float[Tensor, "N 3"] when ``with_normals``, else None)."""

    @abstractmethod
    def parameter_groups(self) -> list[dict]:
        """Optimiser parameter groups, ``[{"name": str, "params": iterable}, ...]``; the trainer adds
        the learning rates (the ``lr`` setting)."""

    def update_step(self, step: int) -> None:
        """Called before every training step (and after a checkpoint is loaded): step-dependent
        schedules of the geometry, such as progressive hash-grid levels. Default: none."""

    def occupancy_density(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: Float[Tensor, "N 3"] -> Float[Tensor, "N"]: what the occupancy grid thresholds to
        decide which cells rays march through. Default: the density; a surface field (the SDF) marks
        a shell around its surface instead."""
        return self.density(x)

    def regularisers(self, step: int) -> dict:
        """Weighted loss terms of the geometry itself, added to the SDS loss every step (e.g. the SDF's
        eikonal term): ``{name: scalar tensor}``. Default: none."""
        return {}
