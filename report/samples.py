"""lmms-eval's per-sample logs (`--log_samples`): the per-question scores behind each record.

The evaluate stage runs lmms-eval with its output in <stage>/lmms_eval/, where lmms-eval writes
<model>/<YYYYMMDD_HHMMSS>_samples_<task>.jsonl beside <date>_results.json: one JSON object a
line, with the question's doc_id, target, the model's answer, the prompt ("input") and one key
per metric of the task holding that question's score. These lines are the source of truth for
the intervals; a record whose number they do not reproduce gets no interval rather than a wrong one."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from report.errors import ReportError

# What lmms-eval's default aggregation (mean) times the task's scale may differ from the record
# value by: the record is rounded to 4 decimals (evaluation/stage.py read_scores).
_TOLERANCE = 1e-3
_SCALES = (100.0, 1.0)   # 0-1 per-question scores shown as percent, or scores already 0-100


class NotPerQuestion(Exception):
    """A metric whose per-sample value is a structure the task's own aggregation reads (a judge's
    verdict, per-category counts): there is no per-question score to resample."""


@dataclass(frozen=True)
class Scores:
    """One run's per-question scores on one benchmark, on the record's 0-100 scale."""
    path: Path
    questions: tuple[tuple, ...]   # (doc_id, target, input) per question, by doc_id
    values: np.ndarray             # scaled scores, in the order of `questions`
    binary: bool                   # every raw score is 0 or 1 (exact_match, relaxed accuracy)
    scale: float

    @property
    def n(self) -> int:
        return len(self.questions)


def find_samples_file(stage_dir: Path, task: str) -> Path | None:
    """The newest per-sample log of `task` in an evaluate stage folder. A re-evaluation appends a
    record and writes new dated files; lmms-eval's own date prefix orders them."""
    from evaluation.benchmarks import FIXED_SUFFIX, LOCAL_SUFFIX

    # A task run on local files, or with corrected scoring, runs under its thin copy's name
    # (<task>_local, <task>_fixed), which names its log.
    found = []
    for run_as in (task, task + LOCAL_SUFFIX, task + FIXED_SUFFIX):
        name = re.compile(rf"\d{{8}}_\d{{6}}_samples_{re.escape(run_as)}\.jsonl")
        found += [p for p in Path(stage_dir).glob(f"lmms_eval/*/*_samples_{run_as}.jsonl") if name.fullmatch(p.name)]
    found.sort(key=lambda p: p.name)
    return found[-1] if found else None


def read_samples(path: Path, metric: str) -> dict[int, tuple[tuple, float]]:
    """doc_id -> ((doc_id, target, input), raw score of `metric`); a bad line is an error that
    names the file, the line and the key."""
    out: dict[int, tuple[tuple, float]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ReportError(f"{path}: cannot read the per-sample log ({exc.strerror})") from None
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            doc_id, question, score = _sample(path, lineno, line, metric)
            if doc_id in out:
                raise ReportError(f"{path}, line {lineno}: doc_id {doc_id} appears twice "
                                  "(a task with several filters cannot be paired per question)")
            out[doc_id] = (question, score)
    return out


def _sample(path: Path, lineno: int, line: str, metric: str) -> tuple[int, tuple, float]:
    where = f"{path}, line {lineno}"
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise ReportError(f"{where}: not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ReportError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("doc_id", metric):
        if key not in obj:
            raise ReportError(f"{where}: no key {key!r} (keys: {', '.join(sorted(obj))})")
    doc_id, score = obj["doc_id"], obj[metric]
    if isinstance(doc_id, bool) or not isinstance(doc_id, int):
        raise ReportError(f"{where}: 'doc_id' must be an integer, got {doc_id!r}")
    if isinstance(score, (dict, list)):  # the task aggregates these itself (judge scores, categories)
        raise NotPerQuestion(f"{where}: {metric!r} is a {type(score).__name__}, not a per-question number")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ReportError(f"{where}: {metric!r} must be a finite number, got {score!r}")
    return doc_id, (doc_id, obj.get("target"), obj.get("input")), float(score)


def scores_for(record: dict, path: Path) -> Scores | str:
    """The record's per-question scores, or why there are none that can be trusted."""
    try:
        samples = read_samples(path, record["metric"])
    except NotPerQuestion as exc:
        return str(exc)
    if not samples:
        return f"{path} holds no samples"
    if record["n"] is not None and record["n"] != len(samples):
        return f"{path} has {len(samples)} questions, the record says n = {record['n']}"
    ordered = [samples[k] for k in sorted(samples)]
    raw = np.array([score for _, score in ordered])
    scale = _scale(float(raw.mean()), record["value"])
    if scale is None:
        return (f"the mean {record['metric']} of {path} ({raw.mean():.6g}) does not reproduce "
                f"the record's {record['value']}")
    binary = bool(np.isin(raw, (0.0, 1.0)).all())
    return Scores(Path(path), tuple(q for q, _ in ordered), raw * scale, binary, scale)


def _scale(mean: float, value: float) -> float | None:
    for scale in _SCALES:
        if abs(mean * scale - value) <= _TOLERANCE:
            return scale
    return None
