"""The `world` stage kind: builds the embedded offline world that `world://` paths point into.
Its whole config decides its output; it reads no other stage."""

from __future__ import annotations

import contextlib
from typing import Mapping

from stagekit import StageRun, unknown_keys

KIND = "world"
VERSION = 4   # bump when the code changes what it writes: old outputs stop matching
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

    with on_cpu_quietly():
        return build_world(job.out_dir, job.config, log=job.log)


@contextlib.contextmanager
def on_cpu_quietly():
    """The world is built on CPU, in the harness's own process, so what its libraries print lands on
    the console: DeepSpeed (imported by transformers) warns at import that it found no GPU unless
    told the accelerator. Told here; the environment is restored afterwards, so no tool started
    later inherits the CPU setting. (Progress bars: harness/job.py turns them off for the process.)"""
    import os

    before = os.environ.get("DS_ACCELERATOR")
    os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DS_ACCELERATOR", None)
        else:
            os.environ["DS_ACCELERATOR"] = before
