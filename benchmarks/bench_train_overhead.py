"""Harness overhead of a training stage: the same tiny-model stage run through the harness
(`python -m harness run until=train.alignment force=[train.alignment]`) against
`llamafactory-cli train` on the very YAML the harness rendered, in the same run.

    .venv/bin/python benchmarks/bench_train_overhead.py [--repeats 3]

Prints wall seconds of each, the ratio, and whether the target (overhead <= 5%) is met. Uses its
own results folder under /tmp; the first call builds the embedded world and inputs (not timed)."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
TARGET = 0.05   # harness overhead over plain llamafactory-cli (issue 5)


def timed(argv, env) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", default=str(Path(tempfile.gettempdir()) / "caprl-bench-results"))
    args = ap.parse_args()
    env = {**os.environ, "CAPRL_RESULTS": args.results}
    harness = [sys.executable, "-m", "harness", "run", "until=train.alignment"]
    subprocess.run(harness, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)  # inputs, not timed
    stage = (Path(args.results) / "runs/embedded/tiny-synthetic_dense/stages/train.alignment").resolve()
    lf_cfg = yaml.safe_load((stage / "llamafactory.yaml").read_text())
    plain_dir = Path(tempfile.mkdtemp(prefix="lf-plain-"))
    lf_cfg["output_dir"] = str(plain_dir / "model")
    (plain_dir / "lf.yaml").write_text(yaml.safe_dump(lf_cfg))
    lf_cli = str(Path(sys.executable).parent / "llamafactory-cli")
    through_harness, plain = [], []
    for _ in range(args.repeats):
        through_harness.append(timed(harness + ["force=[train.alignment]"], env))
        shutil.rmtree(plain_dir / "model", ignore_errors=True)
        plain.append(timed([lf_cli, "train", str(plain_dir / "lf.yaml")], env))
    h, p = statistics.median(through_harness), statistics.median(plain)
    print(f"train.alignment, tiny model, {args.repeats} repeats (median wall seconds)")
    print(f"  through the harness : {h:6.2f} s   {[round(x, 2) for x in through_harness]}")
    print(f"  llamafactory-cli    : {p:6.2f} s   {[round(x, 2) for x in plain]}")
    overhead = h / p - 1
    print(f"  overhead ratio      : {h / p:6.3f}x  ({overhead:+.1%})")
    # On a shared machine the medians can swing by more than the overhead; the fastest runs are
    # the least disturbed, so their ratio is shown as a cross-check.
    print(f"  fastest-run ratio   : {min(through_harness) / min(plain):6.3f}x")
    print(f"  target overhead <= {TARGET:.0%}: {'met' if overhead <= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
