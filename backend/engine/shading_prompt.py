"""The shading word of a render's prompt (the ``shading_prompt`` setting).

Why: a prior trained on albedo, lit and textureless renders under one caption learns "a wooden barrel"
as a mixture of a brown, a darker brown and a grey object, and SDS on an albedo render can settle into
the wrong one (prior v4's dark barrels: ``backend/prior/README.md``, "Session 16"). A prior whose
training captions name the shading ("a shaded wooden barrel", "an unpainted wooden barrel"; albedo
renders keep the plain caption: ``backend.prior.grammar.caption``) is asked, every step, for the
shading that step renders with -- as the view suffix asks for the camera's view.
"""

from __future__ import annotations

# Albedo renders keep the plain prompt; the names are the renderer's shadings.
SHADING_WORDS = {"lambertian": "shaded", "textureless": "unpainted"}


def article(word: str) -> str:
    """"a" or "an" before ``word`` (also the prior grammar's: its captions and these prompts must agree)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def with_shading_word(prompt: str, shading: str) -> str:
    """``prompt`` with the shading's word after its article: "a red cube" -> "a shaded red cube",
    "an orange cube" -> "an unpainted orange cube"; a prompt without an article gets one."""
    word = SHADING_WORDS.get(shading)
    if word is None:
        return prompt
    head, _, rest = prompt.partition(" ")
    if head.lower() in ("a", "an") and rest:
        prompt = rest
    return f"{article(word)} {word} {prompt}"


def embedding_key(shading: str, view: str) -> str:
    """The key of a render's embedding in ``PromptEmbeddings.by_view`` when shading words are on."""
    return f"{shading}|{view}" if shading in SHADING_WORDS else view
