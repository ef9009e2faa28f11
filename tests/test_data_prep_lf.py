"""LLaMA-Factory loads and tokenizes what data_prep writes, and data_prep predicted the lengths.

Uses LLaMA-Factory's own data pipeline in-process (get_dataset, template qwen2_vl) with a tiny
Qwen2.5-VL processor built offline by embedded/. ~15 s, mostly imports.
Run: .venv/bin/python -m pytest tests/test_data_prep_lf.py -q"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from data_prep import prepare_dataset
from tests.test_data_prep import SAMPLES, build_bad_corpus, images_of, make_image, source

PIXELS = {"min_pixels": 3136, "max_pixels": 12544}  # the tiny processor's own bounds (embedded/tiny_models.py)
# small, large, tiny, very wide (LF clamps aspect ratios over 200) and tall images
SIZES = [(200, 150), (1000, 700), (20, 20), (2900, 10), (30, 600)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from embedded.tiny_models import build_tiny_vit_source, tiny_corpus
    from embedded.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tiny")
    tok = train_tokenizer(tiny_corpus(), root / "tokenizer", vocab_size=512)
    return build_tiny_vit_source(root / "vit", tok)


def lf_lengths(model: Path, dataset_dir: Path, datasets: str, cutoff_len: int, tmp: Path) -> list[int]:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    from train.recipe import LF_IMAGE_PIXELS

    args = dict(model_name_or_path=str(model), stage="sft", do_train=True, finetuning_type="full", dataset=datasets,
                dataset_dir=str(dataset_dir), template="qwen2_vl", cutoff_len=cutoff_len, output_dir=str(tmp / "o"),
                overwrite_cache=True, **LF_IMAGE_PIXELS, report_to="none", bf16=False)
    model_args, data_args, training_args, *_ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    return [len(ids) for ids in module["train_dataset"]["input_ids"]]


def test_llamafactory_loads_tokenizes_and_agrees_on_lengths(tiny_model, tmp_path, monkeypatch):
    """Every reader's output, a caption truncated to fit cutoff_len, and what survives the bad-input
    corpus, loaded together in one get_dataset call."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    root = tmp_path / "images"
    n = 0
    for sample in ("sharegpt4v_pt.json", "llava_558k.json", "open_llava_next_mix1m.json", "caprl_2m.jsonl",
                   "densefusion_1m.jsonl"):
        for rel in images_of(SAMPLES / sample):
            make_image(root / rel, SIZES[n % len(SIZES)])
            n += 1
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"image": "densefusion/00000/000000123.jpg", "caption": "A long caption. " * 400}) + "\n")
    bad, bad_root, _, n_good = build_bad_corpus(tmp_path / "bad")
    sources = [
        source("captions", "sharegpt4v", [SAMPLES / "sharegpt4v_pt.json", SAMPLES / "llava_558k.json"], root),
        source("sft", "open_llava_next", [SAMPLES / "open_llava_next_mix1m.json"], root),
        source("caprl", "caprl_jsonl", [SAMPLES / "caprl_2m.jsonl"], root),
        source("densefusion", "densefusion", [SAMPLES / "densefusion_1m.jsonl"], root),
        source("truncated", "caprl_jsonl", [long], root, over_cutoff="truncate"),
        source("bad", "caprl_jsonl", [bad], bad_root, min_kept_fraction=0.1),
    ]
    manifests, info = {}, {}
    for src in sources:  # one folder per dataset; LLaMA-Factory gets one dataset_dir listing them all
        out = tmp_path / "data" / src["name"]
        manifests[src["name"]] = prepare_dataset(src, out, dataset_name=src["name"], pixels=PIXELS, cutoff_len=512,
                                                 tokenizer_dir=tiny_model, log=lambda *a: None)
        info.update(json.loads((out / "dataset_info.json").read_text()))
    (tmp_path / "lf").mkdir()
    (tmp_path / "lf" / "dataset_info.json").write_text(json.dumps(info))
    m = manifests
    assert [m[k]["rows_kept"] for k in m] == [6, 4, 3, 2, 1, n_good] and m["truncated"]["truncated"] == 1
    lengths = lf_lengths(tiny_model, tmp_path / "lf", ",".join(m), 512, tmp_path)
    assert len(lengths) == sum(x["rows_kept"] for x in m.values())
    # exact: the visual tokens follow the processor's one resize (LF's own with the bounds training gives
    # it) and the text is counted piece by piece
    assert sum(lengths) == sum(x["total_text_tokens"] + x["total_visual_tokens"] for x in m.values())
    assert max(lengths) == max(x["max_seq_len"] for x in m.values()) <= 512
    # the per-row length histogram (what padding and packing estimates read) is LF's, row for row
    predicted = Counter()
    for x in m.values():
        predicted.update({n: c for n, c in x["seq_len_histogram"]})
    assert predicted == Counter(lengths)
    assert all(x["token_count"]["text"].startswith("tokenizer") for x in m.values())
