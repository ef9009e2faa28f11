"""Footnotes on what a column's number is, when that differs from its name's plain reading.

Each footnote is one entry: the columns it concerns and its text. Scoring notes are fixed (what
lmms-eval 0.7.3 computes for a benchmark, against the paper-era lmms-eval v0.4.1); other notes (a
judge's identity, say) are passed in as more entries of the same form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Footnote:
    columns: tuple[str, ...]   # benchmarks it concerns; it is printed only when one of them is in the table
    text: str


SCORING = (
    Footnote(("MathVista",), "MathVista: lmms-eval 0.7.3 scores every question with a decimal answer as wrong "
             "(round() with the data's float precision raises and is caught); this column is scored with the "
             "harness's corrected process_results (evaluation/lmms_tasks/mathvista_decimal.py), on hub and local "
             "data alike, so it differs from a plain lmms-eval 0.7.3 run of the task."),
    Footnote(("RealWorldQA",), "RealWorldQA: lmms-eval 0.7.3's scoring (its realworldqa_process_results, exact "
             "match) differs from the paper-era lmms-eval v0.4.1's; compare with the paper's number with care."),
    Footnote(("MMStar",), "MMStar: the score is lmms-eval's `average`, the unweighted mean of the sub-category "
             "(l2_category) means, not the share of questions answered right; its scoring differs from the "
             "paper-era lmms-eval v0.4.1's."),
)


def footnotes_for(benchmarks: Iterable[str], extra: Iterable[Footnote] = ()) -> list[str]:
    """The texts of the footnotes that concern a column of the table, scoring notes first."""
    shown = set(benchmarks)
    return [f.text for f in (*SCORING, *extra) if shown & set(f.columns)]
