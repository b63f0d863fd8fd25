"""What the built-in prior can draw, as a user sees it: the prompt list, an in-vocabulary test, the
nearest known prompts and the warning for a prompt outside the vocabulary.

The prior was trained on captions of one grammar only. Any other prompt is tokenised byte by byte,
is out of distribution, and SDS then turns the initial blob into a random blob without a word of
complaint; the warning says so before the run and names what it can draw instead.

Built only on ``grammar.all_prompts()`` (the list) and ``grammar.parse_prompt()`` (the exact test:
it also accepts view suffixes, upper case and prompts the list spells out only in full), so it stays
right as the grammar grows. ``python -m backend.prior.vocabulary [--json]`` prints the list.

Nearest prompts are ranked by hand rather than with ``difflib.get_close_matches`` alone: a plain
character ratio ranks "a red barrel" closer to "a red cube" than to "a wooden barrel", while a user
who misspells or recolours an object wants that object first. So words count most (each query word
matched to its most similar word of the candidate, the object noun, last, twice), the whole-string
ratio breaks ties.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import sys

from . import grammar

ARTICLES = {"a", "an", "the"}
LIST_COMMAND = "python -m backend generate --list-prompts"


@functools.cache
def _known() -> tuple[str, ...]:
    return tuple(grammar.all_prompts())


def known_prompts() -> list[str]:
    """Every prompt the built-in prior knows (no view suffix), in the grammar's order."""
    return list(_known())


def in_vocabulary(prompt: str) -> bool:
    try:
        grammar.parse_prompt(prompt)
    except ValueError:
        return False
    return True


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in ARTICLES]


def _word_similarity(a: str, b: str) -> float:
    return 1.0 if a == b else difflib.SequenceMatcher(None, a, b).ratio()


def _weights(words: list[str]) -> list[float]:
    # prompts read "a <adjectives> <object>": the object, last, counts twice
    return [1.0] * (len(words) - 1) + [2.0] if words else []


def _match(words: list[str], others: list[str]) -> float:
    """Weighted mean over ``words`` of each word's similarity to its closest word of ``others``."""
    weights = _weights(words)
    return sum(wt * max(_word_similarity(w, o) for o in others) for w, wt in zip(words, weights)) / sum(weights)


def _score(query: str, query_words: list[str], candidate: str) -> float:
    words = _words(candidate)
    word_score = 0.0
    if query_words and words:
        # each query word to its best candidate word ("barel" finds "barrel") and back, so that a
        # candidate with words the query lacks ranks below one without them
        word_score = 0.7 * _match(query_words, words) + 0.3 * _match(words, query_words)
    return word_score + 0.2 * difflib.SequenceMatcher(None, query.lower().strip(), candidate).ratio()


def nearest_prompts(prompt: str, n: int = 3, known: list[str] | None = None) -> list[str]:
    """The ``n`` known prompts most like ``prompt``, best first."""
    known = list(_known()) if known is None else known
    query_words = _words(prompt)
    ranked = sorted(known, key=lambda k: -_score(prompt, query_words, k))
    return ranked[:n]


def oov_warning(prompt: str, n: int = 3) -> str | None:
    """A warning for a prompt outside the built-in prior's vocabulary, naming the nearest known
    prompts; None for a prompt it knows."""
    if in_vocabulary(prompt):
        return None
    nearest = ", ".join(repr(p) for p in nearest_prompts(prompt, n))
    return (f"{prompt.strip()[:80]!r} is not in the built-in prior's vocabulary ({len(_known())} prompts): it "
            f"will not draw it and the result is likely a shapeless blob. Nearest known prompts: {nearest} "
            f"(all of them: {LIST_COMMAND})")


def main(argv: list[str] | None = None) -> int:
    """Print the vocabulary, one prompt a line, or as a JSON list with --json."""
    argv = sys.argv[1:] if argv is None else argv
    prompts = known_prompts()
    print(json.dumps(prompts) if "--json" in argv else "\n".join(prompts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
