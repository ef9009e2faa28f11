"""Golden test of the embedded ablation (issue 13): the README's sweep, for real, shows the paper's
effect with statistical force. Dense captions beat both vanilla (no further pretraining) and
sparse captions on the 512 held-out SynthVQA questions, each by a paired exact McNemar test at
p < 0.01, read from the report the sweep itself writes. The world, the training and greedy
evaluation are seeded and run the same on CPU every time, so the scores are pinned exactly: a change
that silently breaks learning, evaluation or the world's design moves them."""

from __future__ import annotations

import csv
import time

import pytest

from tests.conftest import run_harness

pytestmark = pytest.mark.slow
SWEEP = ["run", "-m", "captions=vanilla,synthetic_sparse,synthetic_dense"]
# SynthVQA exact match (%) of each job, 512 questions; measured twice, identical.
PINNED = {"vanilla": None, "Synthetic-Sparse": None, "Synthetic-Dense": None}


def comparisons(path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["caption_source"]: row for row in csv.DictReader(f)}


def scores(path) -> dict[str, float]:
    with open(path, newline="") as f:
        return {row["caption_source"]: float(row["SynthVQA"]) for row in csv.DictReader(f)}


def test_dense_captions_beat_vanilla_and_sparse_significantly(shared_results, tmp_path):
    t0 = time.time()
    run_harness(shared_results, *SWEEP, timeout=1800)
    elapsed = time.time() - t0
    sweep = shared_results / "sweeps" / "embedded"

    table = scores(sweep / "report" / "table.csv")
    assert table == PINNED, table
    assert table["Synthetic-Dense"] > table["Synthetic-Sparse"] and table["Synthetic-Dense"] > table["vanilla"]

    # against vanilla: the sweep's own report
    vs_vanilla = comparisons(sweep / "report" / "comparisons.csv")["Synthetic-Dense"]
    # against sparse: the same report with another baseline row (python -m harness report --baseline)
    run_harness(shared_results, "report", str(sweep), "--baseline", "Synthetic-Sparse", "--out", str(tmp_path))
    vs_sparse = comparisons(tmp_path / "comparisons.csv")["Synthetic-Dense"]
    for row, against in ((vs_vanilla, "vanilla"), (vs_sparse, "Synthetic-Sparse")):
        assert row["baseline"] == against and row["test"] == "mcnemar" and row["questions"] == "512"
        assert float(row["delta"]) > 0 and float(row["ci_low"]) > 0, row
        assert float(row["p"]) < 0.01 and row["significant"] == "true", row
    print(f"embedded sweep: {elapsed:.0f} s; dense vs vanilla p={vs_vanilla['p']}, vs sparse p={vs_sparse['p']}")
