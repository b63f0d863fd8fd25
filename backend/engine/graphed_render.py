"""A training render replayed from CUDA graphs: forward and backward, one pair per render shape.

Why: at the default 64² step the GPU finishes its work before the CPU has issued the next step's
(H200, results/speed/NOTES.md measurement 8: 28.1 ms of GPU work in a 31.3 ms step); most of what
the CPU issues is the render's ~500 small kernels, forward and backward. With the fixed sample
budget (``occupancy.sample_with_budget``) nothing in a render depends on a value read back from the
GPU, so PyTorch's ``torch.cuda.make_graphed_callables`` can capture it: the forward and the backward
each become one graph launch, and autograd still sees an ordinary differentiable function (the
guidance's gradient flows into it, the field's parameters get theirs).

What a graph fixes is baked into its key: the shading (and whether normals are computed), whether
lights and a background colour are given, the sample budget's buffer sizes, the hash grid's active
level count (a kernel argument), the ray count. A key is captured the third time it is used (the
first two run eagerly, so short-lived buffer sizes never cost a capture), at most ``max_graphs``
are kept (least recently used dropped). Capture leaves the random stream where it was, so a graphed
run draws the same samples as an eager one. Anything that fails to capture runs eagerly for good,
with a warning (as the UNet's graphs: ``StableDiffusionGuidance._unet``).

Requirements the renderer keeps for this: buffers a graph reads are updated in place
(``VolumeRenderer.update_occupancy``), and the budget's per-step counts come out of the graph as an
output (``SampleBudget.take_last``) so the sizes still adapt. And one the caller keeps: no earlier
render's autograd graph is alive when a capture happens (the trainer drops each step's before the
next render). A live one holds the parameters' gradient-accumulation nodes, made on the default
stream; the capture's backward then waits on that stream and the capture fails (H200, session 16;
PyTorch warns "The AccumulateGrad node's stream does not match").
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from backend.engine.renderer import VolumeRenderer

log = logging.getLogger(__name__)


class _RenderCall(nn.Module):
    """``VolumeRenderer._render`` with tensors in and a tuple of tensors out, as graph capture needs.
    The field and background are submodules so their parameters are the graph's trainable inputs;
    the renderer itself (estimator, budget) is held by reference, not registered."""

    def __init__(self, renderer: "VolumeRenderer", shading: str, stratified: bool, need_normals: bool,
                 has_light: bool, has_bg: bool, keys: tuple[str, ...], albedo_gradient: bool = True):
        super().__init__()
        self.field, self.background = renderer.field, renderer.background
        self._renderer = (renderer,)
        self.shading, self.stratified, self.need_normals = shading, stratified, need_normals
        self.has_light, self.has_bg, self.keys = has_light, has_bg, keys
        self.albedo_gradient = albedo_gradient

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        renderer = self._renderer[0]
        rest = list(rest)
        light = rest.pop(0) if self.has_light else None
        bg = rest.pop(0) if self.has_bg else None
        out = renderer._render(rays_o, rays_d, self.shading, light, bg, self.stratified, self.need_normals,
                               self.albedo_gradient)
        counts = renderer.budget.take_last(rays_o.shape[0])
        return tuple(out[k] for k in self.keys) + (counts,)


class GraphedRender:
    """The graphs of one renderer's training renders (see the module docstring)."""

    def __init__(self, renderer: "VolumeRenderer", max_graphs: int = 8, capture_after: int = 2):
        self.renderer = renderer
        self.max_graphs, self.capture_after = max_graphs, capture_after
        self.graphs: "OrderedDict[tuple, nn.Module]" = OrderedDict()
        # Per key seen eagerly: how often, and the names of the render's outputs (the graph's order).
        self.eager: dict[tuple, tuple[int, tuple[str, ...]]] = {}
        self.failed = False

    def key(self, rays_o: torch.Tensor, shading: str, stratified: bool, need_normals: bool, has_light: bool,
            has_bg: bool, albedo_gradient: bool = True) -> tuple:
        r = self.renderer
        levels = tuple(int(m.n_active) for m in r.field.modules() if hasattr(m, "n_active"))
        return (rays_o.shape[0], shading, stratified, need_normals, has_light, has_bg,
                tuple(r.budget.sizes_for(rays_o.shape[0])), levels, r.with_distortion, r.field.training,
                albedo_gradient)

    def __call__(self, rays_o: torch.Tensor, rays_d: torch.Tensor, shading: str,
                 light_positions: Optional[torch.Tensor], bg_color: Optional[torch.Tensor], stratified: bool,
                 need_normals: bool, albedo_gradient: bool = True) -> dict:
        r = self.renderer
        has_light, has_bg = light_positions is not None, bg_color is not None
        key = self.key(rays_o, shading, stratified, need_normals, has_light, has_bg, albedo_gradient)
        args = [rays_o, rays_d] + ([light_positions] if has_light else []) + ([bg_color] if has_bg else [])
        graphed = self.graphs.get(key)
        uses, names = self.eager.get(key, (0, ()))
        if graphed is None and not self.failed and uses >= self.capture_after:
            graphed = self._capture(key, args, names, shading, stratified, need_normals, has_light, has_bg,
                                    albedo_gradient)
        if graphed is None:
            out = r._render(rays_o, rays_d, shading, light_positions, bg_color, stratified, need_normals,
                            albedo_gradient)
            self.eager[key] = (uses + 1, tuple(k for k in out if k != "n_samples"))
            return out
        self.graphs.move_to_end(key)
        outputs = graphed(*args)
        counts = outputs[-1].clone()          # the graph's own buffer is overwritten by its next replay
        r.budget.record(rays_o.shape[0], counts)
        out = dict(zip(names, outputs[:-1]))
        # As the eager budget render counts them: the visible samples that fit the buffer.
        out["n_samples"] = counts[1].clamp(max=key[6][1])
        return out

    def _capture(self, key, args, names, shading, stratified, need_normals, has_light, has_bg,
                 albedo_gradient=True) -> Optional[nn.Module]:
        call = _RenderCall(self.renderer, shading, stratified, need_normals, has_light, has_bg, names, albedo_gradient)
        sample_args = tuple(a.detach().clone() for a in args)
        device = args[0].device
        rng = torch.cuda.get_rng_state(device)
        try:
            graphed = torch.cuda.make_graphed_callables(call, sample_args, allow_unused_input=True)
        except Exception as exc:      # noqa: BLE001 - any capture failure: render eagerly from now on
            log.warning("CUDA graph capture of the training render failed (%s); rendering eagerly", exc)
            self.failed = True
            self.graphs.clear()
            _release_random_stream(device)
            torch.cuda.synchronize(device)
            return None
        finally:
            # Capture's warm-up renders drew from the stream: put it back, so the run draws what an
            # eager run would.
            torch.cuda.set_rng_state(rng, device)
        self.graphs[key] = graphed
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        return graphed


def _release_random_stream(device: torch.device) -> None:
    """After a failed capture, let the random stream be drawn from eagerly again.

    Why: a capture registers the default CUDA generator with the graph, and only a capture that ends
    without error hands it back; after a failed one every eager ``torch.rand`` raises "Offset
    increment outside graph capture encountered unexpectedly" (seen on the H200, session 16). An
    empty capture that ends cleanly registers and hands it back again."""
    try:
        with torch.cuda.device(device), torch.cuda.graph(torch.cuda.CUDAGraph()):
            pass
    except Exception as exc:  # noqa: BLE001 - nothing more to do; the eager render will say what fails
        log.warning("could not release the random stream after the failed capture (%s)", exc)
