"""One training stage of a 3B-shaped Qwen2.5-VL on a GPU node: tokens/s and MFU, packed vs
unpacked, through the harness vs raw `llamafactory-cli train` on the same YAML, in one run.

    python benchmarks/bench_gpu_train.py                      # GPU node: 3B shape, bf16, ZeRO-2
    python benchmarks/bench_gpu_train.py --tiny --no-warmup   # CPU check of the whole path (tests)

1. Sources with Qwen2.5-VL-3B's vision tower shape and Qwen2.5-3B's LLM shape, random weights,
   the embedded tokenizer (embedding rows padded to Qwen's 151,936); init_vlm.build_vlm merges
   them exactly as the init_vlm stage does (--tiny: the embedded world's tiny shapes).
2. A caption set with real-data spread: photo-sized images (640x480 .. 2000x1500, paper pixel
   budget: up to 1,280 visual tokens) and captions from a BLIP line to several hundred words;
   data_prep.prepare_dataset writes it (with its exact length histogram).
3. Per mode (unpacked: device batch --batch; packed: neat_packing, one cutoff_len row per device
   batch), the stage "further pretraining" (everything trains, 1 epoch, DeepSpeed ZeRO-2, bf16 on
   CUDA) is run through the train stage kind (train/stage.py run: the YAML it renders, its
   launch, caches and checks: what `python -m harness run` runs for the stage, without the CLI's
   start, which bench_train_overhead.py measures) and through `llamafactory-cli train` on the
   YAML it wrote. With --warmup (default) a first harness run tokenizes into the shared
   tokenized_path, so both timed runs load the same cache.

Printed per run: wall s, LLaMA-Factory's train_runtime, useful tokens/s (samples' own text +
visual tokens, padding excluded) and MFU = train/cost.py's training FLOPs of those tokens /
(train_runtime x GPUs x --peak-tflops); then packed/unpacked speed-up and harness/raw overhead.
Targets (GPU node): MFU >= 40% for the 3B shape packed; harness overhead < 3%.

The GPU node has its own Python (torch, transformers) but no LLaMA-Factory, DeepSpeed or package
registry: carry wheels (`pip download --no-deps -d wheels llamafactory==0.9.5 deepspeed==0.19.8
transformers==5.6.0 datasets==4.0.0 accelerate==1.11.0 peft==0.18.1 trl==0.24.0` plus what
`pip check` then names) and pass --wheels wheels: they are installed with --no-index first.
No figures are made up: without CUDA, MFU is printed as n/a."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QWEN_ROWS = 151936
VISION_3B = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "in_channels": 3,
             "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
             "out_hidden_size": 2048, "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu"}
TEXT_3B = {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
           "num_key_value_heads": 2, "max_position_embeddings": 32768}
PIXELS_3B = {"min_pixels": 3136, "max_pixels": 1003520}
PIXELS_TINY = {"min_pixels": 3136, "max_pixels": 12544}
SIZES_3B = [(640, 480), (480, 640), (800, 600), (1024, 768), (1280, 720), (1920, 1080), (2000, 1500)]
SIZES_TINY = [(56, 56), (84, 112), (112, 84), (112, 112)]


# ---------------------------------------------------------------- model

def build_model(work: Path, tiny: bool) -> Path:
    """The init_vlm output folder (holding model/) of the benchmark's shape."""
    out = work / "init_vlm"
    if (out / "model" / "config.json").exists():
        return out
    from embedded.tiny_models import build_tiny_pair, tiny_corpus
    from embedded.tokenizer import train_tokenizer
    from init_vlm import build_vlm

    if tiny:
        vit, llm = build_tiny_pair(work / "sources")
    else:
        tok = train_tokenizer(tiny_corpus(), work / "sources" / "tokenizer", vocab_size=1024)
        vit, llm = _source_3b(work / "sources", tok)
    build_vlm(str(vit), str(llm), out / "model", dtype=None if tiny else "bfloat16", log=lambda *a: None)
    return out


