"""The world pretrains its tiny sources (issue 13): a random LLM source cannot be steered by a
projector (its logits are ~0 whatever it is fed, so alignment's loss sat at ln(vocabulary)), and
a random ViT hands the model visual tokens it learns to ignore. A few seeded steps here show
each pretraining learns, and is a pure function of its seed."""

from __future__ import annotations

import json
import math
import random

import pytest

from embedded.synthetic import build_synthetic_data, language_chats


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from embedded.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("pretrain")
    paths = build_synthetic_data(root / "world", n_train=4, n_bench=2, seed=0, n_language=60)
    return train_tokenizer((root / "world" / "texts.txt").read_text().splitlines(), root / "tok"), paths


@pytest.mark.slow   # trains the world's tiny sources for real (~1-2 min)
def test_a_random_llm_source_predicts_uniformly_and_pretraining_fixes_it(tok_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from embedded.lm_pretrain import pretrain_llm_source
    from embedded.tiny_models import build_tiny_llm_source

    tok, paths = tok_dir
    model_dir = build_tiny_llm_source(tmp_path / "llm", tok, hidden=64, layers=2, seed=1)
    ids = AutoTokenizer.from_pretrained(model_dir)("a red circle on a white background", return_tensors="pt")
    with torch.no_grad():
        out = AutoModelForCausalLM.from_pretrained(model_dir)(**ids, labels=ids["input_ids"])
    vocab = out.logits.shape[-1]
    # tied std-0.02 embeddings: every next token about as likely, whatever came before
    assert out.loss > 0.97 * math.log(vocab)
    curve = pretrain_llm_source(model_dir, paths["language"], steps=40, seed=1, log=lambda *_: None)
    assert curve[0] > 0.8 * math.log(vocab) and curve[-1] < 0.6 * curve[0]
    again = build_tiny_llm_source(tmp_path / "llm2", tok, hidden=64, layers=2, seed=1)
    assert pretrain_llm_source(again, paths["language"], steps=40, seed=1, log=lambda *_: None) == curve


@pytest.mark.slow   # trains the world's tiny sources for real (~1-2 min)
def test_vit_pretraining_learns_what_is_in_each_cell(tok_dir, tmp_path):
    from embedded.tiny_models import build_tiny_vit_source
    from embedded.vit_pretrain import pretrain_vit_source

    tok, _ = tok_dir
    model_dir = build_tiny_vit_source(tmp_path / "vit", tok, text_hidden=48, seed=0)
    curve = pretrain_vit_source(model_dir, images=64, steps=40, seed=2, log=lambda *_: None)
    assert curve[-1] < 0.5 * curve[0]


def test_the_language_chats_hold_both_kinds_and_are_seeded():
    chats = language_chats(200, random.Random(0))
    assert chats == language_chats(200, random.Random(0))
    firsts = [c["messages"][0]["content"] for c in chats]
    assert any("\n" in f for f in firsts) and any("\n" not in f for f in firsts)   # read-and-answer, describe
    assert json.dumps(chats).count("<image>") == 0
