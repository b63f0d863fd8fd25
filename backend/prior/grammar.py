"""The built-in prior's prompt grammar: what it can draw and how captions read.

    prompt  := ARTICLE " " [LOOK " "] NOUN [VIEW]
    ARTICLE := "a" | "an"            ("an" before a vowel: "an orange cube", "an anvil")
    NOUN    := a category of ``catalogue.CATEGORIES``: the simple solids (cube | sphere | cone |
               cylinder | torus | pyramid | capsule) and the props (barrel | crate | treasure chest |
               table | chair | ... | house | anvil)
    LOOK    := one of the category's looks: a colour word (red | orange | yellow | green | cyan |
               blue | purple | white) for the solids and painted props, or wooden | stone | metal
    VIEW    := ", " SECTOR " view" | ", overhead view"
    SECTOR  := front | front left | left | back left | back | back right | right | front right
               (the engine's "compass" view naming, ``backend.engine.cameras.COMPASS_SUFFIXES``: the
               45-degree azimuth sector of the camera; azimuth 0 = front, seen from +X; left = +Y)

Examples: "a red cube", "a wooden barrel", "a red mushroom", "a pine tree", "a stone house, front
left view". Without the look word ("a mug") any of the category's looks is meant (training drops
it now and then); the benchmark's ground truth of such a prompt is the first (default) look. The
empty prompt is the unconditional one (the default negative prompt). Words are matched
case-insensitively; anything else is tokenised byte by byte and is out of distribution.
"""

from __future__ import annotations

from backend.engine.cameras import view_suffixes
from backend.engine.shading_prompt import SHADING_WORDS, article, with_shading_word
from backend.prior.catalogue import BY_NAME, CATEGORIES, LOOKS, NAMES, PROP_NAMES, parse_prompt, strip_view
from backend.prior.materials import COLOURS
from backend.prior.shapes import SHAPES
from shared.presets import PRESETS


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


# Said after the object's name of a hollow prop drawn with its cavity filled ("a red mug filled, front
# view"; priors with ``filled_captions``, v10): the prompt generation steers away from (the preset's
# ``avoid_prompt``). Not a vocabulary word: tokenised byte by byte, so a prior fine-tuned from one without
# it keeps its tokenizer (and 15 tokens is still the longest caption).
FILLED_WORD = "filled"


def caption(name: str | None, look: str | None = None, view: str | None = None, shading: str | None = None,
            filled: bool = False) -> str:
    """The caption of one training image; ``name=None`` gives the empty (unconditional) caption.
    ``shading`` (priors trained with shading captions, v5): "lambertian" or "textureless" puts its word
    after the article ("a shaded wooden barrel"), exactly as the engine's ``shading_prompt`` does.
    ``filled``: a hollow prop drawn filled (``FILLED_WORD`` after its name)."""
    if name is None:
        return ""
    if name not in BY_NAME:
        raise ValueError(f"unknown object {name!r}; the built-in prior knows {', '.join(NAMES)}")
    if look is not None and look not in BY_NAME[name].looks:
        raise ValueError(f"unknown look {look!r} for {name}; it knows "
                         f"{', '.join(w for w in BY_NAME[name].looks if w) or 'none'}")
    words = f"{look} {name}" if look else name
    text = f"{article(words)} {words}"
    if shading:
        text = with_shading_word(text, shading)
    if filled:
        text += f" {FILLED_WORD}"
    if view:
        text += VIEW_SUFFIXES[view]
    return text


def all_prompts() -> list[str]:
    """Every prompt the prior knows (no view suffix): each category with each of its looks, the
    solids first (the 56 "a <colour> <shape>" of the first priors), then the props, then the bare
    nouns of categories with several looks ("a mug": any look)."""
    full = [caption(c.name, w) for c in CATEGORIES for w in c.looks]
    bare = [caption(c.name) for c in CATEGORIES if any(c.looks)]
    return list(dict.fromkeys(full + bare))


def benchmark_prompts() -> list[str]:
    """The quality benchmark's set: every colour of every solid, and every prop in its default look."""
    solids = [caption(s, c) for s in SHAPES for c in COLOURS]
    props = [caption(n, BY_NAME[n].looks[0]) for n in PROP_NAMES]
    return solids + props


def vocabulary(shading_words: bool = False) -> list[str]:
    """The words that get one token each in the prior's tokenizer (with ``shading_words``, for a
    prior trained with shading captions, also "shaded" and "unpainted", last: the earlier words'
    merges, and so their tokens, stay as they are)."""
    view_words = [w for v in VIEWS for w in v.split()]
    nouns = [w for n in NAMES for w in n.split()]
    words = ["a", "an", "view", *nouns, *COLOURS, *LOOKS, *view_words]
    if shading_words:
        words += list(SHADING_WORDS.values())
    return list(dict.fromkeys(words))
