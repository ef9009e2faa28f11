"""The embedded world's data: deterministic, in the public formats, dense beats sparse."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

import random
from collections import Counter

from embedded.synthetic import (BACKGROUNDS, COLOURS, NUMBER_WORDS, SHAPES, _draw_scene, build_synthetic_data,
                                dense_caption, questions, sparse_caption)

N_TRAIN, N_BENCH = 12, 5


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = build_synthetic_data(tmp_path / "a", n_train=N_TRAIN, n_bench=N_BENCH, seed=3)
    first = _tree(tmp_path / "a")
    build_synthetic_data(tmp_path / "a", n_train=N_TRAIN, n_bench=N_BENCH, seed=3)
    assert _tree(tmp_path / "a") == first
    # A second folder differs only in the absolute image paths of the benchmark.
    build_synthetic_data(tmp_path / "b", n_train=N_TRAIN, n_bench=N_BENCH, seed=3)
    other = _tree(tmp_path / "b")
    assert other.keys() == first.keys()
    assert other["bench/vqa.jsonl"].replace(str(tmp_path / "b").encode(), str(tmp_path / "a").encode()) \
        == first["bench/vqa.jsonl"]
    assert all(other[k] == first[k] for k in first if k != "bench/vqa.jsonl")
    # A different seed draws a different world.
    build_synthetic_data(tmp_path / "c", n_train=N_TRAIN, n_bench=N_BENCH, seed=4)
    assert Path(a["caprl_dense"]).read_bytes() != (tmp_path / "c/sources/caprl_dense.jsonl").read_bytes()


def test_public_formats_and_images(tmp_path):
    p = build_synthetic_data(tmp_path, n_train=N_TRAIN, n_bench=N_BENCH, seed=0)
    images = Path(p["images"])
    dense = [json.loads(line) for line in Path(p["caprl_dense"]).read_text().splitlines()]
    sparse = json.loads(Path(p["sharegpt4v_sparse"]).read_text())
    llava = json.loads(Path(p["llava_558k"]).read_text())
    sft = json.loads(Path(p["open_llava_next"]).read_text())

    assert [set(r) for r in dense] == [{"image", "caption"}] * N_TRAIN
    # Same images in every caption source, relative to images/.
    assert [r["image"] for r in dense] == [r["image"] for r in sparse] == [r["image"] for r in llava]
    for r in sparse + llava:
        assert set(r) == {"id", "image", "conversations"}
        human, gpt = r["conversations"]
        assert human["from"] == "human" and human["value"].count("<image>") == 1
        assert gpt["from"] == "gpt" and gpt["value"]
    for rel in {r["image"] for r in dense}:
        assert Image.open(images / rel).size == (84, 84)   # one 28-px visual token per grid cell

    with_image = [r for r in sft if "image" in r]
    text_only = [r for r in sft if "image" not in r]
    assert {r["image"] for r in with_image} == {r["image"] for r in dense} and text_only
    assert all(len(r["conversations"]) >= 2 for r in with_image)
    # three questions a row: an image's four make a row of three turns and a row of one
    assert sum(len(r["conversations"]) >= 4 for r in with_image) == len(with_image) / 2
    assert all("<image>" not in t["value"] for r in text_only for t in r["conversations"])
    assert all(sum(t["value"].count("<image>") for t in r["conversations"]) == 1 for r in with_image)

    texts = Path(p["texts"]).read_text()
    assert dense[0]["caption"] in texts and sparse[0]["conversations"][1]["value"] in texts


def test_dense_captions_are_longer_and_more_informative(tmp_path):
    p = build_synthetic_data(tmp_path, n_train=N_TRAIN, n_bench=N_BENCH, seed=0)
    dense = [json.loads(line)["caption"] for line in Path(p["caprl_dense"]).read_text().splitlines()]
    sparse = [r["conversations"][1]["value"] for r in json.loads(Path(p["sharegpt4v_sparse"]).read_text())]
    vocab = set(COLOURS) | set(BACKGROUNDS) | set(SHAPES) | {"left", "center", "right", "top", "bottom"}

    def facts(text: str) -> int:
        return len(vocab & set(text.lower().replace(".", " ").replace(",", " ").split()))

    for d, s in zip(dense, sparse):
        assert len(d.split()) > 2 * len(s.split())
        assert facts(d) > facts(s)
    assert all(c not in " ".join(sparse) for c in COLOURS)   # sparse captions never name a colour


def test_benchmark_rows_are_closed_form_and_answerable(tmp_path):
    p = build_synthetic_data(tmp_path, n_train=N_TRAIN, n_bench=N_BENCH, seed=0)
    rows = [json.loads(line) for line in Path(p["bench_vqa"]).read_text().splitlines()]
    assert len(rows) == 2 * N_BENCH and len({r["id"] for r in rows}) == len(rows)
    train_images = {r["image"] for r in map(json.loads, Path(p["caprl_dense"]).read_text().splitlines())}
    for r in rows:
        assert set(r) == {"id", "image", "question", "answer", "choices"}
        assert Path(r["image"]).is_absolute() and Path(r["image"]).is_file()
        assert "/bench/" in r["image"] and not any(r["image"].endswith(t) for t in train_images)
        assert r["answer"] in r["choices"] and len(r["answer"].split()) == 1


def test_sft_asks_about_few_images_in_several_rounds(tmp_path):
    p = build_synthetic_data(tmp_path, n_train=N_TRAIN, n_bench=N_BENCH, seed=0, n_sft=3, sft_rounds=2)
    sft = [r for r in json.loads(Path(p["open_llava_next"]).read_text()) if "image" in r]
    assert {r["image"] for r in sft} == {"train/0001.png", "train/0002.png", "train/0003.png"}
    # each round asks every question of every SFT image once
    asked = Counter((r["image"], t["value"].replace("<image>\n", "")) for r in sft for t in r["conversations"]
                    if t["from"] == "human")
    assert set(asked.values()) == {2}


def test_a_dense_caption_states_every_answer_a_sparse_one_none():
    """The world's design: what the benchmark asks is what a dense caption says."""
    rng = random.Random(5)
    for _ in range(200):
        scene = _draw_scene(rng, render=False)
        dense, sparse = dense_caption(scene, rng).lower(), sparse_caption(scene, rng).lower()
        for question, answer, _ in questions(scene):
            word = NUMBER_WORDS[int(answer)] if answer.isdigit() else answer
            assert word in dense, (question, answer, dense)
            if answer not in SHAPES:   # a sparse caption may name one shape, nothing else
                assert answer not in sparse.replace("shapes", ""), (question, answer, sparse)


