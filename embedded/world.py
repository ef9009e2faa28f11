"""The embedded offline world: everything the default experiment needs, built locally.

    <world>/images/{train,bench}/*.png      synthetic scenes (embedded/synthetic.py)
    <world>/sources/*.json(l)               caption/SFT sources in the public formats
    <world>/bench/vqa.jsonl                 held-out VQA benchmark
    <world>/prism/*.json                    the same images as a small Prism set (embedded/prism_set.py)
    <world>/tokenizer/                      byte-level BPE trained on the world's texts
    <world>/vit_source/                     tiny Qwen2.5-VL (its ViT is what init_vlm keeps)
    <world>/llm_source/                     tiny Qwen2 LM with a different hidden size
    <world>/benchmarks/<task>.parquet       the twelve Table-1 benchmarks in their published schema
                                            (embedded/benchmarks.py; when table1_benchmarks is true)
    <world>/qwen3vl_vit_source/             tiny Qwen3-VL (DeepStack mergers)   } only with
    <world>/qwen3_llm_source/               tiny Qwen3 LM (explicit head_dim)   } qwen3vl_sources: true

Configs point into it with world://<path> (configs/hydra/world/embedded.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping


def build_world(out_dir: Path, cfg: Mapping, log=print) -> dict:
    from embedded.prism_set import build_prism_set
    from embedded.synthetic import build_synthetic_data
    from embedded.tiny_models import build_tiny_llm_source, build_tiny_vit_source
    from embedded.tokenizer import train_tokenizer

    data = build_synthetic_data(out_dir, n_train=cfg["n_train"], n_bench=cfg["n_bench"], seed=cfg["seed"],
                                n_sft=cfg.get("n_sft"), sft_rounds=cfg.get("sft_rounds", 1), bench_questions=cfg.get("bench_questions", 2),
                                n_language=cfg.get("llm_pretrain_chats", 0))
    log(f"synthetic data: {cfg['n_train']} training and {cfg['n_bench']} benchmark images")
    build_prism_set(out_dir, Path(data["bench_vqa"]))
    texts = Path(data["texts"]).read_text().splitlines()
    # a one-word answer must be the token its captions say (embedded/tokenizer.py _WORD_REGEX)
    tok = train_tokenizer(texts, out_dir / "tokenizer", vocab_size=cfg["vocab_size"], words_without_space=True)
    log(f"tokenizer trained on {len(texts)} lines (vocab {cfg['vocab_size']})")
    build_tiny_vit_source(out_dir / "vit_source", tok, text_hidden=cfg["vit_text_hidden"], seed=cfg["seed"])
    if cfg.get("vit_pretrain_steps"):
        from embedded.vit_pretrain import pretrain_vit_source

        pretrain_vit_source(out_dir / "vit_source", images=cfg["vit_pretrain_images"], steps=cfg["vit_pretrain_steps"],
                            seed=cfg["seed"] + 2, log=log)
    build_tiny_llm_source(out_dir / "llm_source", tok, hidden=cfg["llm_hidden"], layers=cfg["llm_layers"],
                          seed=cfg["seed"] + 1)
    if cfg.get("llm_pretrain_steps"):
        from embedded.lm_pretrain import pretrain_llm_source

        pretrain_llm_source(out_dir / "llm_source", Path(data["language"]), steps=cfg["llm_pretrain_steps"],
                            seed=cfg["seed"] + 1, log=log)
    log("tiny ViT source and LLM source written")
    if cfg.get("table1_benchmarks"):
        from embedded.benchmarks import build_table1_benchmarks

        files = build_table1_benchmarks(out_dir / "benchmarks")
        log(f"local copies of {len(files)} Table-1 benchmarks written")
    if cfg.get("qwen3vl_sources"):  # set by Qwen3-VL tiny backbones (configs/hydra/world_extras/)
        _build_qwen3vl_sources(out_dir, tok, cfg, log)
    return {"n_train": cfg["n_train"], "n_bench": cfg["n_bench"]}


def _build_qwen3vl_sources(out_dir: Path, tok: Path, cfg: Mapping, log) -> None:
    from embedded.tiny_models import build_tiny_qwen3_llm_source, build_tiny_qwen3vl_vit_source

    build_tiny_qwen3vl_vit_source(out_dir / "qwen3vl_vit_source", tok, text_hidden=cfg["vit_text_hidden"],
                                  seed=cfg["seed"])
    # The builder's 3 layers, not llm_layers: the text model needs a layer after the 2 DeepStack layers.
    build_tiny_qwen3_llm_source(out_dir / "qwen3_llm_source", tok, hidden=cfg["llm_hidden"], seed=cfg["seed"] + 1)
    log("tiny Qwen3-VL ViT source and Qwen3 LLM source written")
