"""Captions and prompts that name the shading: prior v5's training captions ("a shaded wooden barrel,
front view") and the engine's ``shading_prompt`` setting, which asks the prior for each render's shading
with exactly those words. Why: ``backend/engine/shading_prompt.py``."""

import json

import pytest
import torch

from backend.engine.cameras import VIEW_SUFFIXES, view_suffixes
from backend.engine.shading_prompt import SHADING_WORDS, embedding_key, with_shading_word
from backend.prior.catalogue import CATEGORIES
from backend.prior.grammar import VIEWS, caption, vocabulary
from backend.prior.render import ENTRIES, SHADINGS


@pytest.mark.parametrize("prompt, shading, text", [
    ("a wooden barrel", "lambertian", "a shaded wooden barrel"),
    ("an orange cube", "textureless", "an unpainted orange cube"),
    ("an orange cube", "lambertian", "a shaded orange cube"),
    ("a red cube", "albedo", "a red cube"),
    ("wooden barrel", "lambertian", "a shaded wooden barrel"),
])
def test_the_shading_word_goes_after_the_article(prompt, shading, text):
    assert with_shading_word(prompt, shading) == text


def test_training_captions_are_the_engines_prompts_word_for_word():
    """What the engine asks for (prompt with the shading word, then the view suffix) is the caption the
    prior was trained on, for every object, look, view and shading."""
    for k in CATEGORIES:
        for look in {*k.looks, None}:
            for view in [*VIEWS, None]:
                for shading in SHADINGS:
                    suffix = view_suffixes("compass")[view] if view else ""      # the prior's view naming
                    prompt = with_shading_word(caption(k.name, look), shading) + suffix
                    assert caption(k.name, look, view, shading) == prompt


def test_v5_tokenizer_keeps_every_shading_caption_whole_and_distinct(tmp_path):
    """The shading words are single tokens of v5's tokenizer, no v5 caption is truncated (v3's 16
    tokens would cut some), and v3's tokenizer is the one it always was."""
    from backend.prior.model import MAX_TOKENS, architecture, build_tokenizer, tokenize
    from backend.prior.train import caption_table

    v5 = build_tokenizer(tmp_path / "v5", "v5")
    assert v5.model_max_length == architecture("v5").max_tokens > MAX_TOKENS
    assert all(len(v5.tokenize(w)) == 1 for w in SHADING_WORDS.values())
    captions = caption_table(shading_captions=True)
    assert len(captions) == 3 * (len(caption_table()) - 1) + 1
    assert max(len(v5(c).input_ids) for c in captions) <= v5.model_max_length
    ids = tokenize(v5, captions)          # the table repeats captions (a dropped look): distinct strings
    assert len({tuple(r) for r in ids.tolist()}) == len(set(captions))      # stay distinct token rows
    v3 = build_tokenizer(tmp_path / "v3")
    assert v3.model_max_length == MAX_TOKENS and vocabulary() == vocabulary(False)
    assert len(v3.tokenize("shaded")) > 1       # not a word of the v3 grammar


def test_caption_index_names_each_images_shading_and_keeps_v3s_draws():
    """With shading labels every non-empty caption carries the image's shading word (none for albedo);
    without them the indices are v3's, draw for draw."""
    from backend.prior.train import caption_index, caption_table

    gen = torch.Generator().manual_seed(0)
    n = 4000
    entry = torch.randint(0, len(ENTRIES), (n,), generator=gen)
    view = torch.randint(0, len(VIEWS), (n,), generator=gen)
    shading = torch.randint(0, len(SHADINGS), (n,), generator=gen)
    table = caption_table(shading_captions=True)
    idx = caption_index(entry, view, torch.Generator().manual_seed(1), shading=shading)
    plain = caption_index(entry, view, torch.Generator().manual_seed(1))
    plain_table = caption_table()
    empty = 0
    for i in range(n):
        text, base = table[idx[i]], plain_table[plain[i]]
        if text == "":
            empty += 1
            assert base == ""
            continue
        sh = SHADINGS[shading[i]]
        assert text == (with_shading_word(base.split(",")[0], sh) + base[len(base.split(",")[0]):])
    assert 0.05 < empty / n < 0.15