def test_the_language_chats_are_text_only_and_about_no_drawn_image(tmp_path):
    p = build_synthetic_data(tmp_path, n_train=N_TRAIN, n_bench=N_BENCH, seed=0, n_language=40)
    chats = [json.loads(line)["messages"] for line in Path(p["language"]).read_text().splitlines()]
    assert len(chats) == 40 + 8   # the imagined scenes and the text-only Q/A
    for messages in chats:
        assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
        assert not any("<image>" in m["content"] for m in messages)
    assert not any(p.name.startswith("lang") for p in Path(p["images"]).rglob("*"))


def test_the_worlds_tokenizer_gives_an_answer_word_the_token_its_captions_use(tmp_path):
    """A one-word answer ("red" after the reply's newline) is the same token as "red" inside a caption,
    so what further pretraining teaches the tiny LLM to say is what SFT asks for; Qwen's own split
    (the default) keeps the leading space on the word, as in the real tokenizer."""
    from transformers import AutoTokenizer

    from embedded.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = [dense_caption(_draw_scene(rng, render=False), rng) for _ in range(20)] + ["red", "circle"]
    world = AutoTokenizer.from_pretrained(train_tokenizer(texts, tmp_path / "world", 400, words_without_space=True))
    qwen = AutoTokenizer.from_pretrained(train_tokenizer(texts, tmp_path / "qwen", 400))
    assert world.tokenize("a red circle") == ["a", "Ġ", "red", "Ġ", "circle"]
    assert world.tokenize("assistant\nred")[-1] == "red"
    assert qwen.tokenize("a red circle") == ["a", "Ġred", "Ġcircle"]
