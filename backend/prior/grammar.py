"""The built-in prior's prompt grammar: which shapes and colours it knows and how captions read.

    prompt  := ARTICLE " " [COLOUR " "] SHAPE [VIEW]
    ARTICLE := "a" | "an"            ("an" before a colour or shape that starts with a vowel)
    COLOUR  := red | orange | yellow | green | cyan | blue | purple | white
    SHAPE   := cube | sphere | cone | cylinder | torus | pyramid | capsule
    VIEW    := ", " SECTOR " view" | ", overhead view"
    SECTOR  := front | front left | left | back left | back | back right | right | front right
               (the engine's "compass" view naming, ``backend.engine.cameras.COMPASS_SUFFIXES``: the
               45-degree azimuth sector of the camera; azimuth 0 = front, seen from +X; left = +Y)

Examples: "a red cube", "an orange torus", "a blue cone, front left view", "a sphere". The empty prompt
is the unconditional one (the default negative prompt). Words are matched case-insensitively;
anything else is tokenised byte by byte and is out of distribution for the prior.
"""

from __future__ import annotations

import itertools

from backend.engine.cameras import VIEW_NAMINGS, view_suffixes
from shared.presets import PRESETS

SHAPES: tuple[str, ...] = ("cube", "sphere", "cone", "cylinder", "torus", "pyramid", "capsule")

# Albedo of each colour word, linear RGB in [0, 1]: the ground truth of the quality benchmark.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.95, 0.50, 0.08),
    "yellow": (0.95, 0.85, 0.12),
    "green": (0.15, 0.65, 0.20),
    "cyan": (0.10, 0.75, 0.80),
    "blue": (0.12, 0.25, 0.85),
    "purple": (0.55, 0.20, 0.75),
    "white": (0.92, 0.92, 0.92),
}

# The view naming the prior is trained and generated with (the preset's ``view_naming``): with
# threestudio's front/side/back a cube or pyramid looked the same under every name, and SDS made
# them yaw-averaged and round.
VIEW_NAMING: str = PRESETS["builtin"]["view_naming"]
VIEW_SUFFIXES: dict[str, str] = view_suffixes(VIEW_NAMING)
VIEWS: tuple[str, ...] = tuple(VIEW_SUFFIXES)          # front, front left, ..., front right, overhead


def mirrored_view(view: str) -> str:
    """The view name seen in a left-right mirrored image (left and right swap)."""
    swap = {"left": "right", "right": "left"}
    return " ".join(swap.get(w, w) for w in view.split())


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def caption(shape: str | None, colour: str | None = None, view: str | None = None) -> str:
    """The caption of one training image; ``shape=None`` gives the empty (unconditional) caption."""
    if shape is None:
        return ""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; the built-in prior knows {', '.join(SHAPES)}")
    if colour is not None and colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; the built-in prior knows {', '.join(COLOURS)}")
    words = f"{colour} {shape}" if colour else shape
    text = f"{article(words)} {words}"
    if view:
        text += VIEW_SUFFIXES[view]
    return text


def all_prompts() -> list[str]:
    """Every shape x colour prompt (no view suffix), shape-major: the benchmark's full set."""
    return [caption(s, c) for s, c in itertools.product(SHAPES, COLOURS)]


def parse_prompt(prompt: str) -> tuple[str, str | None]:
    """(shape, colour or None) of a grammar prompt; ValueError for anything else."""
    text = prompt.strip().lower()
    for suffix in sorted({x for naming in VIEW_NAMINGS.values() for x in naming.values()}, key=len, reverse=True):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    words = text.split()
    if len(words) in (2, 3) and words[0] in ("a", "an") and words[-1] in SHAPES:
        colour = words[1] if len(words) == 3 else None
        if colour is None or colour in COLOURS:
            return words[-1], colour
    raise ValueError(f"{prompt!r} is not in the built-in prior's grammar "
                     f"('a <colour> <shape>', colours: {', '.join(COLOURS)}; shapes: {', '.join(SHAPES)})")


def vocabulary() -> list[str]:
    """The words that get one token each in the prior's tokenizer."""
    view_words = [w for v in VIEWS for w in v.split()]
    words = ["a", "an", "view", *SHAPES, *COLOURS, *view_words]
    return list(dict.fromkeys(words))
