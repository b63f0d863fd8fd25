"""Multi-view attention, MVDream's way: the self-attention of every transformer block of a UNet attends over
the tokens of all V views of one object at once, so the V renders of a batch are denoised as one object.

A prior trained so (``backend/prior/model.py``, v11) sees four views of an object at 90 degrees together and
gives SDS a score that is consistent between them: where a single-view prior judges each render on its own (and
a thin part swollen in one view is fine by it), the joint one judges the shape that all four show. Nothing else
of the UNet changes: the same weights and layout (a fine-tune of a single-view prior starts from its weights),
and diffusers' own attention processor does the arithmetic on the reshaped tokens; this module only says which
rows belong together. A folder's ``multiview.json`` says how many views its UNet expects (diffusers' UNet
config has no place for it, and an attention processor is not saved with the weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

MULTIVIEW_FILE = "multiview.json"


class MultiViewAttnProcessor:
    """Self-attention over the views of each object: Float[Tensor, "(B V) N C"] tokens are attended as
    Float[Tensor, "B (V N) C"], then given back in their rows (diffusers' ``AttnProcessor2_0`` does the rest)."""

    def __init__(self, num_views: int):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.num_views = int(num_views)
        self.inner = AttnProcessor2_0()

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None or hidden_states.ndim != 3:
            # cross-attention (the text) or a spatial input: per image, as without views
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        rows, tokens, channels = hidden_states.shape
        v = self.num_views
        if rows % v:
            raise ValueError(f"multi-view attention over {v} views needs a batch of whole objects "
                             f"(a multiple of {v} images), got {rows}")
        joint = hidden_states.reshape(rows // v, v * tokens, channels)
        return self.inner(attn, joint, None, attention_mask, temb).reshape(rows, tokens, channels)


def set_multiview_attention(unet, num_views: int) -> None:
    """Make ``unet``'s self-attention layers (``attn1``) attend across ``num_views`` consecutive images; the
    cross-attention to the text (``attn2``) stays per image. ``num_views`` 1: diffusers' default processor."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    processors = {}
    for name in unet.attn_processors:
        multi = num_views > 1 and name.endswith("attn1.processor")
        processors[name] = MultiViewAttnProcessor(num_views) if multi else AttnProcessor2_0()
    unet.set_attn_processor(processors)


def read_num_views(model_path) -> int:
    """The views a model folder's UNet denoises together (1 without ``multiview.json``: a single-view model)."""
    path = Path(model_path) / MULTIVIEW_FILE
    if not path.is_file():
        return 1
    views = json.loads(path.read_text()).get("num_views", 1)
    if not isinstance(views, int) or views < 1:
        raise ValueError(f"{path}: num_views must be a whole number >= 1, got {views!r}")
    return views


def write_num_views(folder, num_views: int) -> None:
    """Record in a saved model folder that its UNet denoises ``num_views`` views of one object together."""
    (Path(folder) / MULTIVIEW_FILE).write_text(json.dumps(
        {"num_views": int(num_views),
         "attention": "self-attention across the views of one object (MVDream); backend/engine/guidance/multiview.py",
         "cameras": "views at one elevation, azimuths 360/num_views degrees apart (cameras.sample_cameras)"}, indent=1) + "\n")
