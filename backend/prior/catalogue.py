"""Everything the built-in prior can draw, as one list of categories: the seven simple solids of
the first priors (``shapes``) and the props library (``props``).

Each category has its prompt noun, its looks (the adjective of the prompt: a colour word for
the solids and most painted props, "wooden"/"stone"/"metal" for the rest; the first is the
default), its signed distance field and albedo, and its symmetry. The grammar, the training
renders and the quality benchmark all read this list, so a category added here is drawable,
trainable and measured.
"""

from __future__ import annotations

from functools import partial

import torch

from backend.engine.cameras import VIEW_NAMINGS
from backend.prior import materials as M
from backend.prior import shapes
from backend.prior.props import CATEGORIES as PROP_CATEGORIES
from backend.prior.props import Category, Part, evaluate


def _solid(shape: str, p: torch.Tensor, P: dict, look) -> list[Part]:
    return [Part(shapes.sdf(shape, p), M.flat(M.COLOURS[look]), p)]


def _shape_extent(shape: str) -> tuple[float, float, float]:
    return {"cube": (0.4,) * 3, "sphere": (0.5,) * 3, "cone": (0.45, 0.45, 0.45), "cylinder": (0.4,) * 3,
            "torus": (0.52, 0.52, 0.16), "pyramid": (0.45,) * 3, "capsule": (0.3, 0.3, 0.55)}[shape]


SHAPE_CATEGORIES: tuple[Category, ...] = tuple(
    Category(s, partial(_solid, s), tuple(M.COLOURS), yaw_period=shapes.YAW_PERIOD[s], extent=_shape_extent(s))
    for s in shapes.SHAPES)

CATEGORIES: tuple[Category, ...] = SHAPE_CATEGORIES + PROP_CATEGORIES
BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}
PROP_NAMES: tuple[str, ...] = tuple(c.name for c in PROP_CATEGORIES)
NAMES: tuple[str, ...] = tuple(BY_NAME)              # every category: the solids, then the props
LOOKS: tuple[str, ...] = tuple(dict.fromkeys(w for c in CATEGORIES for w in c.looks if w))


def category(name: str) -> Category:
    if name not in BY_NAME:
        raise ValueError(f"unknown category {name!r}; the built-in prior knows {', '.join(BY_NAME)}")
    return BY_NAME[name]


class GroundTruth:
    """The canonical object of a prompt: ``sdf(p) -> (N,)`` and ``albedo(p) -> (N, 3)`` at points
    ``(N, 3)`` (albedo of the nearest part), plus what the benchmark needs to know about it."""

    def __init__(self, name: str, look=None):
        self.category = category(name)
        self.name = name
        self.look = look if look is not None else self.category.looks[0]
        self.yaw_period = self.category.yaw_period
        self.facing = self.category.facing

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        return evaluate(self.category, p.float(), None, self.look)

    def sdf_with(self, proportions: dict):
        """The SDF of this object drawn with ``proportions`` (the category's parameters) instead of its canonical ones."""
        return lambda p: evaluate(self.category, p.float(), proportions, self.look)

    def proportion_grid(self) -> list[dict]:
        """The category's proportions the benchmark compares with besides the canonical ones: each float
        parameter at the low end, middle and high end of its range, each integer one at every value in its range
        (every combination; [] for a category without parameters, the simple solids). A parameter that moves
        only the material (the barrel's stave count) is held at its canonical value: its ends draw the same
        shape, and would multiply the truths to compare with for nothing (the barrel's 135 -> 27)."""
        import itertools

        canonical = self.category.canonical()
        generator = torch.Generator().manual_seed(0)
        probe = torch.rand(4096, 3, generator=generator) * 2 - 1

        def moves_shape(k, lo, hi) -> bool:
            ends = [self.sdf_with({**canonical, k: float(v)})(probe) for v in (lo, hi)]
            return not torch.equal(*ends)

        axes = {k: ([float(v) for v in range(int(lo), int(hi) + 1)] if k in self.category.ints
                    else [lo, (lo + hi) / 2, hi]) if moves_shape(k, lo, hi) else [canonical[k]]
                for k, (lo, hi) in self.category.params.items()}
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())] if axes else []

    def albedo(self, p: torch.Tensor) -> torch.Tensor:
        return evaluate(self.category, p.float(), None, self.look, albedo=True)[1]


def ground_truth(prompt: str) -> GroundTruth:
    """The ground truth of a prompt of the grammar (ValueError for any other prompt)."""
    name, look = parse_prompt(prompt)
    return GroundTruth(name, look)


# -- prompts (the grammar's parser lives here so that the ground truth needs no grammar import) ----------
def strip_view(prompt: str) -> str:
    text = prompt.strip().lower()
    for suffix in sorted({x for naming in VIEW_NAMINGS.values() for x in naming.values()}, key=len, reverse=True):
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def prompt_category(settings, prompt: str | None = None) -> Category | None:
    """The built-in prior's category a run draws, or None: another model, or a prompt outside the grammar.
    ``prompt``: the run's prompt when the settings have none (an image job's, read from its picture)."""
    if settings.model != "builtin":
        return None
    try:
        name, _ = parse_prompt(settings.prompt or prompt or "")
    except ValueError:
        return None
    return category(name)


def parse_prompt(prompt: str) -> tuple[str, str | None]:
    """(category name, look or None) of a grammar prompt; ValueError for anything else."""
    words = strip_view(prompt).split()
    if len(words) >= 2 and words[0] in ("a", "an"):
        rest = " ".join(words[1:])
        if rest in BY_NAME:
            return rest, None
        look, _, noun = rest.partition(" ")
        if noun in BY_NAME and look in BY_NAME[noun].looks:
            return noun, look
    raise ValueError(f"{prompt!r} is not in the built-in prior's grammar ('a [look] <object>'; objects: "
                     f"{', '.join(NAMES)}; looks: {', '.join(LOOKS)}; `python -m backend generate "
                     f"--list-prompts` lists every prompt)")


