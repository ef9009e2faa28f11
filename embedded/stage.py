"""The `world` stage kind: builds the embedded offline world that `world://` paths point into.
Its whole config decides its output; it reads no other stage."""

from __future__ import annotations

from typing import Mapping

from stagekit import StageRun, unknown_keys

KIND = "world"
VERSION = 3   # bump when the code changes what it writes: old outputs stop matching
PIPELINES = ("pretrain", "prism")
KEYS = ("enabled", "n_train", "n_sft", "sft_rounds", "n_bench", "bench_questions", "seed", "vocab_size", "vit_text_hidden",
        "llm_hidden", "llm_layers", "llm_pretrain_chats", "llm_pretrain_steps",
        "vit_pretrain_images", "vit_pretrain_steps", "table1_benchmarks", "qwen3vl_sources")


def stages(cfg: Mapping, upstream: list[dict]) -> list[dict]:
    if not cfg["world"]["enabled"]:
        return []
    return [{"name": "world", "config": dict(cfg["world"]), "summary": "build the embedded offline world"}]


def problems(cfg: Mapping) -> list[str]:
    world = cfg["world"]
    # A disabled world builds nothing, so what a backbone asks of it (qwen3vl_sources) is moot.
    return unknown_keys("world", world, KEYS) if world.get("enabled") else []


def run(job: StageRun) -> dict:
    from embedded.world import build_world

    return build_world(job.out_dir, job.config, log=job.log)
