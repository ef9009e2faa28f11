"""Sharded pretokenization (train/pretokenize.py) against LLaMA-Factory's own single-process
preprocessing of the same rows, with photo-sized images, in one run.

    .venv/bin/python benchmarks/bench_pretokenize.py [--rows 400] [--parts 2] [--size 2000x1500]

Both sides do the whole job after LLaMA-Factory is imported (imports are not timed, in either):
- LLaMA-Factory: get_dataset with tokenized_path in this process (load, align, tokenize, run the
  Qwen2-VL image processor on every image, save), preprocessing_num_workers unset;
- sharded: tokenize(parts=N): load and align once, N forked processes each preprocess a contiguous
  part with LLaMA-Factory's own preprocessing, join, save. parts=1 is printed too: the cost of the
  sharding machinery itself.
The source JSON is converted to Arrow, and the fork server started (it imports LLaMA-Factory once
for the life of the calling process, like the import on the single-process side), before timing. The tokenizer
is the embedded one, the image processor Qwen2-VL's with the paper's pixel budget (min 3,136, max
1,003,520): the image processor is where the time goes (~40 ms a 2000x1500 JPEG).
Target on this 2-core machine: >= 1.8x with 2 parts. The work per row is independent, so on a GPU
node the rate grows with processes up to the cores that are free (minus the serial load and join:
~2% of the single-process time here), and over nodes (tokenize=nodes) or a SLURM array of CPU
tasks (tokenize=slurm), each part in a process of its own."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PIXELS = {"min_pixels": 3136, "max_pixels": 1003520}


def build_inputs(work: Path, rows: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """(a model folder: tiny init_vlm output with a paper-budget processor, a data_prep folder)."""
    from PIL import Image, ImageDraw

    from data_prep import prepare_dataset
    from embedded.tiny_models import build_tiny_pair, build_tiny_processor
    from init_vlm import build_vlm

    model = work / "model"
    if not (model / "config.json").exists():
        vit, llm = build_tiny_pair(work / "sources")
        build_vlm(str(vit), str(llm), model, log=lambda *a: None)
        from transformers import AutoTokenizer

        build_tiny_processor(AutoTokenizer.from_pretrained(model), **PIXELS).save_pretrained(model)
    data = work / "data"
    if not (data / "manifest.json").exists():
        rng = random.Random(0)
        images = work / "images"
        images.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(rows):
            img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
            draw = ImageDraw.Draw(img)
            for _ in range(12):   # a few shapes: compresses like a photo, not like noise
                x, y = rng.randrange(size[0]), rng.randrange(size[1])
                draw.rectangle([x, y, x + rng.randrange(50, 800), y + rng.randrange(50, 600)],
                               fill=tuple(rng.randrange(256) for _ in range(3)))
            img.save(images / f"{i:05d}.jpg", quality=90)
            lines.append(json.dumps({"image": f"{i:05d}.jpg", "caption": "a picture of shapes " * rng.randint(5, 60)}))
        (work / "captions.jsonl").write_text("\n".join(lines) + "\n")
        source = {"name": "bench", "label": "bench", "reader": "caprl_jsonl", "paths": [str(work / "captions.jsonl")],
                  "image_root": str(images)}
        prepare_dataset(source, data, dataset_name="bench", pixels=PIXELS, cutoff_len=4096, tokenizer_dir=model,
                        log=lambda *a: None)
    return model, data


def lf_single(args: dict, out: Path) -> tuple[float, float]:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    shutil.rmtree(out, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    model_args, data_args, training_args, *_ = get_train_args({**args, "tokenized_path": str(out)})
    tok = load_tokenizer(model_args)
    get_dataset(get_template_and_fix_tokenizer(tok["tokenizer"], data_args), model_args, data_args, training_args,
                stage="sft", **tok)
    return time.perf_counter() - t0, time.process_time() - c0


def sharded(args: dict, out: Path, parts: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the parts' processes and of this one: the join)."""
    from train.pretokenize import shards_dir, tokenize

    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(shards_dir(out), ignore_errors=True)   # parts an interrupted run left would be kept, not timed
    t0, c0 = time.perf_counter(), time.process_time()
    summary = tokenize(args, out, parts)
    return time.perf_counter() - t0, summary["cpu_s"] + time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--parts", type=int, default=2)
    ap.add_argument("--size", default="2000x1500")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "caprl-bench-pretokenize"))
    a = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    w, h = (int(x) for x in a.size.split("x"))
    work = Path(a.workdir) / f"{a.rows}-{a.size}"
    model, data = build_inputs(work, a.rows, (w, h))
    from train.pretokenize import _lf, tokenize_args

    args = tokenize_args({"model_name_or_path": str(model), "template": "qwen2_vl", "cutoff_len": 4096,
                          "dataset_dir": str(data), "dataset": "bench", "media_dir": str(data),
                          "image_max_pixels": PIXELS["max_pixels"], "image_min_pixels": PIXELS["min_pixels"]},
                         work / "lf")
    _lf(args)   # JSON -> Arrow once, and every import, before anything is timed
    sharded(args, work / "out-warm", a.parts)   # starts the fork server (imports LLaMA-Factory once per process)
    single = lf_single(args, work / "out-lf")   # (wall s, CPU s)
    one = sharded(args, work / "out-1", 1)
    many = sharded(args, work / "out-n", a.parts)
    print(f"{a.rows} rows, {a.size} JPEGs, {os.cpu_count()} CPUs (1-min load average {os.getloadavg()[0]:.1f} "
          "at the end: other processes on the machine take their share)")
    (s_wall, s_cpu), (o_wall, o_cpu), (m_wall, m_cpu) = single, one, many
    print(f"  LLaMA-Factory single process : {s_wall:7.2f} s  {a.rows / s_wall:7.1f} rows/s  "
          f"{1000 * s_cpu / a.rows:6.1f} CPU-ms/row ({s_cpu / s_wall:.2f} cores busy)")
    print(f"  sharded, 1 part              : {o_wall:7.2f} s  {a.rows / o_wall:7.1f} rows/s  "
          f"{1000 * o_cpu / a.rows:6.1f} CPU-ms/row  ({s_wall / o_wall:.2f}x)")
    print(f"  sharded, {a.parts} parts              : {m_wall:7.2f} s  {a.rows / m_wall:7.1f} rows/s  "
          f"{1000 * m_cpu / a.rows:6.1f} CPU-ms/row  ({s_wall / m_wall:.2f}x; target >= 1.8x with 2 parts)")
    print("  CPU-ms/row is the work; wall time also waits for cores other processes hold")


if __name__ == "__main__":
    main()
