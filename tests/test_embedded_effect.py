"""Golden test of the embedded ablation: the README's sweep, for real, shows the paper's effect.
Dense captions beat both vanilla (no further pretraining) and sparse captions on the 1024 held-out
SynthVQA questions, read from the report the sweep itself writes.

What is pinned is what held under every setting measured on 2026-12-04 (AMD EPYC, 2 cores,
torch 2.13.0+cpu), each a different summation order in the tiny model's float32 matrix products:
one thread with torch's native kernels (AVX-512 here), ATEN_CPU_CAPABILITY=avx2 and =default,
cpu_threads=2 and 4; and the scores two other x86 machines got. The greedy answers that sit on a
near-tie flip with the rounding, so the exact scores are not portable:

    setting            vanilla  sparse   dense   dense-vanilla (b, c, p)   dense-sparse (b, c, p)
    native (AVX-512)    34.86   34.38    36.72   +1.9 (45, 26, 0.032)     +2.3 (36, 12, 7e-4)
    ATEN avx2           35.25   34.38    37.21   +2.0 (48, 28, 0.029)     +2.8 (40, 11, 6e-5)
    ATEN default        34.57   34.38    37.70   +3.1 (55, 23, 4e-4)      +3.3 (40, 6, 3e-7)
    cpu_threads=2       34.86   34.38    36.72   (= native)
    another machine     34.47   34.38    37.21   +2.7 (55, 27, 0.003)     +2.8 (37, 8, <1e-3)
    another, 2 threads  34.9    34.4     36.7    +1.9 (p = 0.053)         +2.3 (p < 1e-3)
    a user's EPYC       34.38   34.38    36.91
    native, after evaluation moved to lmms-eval's plain model class (--force_simple):
                        34.38   34.38    37.11   +2.7 (51, 23, 0.002)     +2.7 (36, 8, 3e-5)

So the test asserts: each score inside a band of the measured range plus 1 point (about 10
questions) each side; dense above both by at least 1 point; dense over sparse significant by the
exact McNemar test (p < 0.01; at most 7e-4 measured); dense over vanilla in the same direction at
p < 0.1 only (0.053 was measured: the effect over vanilla is small, and the README says so)."""

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
BANDS = {"vanilla": (33.4, 36.3), "synthetic_sparse": (33.4, 35.4), "synthetic_dense": (35.7, 38.7)}
MIN_MARGIN = 1.0                                        # dense above the better of the other two
MAX_P = {"Synthetic-Sparse": 0.01, "vanilla": 0.1}      # exact McNemar, dense against each


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