def _source_3b(root: Path, tokenizer_dir: Path) -> tuple[Path, Path]:
    import torch
    from transformers import (
        AutoTokenizer,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    from embedded.tiny_models import (
        _save_model,
        _tiny_text_config,
        _token_ids,
        build_tiny_processor,
    )

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    # the ViT source's own text part is never used (init_vlm keeps its vision tower): one small layer
    vit_text = _tiny_text_config(tok, hidden=2048, layers=1, heads=16, kv_heads=2, mrope=True, rows=len(tok))
    vit_cfg = Qwen2_5_VLConfig(vision_config=VISION_3B, text_config=vit_text, tie_word_embeddings=True,
                               **_token_ids(tok))
    _save_model(Qwen2_5_VLForConditionalGeneration, vit_cfg, root / "vit", 0, torch.bfloat16)
    tok.save_pretrained(root / "vit")
    build_tiny_processor(tok, min_pixels=PIXELS_3B["min_pixels"], max_pixels=PIXELS_3B["max_pixels"]).save_pretrained(
        root / "vit")
    llm_fields = {**_tiny_text_config(tok, hidden=2048, layers=36, heads=16, kv_heads=2, mrope=False,
                                        rows=QWEN_ROWS), **TEXT_3B}
    _save_model(Qwen2ForCausalLM, Qwen2Config(**llm_fields, tie_word_embeddings=True), root / "llm", 1,
                torch.bfloat16)
    tok.save_pretrained(root / "llm")
    return root / "vit", root / "llm"


# ---------------------------------------------------------------- data

def build_data(work: Path, model_dir: Path, rows: int, tiny: bool, cutoff: int) -> tuple[Path, dict]:
    out = work / "data"
    if (out / "manifest.json").exists():
        return out, json.loads((out / "manifest.json").read_text())
    from PIL import Image

    from data_prep import prepare_dataset

    rng = random.Random(0)
    images, lines = work / "images", []
    images.mkdir(parents=True, exist_ok=True)
    words = "a the red green small large dog house tree car sky road person left right top of with near".split()
    for i in range(rows):
        w, h = rng.choice(SIZES_TINY if tiny else SIZES_3B)
        name = f"{i:06d}.jpg"
        Image.frombytes("RGB", (w, h), rng.randbytes(w * h * 3)).save(images / name, quality=80)
        short = rng.random() < 0.3   # a BLIP line, else a dense caption (median ~300 words)
        n = max(4, round(rng.gauss(12, 4))) if short else round(math.exp(rng.gauss(math.log(300), 0.45)))
        lines.append(json.dumps({"image": name, "caption": " ".join(rng.choice(words) for _ in range(n))}))
    (work / "captions.jsonl").write_text("\n".join(lines) + "\n")
    source = {"name": "bench_captions", "label": "bench", "reader": "caprl_jsonl",
              "paths": [str(work / "captions.jsonl")], "image_root": str(images), "over_cutoff": "truncate"}
    manifest = prepare_dataset(source, out, dataset_name="bench_captions", pixels=PIXELS_TINY if tiny else PIXELS_3B,
                               cutoff_len=cutoff, tokenizer_dir=model_dir, log=lambda *a: None)
    return out, manifest


# ---------------------------------------------------------------- runs

def stage_job(work: Path, mode: str, model: Path, data: Path, args, tag: str):
    """A StageRun of the train stage kind, configured as train/stage.py `stages` would."""
    from harness.config import compose_config, to_plain
    from stagekit import StageLog, StageRun

    ds = to_plain(compose_config(["deepspeed=zero2"]))["deepspeed"]   # the node a run gets, as Hydra composes it
    packed = mode == "packed"
    cuda = _cuda_devices()
    nproc = max(cuda, 1)
    per_device = 1 if packed else args.batch
    common = {"template": "qwen2_vl", "cutoff_len": args.cutoff, "num_train_epochs": 1, "max_steps": -1,
              "lr_scheduler_type": "cosine", "warmup_ratio": 0.0, "weight_decay": 0.0,
              "per_device_train_batch_size": per_device, "bf16": cuda > 0, "gradient_checkpointing": True,
              "save_steps": 100000, "packing": packed, "extra": {"save_strategy": "no"}}
    spec = {"data": "captions", "learning_rate": 1e-5, "global_batch_size": per_device * nproc * args.accumulation,
            "trainable": "all", "freeze_vision_tower": False, "freeze_multi_modal_projector": False,
            "freeze_language_model": False}
    launcher = {"nnodes": 1, "nproc_per_node": nproc, "node_rank": 0, "master_addr": "127.0.0.1",
                "master_port": 29500 + os.getpid() % 1000}
    out = work / "runs" / f"{mode}-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    config = {"name": "further_pretrain", "stage": spec, "common": common, "deepspeed": ds,
              "world_size": {"nnodes": 1, "nproc_per_node": nproc}, "pixels": args.pixels, "seed": 0}
    settings = {"common": {"save_total_limit": 1, "logging_steps": 5, "preprocessing_num_workers": args.workers,
                           "dataloader_num_workers": 2}, "launcher": launcher, "dataset": "bench_captions",
                "tracker": {"name": "none"},
                "identity": {"experiment": "bench", "job": mode, "group": "bench", "caption_source": "bench",
                             "backbone": "tiny" if args.tiny else "3b"}}
    return StageRun(name="train.further_pretrain", out_dir=out, inputs={"model": model, "data": data}, config=config,
                    log=StageLog("bench", out / "stage.log", echo=False), settings=settings,
                    input_fingerprints={"data": f"bench-{args.rows}"}, cache_dir=work / "tokenized")


def run_harness(job) -> tuple[float, dict]:
    from train import stage as train_stage

    t0 = time.perf_counter()
    result = train_stage.run(job)
    return time.perf_counter() - t0, result


