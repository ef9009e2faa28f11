"""Golden test of the embedded ablation: the README's sweep, for real, shows the paper's effect.
Dense captions beat both vanilla (no further pretraining) and sparse captions on the 1024 held-out
SynthVQA questions, read from the report the sweep itself writes.

What is pinned is what held under every setting measured on 2026-12-04 (AMD EPYC, 2 cores,
AVX-512, torch 2.13.0+cpu), each a different summation order in the tiny model's float32 matrix
products: one thread with torch's native kernels (AVX-512 here), ATEN_CPU_CAPABILITY=avx2 and
=default, and cpu_threads=2. Each gave the same scores, and vanilla and dense the same answer to
every question (no answer sits on a near-tie any more; sparse's answers to the background and
colour questions, all wrong, were "small" instead of "circle" under =default). The bands leave
room for a CPU that differs:

    setting            vanilla  sparse   dense   dense-vanilla (b, c, p)   dense-sparse (b, c, p)
    native (AVX-512)    36.13   22.95    44.34   +8.2 (84, 0, 1e-25)      +21.4 (219, 0, 2e-66)
    ATEN avx2           36.13   22.95    44.34   (= native)
    ATEN default        36.13   22.95    44.34   (= native)
    cpu_threads=2       36.13   22.95    44.34   (= native)

By question form (native; 256 questions each): background vanilla 36.3 / sparse 0.0 / dense 69.1;
the shape's colour 16.4 / 0.0 / 16.4, kind 34.8 / 34.8 / 34.8, size 57.0 / 57.0 / 57.0 (constant
answers). The whole effect is dense reading the background (white or black) that every visual
token carries; sparse answers "circle" to the background, colour and kind questions (a word of the wrong
kind for two of them) and "small" to the size question.

The effect is not a property of every such world: world.seed=1 gave dense +1.6 over vanilla
(p = 0.22), and world.vit_pretrain_steps=400 dense = vanilla (README has the numbers).

So the test asserts: each score inside a band of the measured range plus 1.5 points (15
questions) each side; dense above both by at least 5 points; dense over each significant by the
exact McNemar test at p < 1e-4 (1e-25 and 2e-66 measured)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time

import pytest

from tests.conftest import REPO, harness_cmd, subprocess_env

pytestmark = pytest.mark.slow
SWEEP = ["run", "-m", "captions=vanilla,synthetic_sparse,synthetic_dense"]
QUESTIONS = 1024   # 256 held-out images x 4 questions
# SynthVQA exact match (%) of each job: the measured range (see above) widened by 1 point each side.
BANDS = {"vanilla": (34.6, 37.7), "synthetic_sparse": (21.4, 24.5), "synthetic_dense": (42.8, 45.9)}
MIN_MARGIN = 5.0                                        # dense above the better of the other two
MAX_P = {"Synthetic-Sparse": 1e-4, "vanilla": 1e-4}     # exact McNemar, dense against each


def comparisons(path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["caption_source"]: row for row in csv.DictReader(f)}


def scores(sweep) -> dict[str, float]:
    out = {}
    for job in BANDS:
        (record,) = [json.loads(x) for x in (sweep / f"captions={job}" / "stages" / "evaluate" / "results.jsonl")
                     .read_text().splitlines()]
        assert (record["benchmark"], record["n"], record["status"]) == ("SynthVQA", QUESTIONS, "ok")
        out[job] = record["value"]
    return out


def harness(results, *args: str) -> None:
    proc = subprocess.run(harness_cmd(*args), cwd=REPO, env=subprocess_env(results), capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, f"{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    # the full world writes its benchmark files with `datasets`: no progress bar of it on the console
    assert proc.stderr == "", proc.stderr[-3000:]


def test_dense_captions_beat_vanilla_and_sparse_significantly(tmp_path):
    results = tmp_path / "results"
    t0 = time.time()
    harness(results, *SWEEP)
    elapsed = time.time() - t0
    sweep = results / "sweeps" / "embedded"

    measured = scores(sweep)
    for job, (low, high) in BANDS.items():
        assert low <= measured[job] <= high, (job, measured)
    assert measured["synthetic_dense"] - max(measured["synthetic_sparse"], measured["vanilla"]) >= MIN_MARGIN, measured

    # against vanilla: the sweep's own report
    vs_vanilla = comparisons(sweep / "report" / "comparisons.csv")["Synthetic-Dense"]
    # against sparse: the same report with another baseline row (python -m harness report --baseline)
    harness(results, "report", str(sweep), "--baseline", "Synthetic-Sparse", "--out", str(tmp_path / "rep"))
    vs_sparse = comparisons(tmp_path / "rep" / "comparisons.csv")["Synthetic-Dense"]
    for row, against in ((vs_vanilla, "vanilla"), (vs_sparse, "Synthetic-Sparse")):
        assert row["baseline"] == against and row["test"] == "mcnemar" and row["questions"] == str(QUESTIONS)
        assert float(row["delta"]) >= MIN_MARGIN and int(row["b"]) > int(row["c"]), row
        assert float(row["p"]) < MAX_P[against], row
    assert float(vs_sparse["ci_low"]) > 0 and vs_sparse["significant"] == "true", vs_sparse
    print(f"embedded sweep: {elapsed:.0f} s, load {os.getloadavg()[0]:.1f}; "
          f"dense vs vanilla p={vs_vanilla['p']}, vs sparse p={vs_sparse['p']}")
