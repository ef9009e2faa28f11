"""Read and validate the normalized evaluation records (`results.jsonl`, one JSON object a line).

The evaluate stage writes these; the report trusts nothing it has not checked, because a score on
the wrong scale or an n/a silently read as 0 would change the paper's conclusion."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

RESULTS_NAME = "results.jsonl"
KEYS = ("run", "backbone", "caption_source", "benchmark", "task", "metric", "value", "n", "status",
        "reason", "lmms_eval_version", "model_args", "timestamp")
_LABELS = ("run", "backbone", "caption_source", "benchmark", "task", "metric")


class ReportError(Exception):
    """Bad input for the report: a malformed record, a missing path, an unreadable training log."""


def collect_records(paths: Iterable[Path]) -> list[dict]:
    """Every record of every results.jsonl under `paths` (files or folders), validated.

    Sweep folders link shared stages from several runs, so symlinks are followed and each real
    file is read once; files are read in sorted path order so "first seen" is reproducible."""
    records: list[dict] = []
    for path in find_files([Path(p) for p in paths], RESULTS_NAME):
        records.extend(read_results(path))
    return records


def find_files(roots: list[Path], name: str) -> list[Path]:
    """Files called `name` under `roots` (recursive, through symlinks), each real file once."""
    seen: set[str] = set()
    found: list[Path] = []
    for root in roots:
        if not root.exists():
            raise ReportError(f"{root}: no such file or folder")
        candidates = [root] if root.is_file() else _walk(root, name)
        for path in candidates:
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                found.append(path)
    return found


def _walk(root: Path, name: str) -> list[Path]:
    visited: set[str] = set()  # real folders already walked: a symlink loop must not hang us
    hits: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        dirs.sort()
        hits.extend(Path(folder) / f for f in sorted(files) if f == name)
    return hits


def read_results(path: Path) -> list[dict]:
    records = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(validate_record(json.loads(line)))
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            raise ReportError(f"{path}, line {lineno}: {exc}") from None
    return records


def validate_record(obj: object) -> dict:
    """The record itself if it follows the schema, else ValueError saying what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in KEYS if k not in obj]
    extra = sorted(set(obj) - set(KEYS))
    if missing or extra:
        raise ValueError(f"missing key(s) {missing}, unexpected key(s) {extra}")
    for key in _LABELS:
        if not isinstance(obj[key], str) or not obj[key]:
            raise ValueError(f"{key!r} must be a non-empty string, got {obj[key]!r}")
    _check_value(obj)
    _check_optional(obj, "n", int)
    _check_optional(obj, "reason", str)
    _check_optional(obj, "lmms_eval_version", str)
    _check_optional(obj, "model_args", (str, dict))
    parse_timestamp(obj["timestamp"])
    return obj


def _check_value(obj: dict) -> None:
    status, value = obj["status"], obj["value"]
    if status == "n/a":
        if value is not None:  # an n/a that carries a number would be averaged by someone, somewhere
            raise ValueError(f"status 'n/a' but value is {value!r} (must be null)")
        return
    if status != "ok":
        raise ValueError(f"status must be 'ok' or 'n/a', got {status!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"status 'ok' needs a finite number as value, got {value!r}")
    if not 0 <= value <= 100:  # catches a 0-1 fraction vs the paper's 0-100 scale only when > 100
        raise ValueError(f"value {value!r} is outside the paper's 0-100 scale")


def _check_optional(obj: dict, key: str, kind) -> None:
    value = obj[key]
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise ValueError(f"{key!r} has the wrong type: {value!r}")


def parse_timestamp(text: object) -> datetime:
    """ISO 8601 as an aware UTC datetime; a timestamp without offset is taken as UTC."""
    if not isinstance(text, str):
        raise ValueError(f"'timestamp' must be an ISO 8601 string, got {text!r}")
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"'timestamp' is not ISO 8601: {text!r}") from None
    return stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp.astimezone(timezone.utc)


_OLDEST = datetime.min.replace(tzinfo=timezone.utc)


def latest_records(records: Iterable[dict]) -> list[dict]:
    """One record per (backbone, caption_source, benchmark): the newest timestamp wins (a re-run
    appends), ties go to the later record; paper records carry no timestamp and count as oldest."""
    best: dict[tuple, tuple[datetime, dict]] = {}
    for rec in records:
        key = (rec["backbone"], rec["caption_source"], rec["benchmark"])
        stamp = parse_timestamp(rec["timestamp"]) if rec.get("timestamp") else _OLDEST
        if key not in best or stamp >= best[key][0]:
            best[key] = (stamp, rec)
    return [rec for _, rec in best.values()]
