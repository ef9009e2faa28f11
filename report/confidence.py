"""Intervals on the table's cells and paired tests between rows, from lmms-eval's per-sample logs.

A row's per-question score is the mean over its seeds, so a row of several seeds is judged on
all their answers while the question stays the sampling unit. Two rows are compared only on
the very same questions (doc_id, target and prompt alike); otherwise a note says why not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from report.samples import Scores, scores_for
from report.stats import (
    ALPHA,
    LEVEL,
    RESAMPLES,
    SEED,
    bootstrap_mean_interval,
    discordant_counts,
    holm_adjust,
    mcnemar_exact_p,
    mean_of_means_interval,
    paired_bootstrap_interval,
    sign_flip_p,
    wilson_interval,
)

if TYPE_CHECKING:   # annotations only: report/table.py calls add_statistics, so no import back at run time
    from report.table import Row, Table

WILSON = "wilson"
BOOTSTRAP = "bootstrap"
MCNEMAR = "mcnemar"
SIGN_FLIP = "sign-flip"


@dataclass
class Comparison:
    """A row minus its baseline on one benchmark, over the questions both answered."""
    benchmark: str
    delta: float
    interval: tuple[float, float]
    p: float
    test: str                      # MCNEMAR or SIGN_FLIP
    n: int                         # questions
    discordant: tuple[int, int] | None = None  # McNemar's (b, c)
    p_holm: float | None = None
    significant: bool = False


@dataclass(frozen=True)
class RowScores:
    """A row's per-question scores on one benchmark: the mean over its seeds."""
    questions: tuple[tuple, ...]
    values: np.ndarray
    single_binary: bool            # one run with 0/1 scores: Wilson and McNemar apply
    scale: float


def add_statistics(table: Table, pairs: list[tuple[Row, Row]]) -> None:
    """Intervals on every cell with per-sample logs, and each row's comparisons with its baseline,
    Holm-corrected across the row's benchmarks; why a cell or a pair has none goes in the notes."""
    cache: dict[tuple[str, str], Scores | str] = {}  # (log, metric): a log is read once per metric
    scores: dict[tuple[int, str], RowScores] = {}
    unlogged: list[str] = []
    problems: list[str] = []
    for row in table.rows:
        for bench in table.benchmarks:
            found = _row_scores(row, bench, cache)
            where = f"{row.backbone} / {row.name} / {bench}"
            if isinstance(found, RowScores):
                scores[(id(row), bench)] = found
                row.intervals[bench] = _interval(found, table)
            elif found == NO_LOG:
                unlogged.append(f"{where}: no interval, {NO_LOG}")
            elif found is not None:
                problems.append(f"{where}: no interval, {found}")
    if scores or problems:
        table.notes += problems + unlogged
    elif unlogged:  # one line, not one per cell, for records from before per-sample logs
        table.notes.append("No intervals: no per-sample logs (lmms-eval --log_samples) were found "
                           "beside the results.jsonl files.")
    for row, ref in pairs:
        _compare(row, ref, table, scores)


NO_LOG = "no per-sample log (lmms-eval --log_samples) beside its results.jsonl"


def _row_scores(row: Row, bench: str, cache: dict[tuple[str, str], Scores | str]) -> RowScores | str | None:
    """None: nothing to show (never run, n/a, or a paper number); else the scores or why not."""
    recs = row.runs.get(bench, [])
    if row.cells.get(bench) is None or all(rec["metric"] == "paper" for rec in recs):
        return None
    if not all(rec.get("samples") for rec in recs):
        return NO_LOG
    runs = []
    for rec in recs:
        path, key = rec["samples"], (rec["samples"], rec["metric"])
        if key not in cache:
            cache[key] = scores_for(rec, Path(path)) if Path(path).is_file() else f"{path} does not exist"
        if isinstance(cache[key], str):
            return cache[key]
        runs.append(cache[key])
    if any(r.questions != runs[0].questions for r in runs):
        return "its seeds were scored on different questions"
    values = np.mean([r.values for r in runs], axis=0)
    return RowScores(runs[0].questions, values, len(runs) == 1 and runs[0].binary, runs[0].scale)


def _interval(scores: RowScores, table: Table) -> tuple[float, float]:
    if scores.single_binary:
        table.methods.add(WILSON)
        successes = round(float(scores.values.sum()) / scores.scale)
        lo, hi = wilson_interval(successes, len(scores.values))
        return lo * scores.scale, hi * scores.scale
    table.methods.add(BOOTSTRAP)
    return bootstrap_mean_interval(scores.values)


def _compare(row: Row, ref: Row, table: Table, scores: dict[tuple[int, str], RowScores]) -> None:
    diffs = []
    for bench in table.benchmarks:
        mine, theirs = scores.get((id(row), bench)), scores.get((id(ref), bench))
        if mine is None or theirs is None:
            continue
        if mine.questions != theirs.questions:
            table.notes.append(f"{row.backbone} / {row.name} / {bench}: no paired test, it and "
                               f"{ref.name} were scored on different questions")
            continue
        row.comparisons[bench] = compare(bench, mine, theirs)
        table.methods.add(row.comparisons[bench].test)
        diffs.append(mine.values - theirs.values)
    _correct(list(row.comparisons.values()))
    # Δ Avg gets an interval only when it is a plain mean of the per-benchmark paired differences
    if row.delta_avg is not None and not row.delta_partial and diffs and \
            len(diffs) == sum(1 for b in table.benchmarks if b in row.deltas):
        row.delta_interval = mean_of_means_interval(diffs)


def compare(bench: str, mine: RowScores, theirs: RowScores) -> Comparison:
    """Difference, paired-bootstrap interval and p-value: exact McNemar when both rows are a
    single run scored 0/1, else the sign-flip permutation test on the per-question differences."""
    diff = mine.values - theirs.values
    interval = paired_bootstrap_interval(mine.values, theirs.values)
    if mine.single_binary and theirs.single_binary:
        b, c = discordant_counts(mine.values / mine.scale, theirs.values / theirs.scale)
        return Comparison(bench, float(diff.mean()), interval, mcnemar_exact_p(b, c), MCNEMAR, diff.size, (b, c))
    return Comparison(bench, float(diff.mean()), interval, sign_flip_p(diff), SIGN_FLIP, diff.size)


def _correct(comparisons: list[Comparison]) -> None:
    """Holm-Bonferroni across one row's benchmarks: the family a reader scans for a winner."""
    for comp, adjusted in zip(comparisons, holm_adjust([c.p for c in comparisons])):
        comp.p_holm = adjusted
        comp.significant = adjusted < ALPHA


def method_notes(methods: set[str]) -> list[str]:
    """The legend lines for the methods a table used, in the project's words."""
    level = f"{LEVEL:.0%}"
    text = {
        WILSON: f"[lo, hi]: {level} interval; Wilson score interval for a single run scored 0/1 per question.",
        BOOTSTRAP: (f"[lo, hi]: {level} interval; percentile bootstrap over questions ({RESAMPLES:,} resamples, "
                    f"seed {SEED}) for non-0/1 scores and for rows averaging several seeds (each question's "
                    "score is its mean over the seeds)."),
        MCNEMAR: "p: exact two-sided McNemar test (binomial on the discordant questions b, c) for single runs scored 0/1.",
        SIGN_FLIP: (f"p: two-sided paired sign-flip permutation test on per-question differences "
                    f"({RESAMPLES:,} resamples, seed {SEED}) for non-0/1 scores and rows averaging several seeds."),
    }
    return [text[m] for m in (WILSON, BOOTSTRAP, MCNEMAR, SIGN_FLIP) if m in methods]
