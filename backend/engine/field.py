"""The radiance field: hash grid + small MLP -> density and albedo; normals; background model."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from backend.engine.geometry import Geometry
from backend.engine.hashgrid import HashGridEncoding
from backend.engine.mlp_precision import linear as mlp_linear, resolve as resolve_precision
from backend.engine.registry import register


@register("geometry", "implicit-volume")
class NeRFField(Geometry):
    """Implicit volume in [-bound, bound]^3 (Z up): the ``implicit-volume`` geometry type.

    Density follows threestudio's ``implicit-volume``: softplus(raw + blob) with Magic3D's blob bias
    ``blob_density * (1 - |x| / blob_radius)`` so the first renders show a centred ball; ``exp``
    uses stable-dreamfusion's Gaussian blob instead. With ``progressive_levels`` the finer hash-grid
    levels unlock over ``total_steps`` (``update_step``). ``mlp_precision``: the MLP's products in
    fp32, TF32 or bf16 (``backend.engine.mlp_precision``; "auto": TF32 on CUDA).
    """

    def __init__(self, *, n_levels=16, n_features=2, log2_table_size=19, base_resolution=16,
                 max_resolution=4096, mlp_width=64, density_activation="softplus", blob_density=10.0,
                 blob_radius=0.5, normal_type="analytic", bound=1.0, fused_hashgrid: bool = True,
                 progressive_levels: bool = False, total_steps: int = 1, mlp_precision: str = "auto"):
        super().__init__()
        resolve_precision(mlp_precision, "cpu")           # a bad name fails here, not at the first step
        self.mlp_precision = mlp_precision
        self.encoding = HashGridEncoding(n_levels, n_features, log2_table_size, base_resolution,
                                         max_resolution, bound, fused=fused_hashgrid)
        self.progressive_levels, self.total_steps = progressive_levels, total_steps
        self.mlp = nn.Sequential(nn.Linear(self.encoding.output_dim, mlp_width), nn.ReLU(inplace=True),
                                 nn.Linear(mlp_width, 4))
        self.density_activation, self.normal_type, self.bound = density_activation, normal_type, bound
        self.blob_density, self.blob_radius = blob_density, blob_radius
        # Finite-difference step: about one cell of a 512^3 grid over the scene.
        self.fd_eps = 2.0 * bound / 512

    @classmethod
    def from_settings(cls, s, bound: float = 1.0) -> "NeRFField":
        return cls(n_levels=s.hash_levels, n_features=s.hash_features, log2_table_size=s.hash_log2_size,
                   base_resolution=s.hash_base_resolution, max_resolution=s.hash_max_resolution,
                   mlp_width=s.mlp_width, density_activation=s.density_activation,
                   blob_density=s.blob_density, blob_radius=s.blob_radius, normal_type=s.normal_type,
                   bound=bound, fused_hashgrid=s.hashgrid_backend == "auto",
                   progressive_levels=s.progressive_levels, total_steps=s.steps,
                   mlp_precision=s.field_precision)

    def parameter_groups(self) -> list[dict]:
        return [{"params": self.encoding.parameters(), "name": "encoding"},
                {"params": self.mlp.parameters(), "name": "mlp"}]

    # -- progressive levels ----------------------------------------------------------------------
    def active_levels(self, step: int) -> int:
        """threestudio unlocks levels 8..16 one at a time from step 2000 of 10000; we scale that
        to the step budget: half the levels until 20% of the run, all of them by 80%."""
        n = self.encoding.n_levels
        if not self.progressive_levels or n <= 1:
            return n
        start_level = max(1, n // 2)
        start, end = int(0.2 * self.total_steps), max(int(0.8 * self.total_steps), int(0.2 * self.total_steps) + 1)
        if step < start:
            return start_level
        return min(n, start_level + 1 + (step - start) * (n - start_level) // (end - start))

    def update_step(self, step: int) -> None:
        self.encoding.set_active_levels(self.active_levels(step))

    def blob(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: Float[Tensor, "N 3"] -> Float[Tensor, "N"] the initial density bias."""
        r = x.norm(dim=-1)
        if self.density_activation == "softplus":
            return self.blob_density * (1.0 - r / self.blob_radius)
        return self.blob_density * torch.exp(-(r**2) / (2 * self.blob_radius**2))

    def _activate(self, raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.density_activation == "softplus":
            return F.softplus(raw + self.blob(x))
        # Clamped exp (stable-dreamfusion's trunc_exp) so a large raw value cannot overflow.
        return torch.exp((raw + self.blob(x)).clamp(max=15.0))

    def _run_mlp(self, h: torch.Tensor, masks: Optional[list] = None) -> torch.Tensor:
        """The MLP (Linear/ReLU layers) on the features ``h`` in ``mlp_precision``; fp32 out. ``masks``:
        a list that receives each ReLU's ``pre-activation > 0`` (for the closed-form Jacobian)."""
        precision = resolve_precision(self.mlp_precision, h.device)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                h = mlp_linear(h, layer.weight, layer.bias, precision)
            elif isinstance(layer, nn.ReLU):
                if masks is not None:
                    masks.append(h > 0)
                # in place when no mask is kept (as the module's own ReLU); else the pre-activation stays
                h = F.relu(h, inplace=masks is None)
            else:
                raise TypeError(f"the field's MLP supports Linear/ReLU layers, not {type(layer).__name__}")
        return h.float()

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_mlp(self.encoding(x))

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: Float[Tensor, "N 3"] -> Float[Tensor, "N"]."""
        return self._activate(self._raw(x)[:, 0], x)

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: Float[Tensor, "N 3"] -> Float[Tensor, "N 3"] in [0, 1]."""
        return torch.sigmoid(self._raw(x)[:, 1:4])

    def raw_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The MLP's raw outputs Float[Tensor, "N 4"] and d(raw[:, 0])/dx Float[Tensor, "N 3"] in closed
        form: the encoder's Jacobian pushed through the MLP by hand (Linear/ReLU layers), so the gradient
        is an ordinary differentiable tensor and training needs no double backward (which cost +26 ms
        and most of the memory of a GPU step: results/speed/NOTES.md). ``tests/test_engine.py`` checks
        it against autograd. Also used by the SDF field (``backend.engine.sdf_field``)."""
        x = x.detach()
        feats, jac = self.encoding.forward_with_jacobian(x)             # (N, E), (N, E, 3)
        masks: list = []
        h = self._run_mlp(feats, masks)
        # Row 0 (raw density) of the MLP's Jacobian, from the last layer back to the features: per
        # sample (the ReLU masks differ), Float[Tensor, "N E"]. Its products are the MLP's size too.
        precision = resolve_precision(self.mlp_precision, x.device)
        v = None
        for layer in reversed(self.mlp):
            if isinstance(layer, nn.Linear):
                if v is None:
                    v = layer.weight[0]
                elif v.dim() == 1:
                    v = v @ layer.weight
                else:
                    v = mlp_linear(v, layer.weight.t(), None, precision)
            else:
                v = v * masks.pop()
        v = v.expand_as(feats).float()
        # d(raw)/dx = sum_e v[n, e] jac[n, e, :]: a multiply and a sum over e. Not einsum: that made it a
        # batched (1 x E) @ (E x 3) product per sample, two cuBLAS GEMV kernels of ~1.2 ms each in the
        # H200 profile of a 64^2 step (measurement 6), for what is a pass over ``jac``.
        return h, (v[:, :, None] * jac).sum(1)

    def _density_and_gradient(self, x: torch.Tensor):
        """Density, albedo and d(density)/dx in closed form (``raw_and_gradient``)."""
        x = x.detach()
        h, grad_raw = self.raw_and_gradient(x)
        pre = h[:, 0] + self.blob(x)
        if self.density_activation == "softplus":
            density = F.softplus(pre)
            slope = torch.sigmoid(pre)
            r = x.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            grad_blob = -self.blob_density / self.blob_radius * x / r
        else:
            clamped = pre.clamp(max=15.0)
            density = torch.exp(clamped)
            slope = density * (pre < 15.0)
            grad_blob = self.blob(x)[:, None] * (-x / self.blob_radius**2)
        return density, torch.sigmoid(h[:, 1:4]), slope[:, None] * (grad_raw + grad_blob)

    def forward(self, x: torch.Tensor, with_normals: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``x``: Float[Tensor, "N 3"] -> (density Float[Tensor, "N"], albedo Float[Tensor, "N 3"],
        normals Float[Tensor, "N 3"] or None). Normals point outward."""
        if not with_normals:
            h = self._raw(x)
            return self._activate(h[:, 0], x), torch.sigmoid(h[:, 1:4]), None
        if self.normal_type == "analytic":
            density, albedo, grad = self._density_and_gradient(x)
            return density, albedo, F.normalize(-grad, dim=-1, eps=1e-8)
        h = self._raw(x)
        density = self._activate(h[:, 0], x)
        eps = self.fd_eps
        offsets = torch.eye(3, device=x.device, dtype=x.dtype) * eps
        pts = torch.cat([x[:, None, :] + offsets, x[:, None, :] - offsets], dim=1).reshape(-1, 3)
        d = self.density(pts).reshape(-1, 2, 3)
        grad = (d[:, 0] - d[:, 1]) / (2 * eps)
        return density, torch.sigmoid(h[:, 1:4]), F.normalize(-grad, dim=-1, eps=1e-8)


class BackgroundMLP(nn.Module):
    """View-direction -> colour (threestudio's ``neural-environment-map-background``, frequency-encoded)."""

    def __init__(self, width: int = 16, n_frequencies: int = 3):
        super().__init__()
        self.n_frequencies = n_frequencies
        in_dim = 3 + 3 * 2 * n_frequencies
        self.mlp = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(inplace=True), nn.Linear(width, width),
                                 nn.ReLU(inplace=True), nn.Linear(width, 3))

    def forward(self, dirs: torch.Tensor) -> torch.Tensor:
        """``dirs``: Float[Tensor, "N 3"] unit ray directions -> Float[Tensor, "N 3"] colour in [0, 1]."""
        feats = [dirs]
        for k in range(self.n_frequencies):
            feats += [torch.sin((2.0**k) * torch.pi * dirs), torch.cos((2.0**k) * torch.pi * dirs)]
        return torch.sigmoid(self.mlp(torch.cat(feats, dim=-1)))