def test_shading_prompt_asks_the_prior_for_each_renders_shading():
    """With the setting on, a lit step's guidance gets the embedding of "a shaded red cube, <view> view",
    an albedo step's the plain prompt's; off, every step gets the plain one."""
    from backend.engine.trainer import prepare_generation
    from tests.helpers import tiny_settings

    run = prepare_generation(tiny_settings(shading_prompt=True, albedo_warmup_steps=0, shading="lambertian"),
                             device="cpu").trainer
    render = run.render_step()
    request = run.guidance_request(render)
    view = render.views[0]
    assert request.views == [embedding_key("lambertian", view)]
    expected = run.guidance.encode_prompts("a shaded red cube", "", {view: VIEW_SUFFIXES[view]}).by_view[view]
    assert torch.allclose(run.embeddings.by_view[request.views[0]], expected)
    assert not torch.allclose(run.embeddings.by_view[view], expected)       # the plain prompt differs
    albedo = prepare_generation(tiny_settings(shading_prompt=True, albedo_warmup_steps=0, shading="albedo"),
                                device="cpu").trainer
    render = albedo.render_step()
    assert albedo.guidance_request(render).views == render.views
    plain = prepare_generation(tiny_settings(albedo_warmup_steps=0, shading="lambertian"), device="cpu").trainer
    render = plain.render_step()
    assert plain.guidance_request(render).views == render.views
    assert all("|" not in k for k in plain.embeddings.by_view)


def test_prior_v5_trains_from_shading_labels_and_refuses_a_cache_without_them(tmp_path):
    """``--architecture v5`` on a cache with (entry, view, shading) labels writes a pipeline whose
    tokenizer knows the shading words and which the engine steps with ``shading_prompt``; a cache from
    before the shading labels is refused with a message naming it."""
    from backend.engine.guidance.models import load_guidance_for
    from backend.engine.trainer import Trainer
    from backend.prior import recommended_settings
    from backend.prior.train import main, save_ckpt
    from shared.settings import GenerationSettings

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=gen)
    labels = torch.stack([torch.randint(0, len(ENTRIES), (4,), generator=gen),
                          torch.randint(0, len(VIEWS), (4,), generator=gen),
                          torch.randint(0, len(SHADINGS), (4,), generator=gen)], 1)
    args = ["--out", str(tmp_path / "run"), "--device", "cpu", "--vae-steps", "1", "--unet-steps", "1",
            "--vae-batch", "2", "--unet-batch", "2", "--samples-per-prompt", "0", "--architecture", "v5"]
    save_ckpt(tmp_path / "old.pt", (images, labels[:, :2]))
    with pytest.raises(SystemExit, match="shading labels"):
        main([*args, "--data-cache", str(tmp_path / "old.pt")])
    save_ckpt(tmp_path / "data.pt", (images, labels))
    assert main([*args, "--data-cache", str(tmp_path / "data.pt")]) == 0
    assert json.loads((tmp_path / "run" / "report" / "train_log.json").read_text())["architecture"] == "v5"

    weights = tmp_path / "run" / "weights"
    settings = GenerationSettings.from_dict({**recommended_settings(), "prompt": "a wooden chair", "model": str(weights),
                                             "steps": 3, "albedo_warmup_steps": 0, "shading_prompt": True,
                                             "shape_model": ""})   # v5 alone names the shading
    guidance = load_guidance_for(settings, "cpu")
    assert guidance.tokenizer.model_max_length == 20 and len(guidance.tokenizer.tokenize("unpainted")) == 1
    trainer = Trainer(settings, guidance, "cpu")
    for _ in range(3):
        losses = trainer.train_step()
        assert all(torch.isfinite(v).all() for v in losses.values()), losses
