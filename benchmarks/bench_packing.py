"""Tokens computed per useful token, with and without packing, in one run.

    .venv/bin/python benchmarks/bench_packing.py [--rows 200000] [--cutoff 4096] [--batch 4]

Useful tokens are the samples' own (text + visual). Unpacked, each device batch is padded to its
longest row (rounded to 8); packed (neat_packing), LLaMA-Factory's greedy knapsack fills rows of
cutoff_len, and flash attention drops the row padding (sdpa computes it). All from exact per-row
length histograms through train/efficiency.py, whose knapsack is checked equal to LLaMA-Factory's
and whose packed-row count equals LLaMA-Factory's own on the embedded data
(tests/test_efficiency.py, tests/test_train_packing.py). No GPU: this counts tokens, not seconds;
time saved follows the computed tokens only where the GPU is busy on them (see bench_gpu_train.py).

1. The embedded data: the three data_prep stages of `python -m harness run` (built under --results).
2. Synthetic sets with the length spread of real caption data (paper pixel budget, 28-px tokens):
   - BLIP-style short captions (LLaVA-558K alignment): caption ~ N(14, 5) tokens, >= 4;
   - dense captions (CapRL-2M, 1-2 KB of text a row): caption ~ lognormal, median 330 tokens, sigma 0.45;
   - a 50/50 mix of the two (what "from a short BLIP line to several hundred tokens" looks like);
   images drawn from common photo sizes (COCO 640x480 and 500x375 portrait/landscape, 800x600,
   1024x768, 1280x720, 1920x1080, 2000x1500); prompt + template ~ 40 tokens a row."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from data_prep.tokens import visual_tokens
from train.efficiency import efficiency

PIXELS = (3136, 1003520)   # the paper recipe's pixel budget (configs/hydra/config.yaml)
SIZES = [(640, 480), (480, 640), (500, 375), (375, 500), (800, 600), (1024, 768), (1280, 720), (1920, 1080),
         (2000, 1500)]
OVERHEAD = 40


def embedded_histograms(results: Path) -> dict[str, list]:
    env = {**os.environ, "CAPRL_RESULTS": str(results)}
    subprocess.run([sys.executable, "-m", "harness", "run", "until=data_prep.sft_data"], cwd=REPO, env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {}
    for manifest in sorted((results / "store" / "data_prep").glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        out[f"embedded {m['dataset']}"] = m["seq_len_histogram"]
    return out


def synthetic_histogram(kind: str, rows: int, cutoff: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    lengths = Counter()
    for _ in range(rows):
        short = kind == "blip" or (kind == "mix" and rng.random() < 0.5)
        caption = max(4, round(rng.gauss(14, 5))) if short else round(math.exp(rng.gauss(math.log(330), 0.45)))
        w, h = rng.choice(SIZES)
        lengths[min(cutoff, OVERHEAD + visual_tokens(w, h, *PIXELS) + caption)] += 1
    return sorted([n, c] for n, c in lengths.items())


def report(name: str, histogram: list, batch: int, cutoff: int) -> None:
    eff = efficiency(histogram, batch, cutoff)
    rows = sum(c for _, c in histogram)
    print(f"{name:52s} {rows:>7,} rows  {eff.useful:7.1f} useful/sample  unpacked {eff.unpacked / eff.useful:5.3f}  "
          f"packed {eff.packed / eff.useful:5.3f} (sdpa {eff.packed_padded / eff.useful:5.3f})  "
          f"{eff.samples_per_row:5.2f} samples/row  unpacked/packed {eff.unpacked / eff.packed:5.3f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--cutoff", type=int, default=4096, help="cutoff_len of the synthetic sets (paper recipe)")
    ap.add_argument("--batch", type=int, default=4, help="per-device batch, unpacked (paper recipe)")
    ap.add_argument("--results", default=str(Path(tempfile.gettempdir()) / "caprl-bench-results"))
    args = ap.parse_args()
    print("tokens computed per useful token (1.000 = no padding); flash attention unless marked sdpa")
    for name, hist in embedded_histograms(Path(args.results)).items():
        report(name + " (cutoff 512, batch 2)", hist, 2, 512)
    for kind in ("blip", "dense", "mix"):
        report(f"synthetic {kind} (cutoff {args.cutoff}, batch {args.batch})",
               synthetic_histogram(kind, args.rows, args.cutoff), args.batch, args.cutoff)


if __name__ == "__main__":
    main()