def run_raw(job, work: Path, mode: str) -> tuple[float, dict]:
    """`llamafactory-cli train` on the YAML the harness wrote, only output_dir moved."""
    import yaml

    from train.stage import render, tool_env

    lf = yaml.safe_load((job.out_dir / "llamafactory.yaml").read_text())
    out = work / "runs" / f"{mode}-raw"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    lf["output_dir"] = str(out / "model")
    (out / "llamafactory.yaml").write_text(yaml.safe_dump(lf, sort_keys=False))
    env = {**os.environ, **tool_env(render(job, tokenized_path=None).env)}
    t0 = time.perf_counter()
    with open(out / "stdout.log", "w") as log:
        subprocess.run(["llamafactory-cli", "train", str(out / "llamafactory.yaml")], env=env, check=True,
                       stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    metrics = out / "model" / "train_results.json"
    return wall, json.loads(metrics.read_text()) if metrics.exists() else {}


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ---------------------------------------------------------------- report

def useful_flops(model_dir: Path, manifest: dict) -> tuple[float, float]:
    """(useful tokens of one epoch, their training FLOPs with everything training: train/cost.py)."""
    from train.cost import Tokens, train_flops
    from train.trainable import param_groups

    groups = param_groups(model_dir)
    params = {"llm": groups["language"], "vit": groups["vision"] + groups["projector"],
              "projector": groups["projector"]}
    tokens = manifest["total_text_tokens"] + manifest["total_visual_tokens"]
    spec = {"freeze_vision_tower": False, "freeze_multi_modal_projector": False, "freeze_language_model": False}
    return tokens, train_flops(params, spec, Tokens(tokens, manifest["total_visual_tokens"], ""))


def line(name: str, wall: float, metrics: dict, tokens: float, flops: float, args) -> dict:
    runtime = float(metrics.get("train_runtime") or 0.0)
    tps = tokens / runtime if runtime else float("nan")
    gpus = _cuda_devices()
    mfu = flops / runtime / (gpus * args.peak_tflops * 1e12) if runtime and gpus else None
    print(f"  {name:18s} wall {wall:8.1f} s  train_runtime {runtime:8.1f} s  {tps:10,.0f} useful tokens/s  "
          f"MFU {'n/a (no GPU)' if mfu is None else f'{mfu:.1%}'}")
    return {"wall": wall, "runtime": runtime, "tokens_per_s": tps, "mfu": mfu}


def install_wheels(folder: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", folder,
                    "llamafactory", "deepspeed"], check=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="the embedded tiny shapes (a CPU check of the path)")
    ap.add_argument("--workdir", default="/tmp/caprl-bench-gpu")
    ap.add_argument("--rows", type=int, default=None, help="caption rows (default 2048; 48 with --tiny)")
    ap.add_argument("--cutoff", type=int, default=None, help="cutoff_len (default 4096; 512 with --tiny)")
    ap.add_argument("--batch", type=int, default=4, help="per-device batch unpacked (the paper recipe's)")
    ap.add_argument("--accumulation", type=int, default=1)
    ap.add_argument("--workers", type=int, default=8, help="LLaMA-Factory preprocessing processes")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="per GPU, dense bf16 (H100/H200: 989)")
    ap.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--modes", default="unpacked,packed")
    ap.add_argument("--wheels", default=None, help="a folder of wheels to install first (no registry)")
    args = ap.parse_args(argv)
    if args.wheels:
        install_wheels(args.wheels)
    args.rows = args.rows or (48 if args.tiny else 2048)
    args.cutoff = args.cutoff or (512 if args.tiny else 4096)
    args.pixels = PIXELS_TINY if args.tiny else PIXELS_3B
    work = Path(args.workdir) / ("tiny" if args.tiny else "3b")
    model = build_model(work, args.tiny)
    data, manifest = build_data(work, model / "model", args.rows, args.tiny, args.cutoff)
    tokens, flops = useful_flops(model / "model", manifest)
    print(f"{'tiny' if args.tiny else '3B'} shape, {manifest['rows_kept']} rows, {tokens:,.0f} useful tokens/epoch, "
          f"{flops:.3g} training FLOPs/epoch, {_cuda_devices()} GPU(s), cutoff {args.cutoff}")
    results = {}
    for mode in args.modes.split(","):
        print(f"{mode}:")
        if args.warmup:
            run_harness(stage_job(work, mode, model, data, args, "warmup"))
        job = stage_job(work, mode, model, data, args, "harness")
        h_wall, h_metrics = run_harness(job)
        r_wall, r_metrics = run_raw(job, work, mode)
        results[mode] = {"harness": line("through the harness", h_wall, h_metrics, tokens, flops, args),
                         "raw": line("llamafactory-cli", r_wall, r_metrics, tokens, flops, args)}
        print(f"  harness overhead   {h_wall / r_wall - 1:+.1%} wall")
    if {"packed", "unpacked"} <= set(results):
        up = results["packed"]["harness"]["tokens_per_s"] / results["unpacked"]["harness"]["tokens_per_s"]
        print(f"packed / unpacked useful tokens/s: {up:.2f}x")
    return results


if __name__ == "__main__":
    main()
