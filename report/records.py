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

from report.errors import ReportError

RESULTS_NAME = "results.jsonl"
KEYS = ("run", "backbone", "caption_source", "benchmark", "task", "metric", "value", "n", "status",
        "reason", "lmms_eval_version", "model_args", "timestamp")
# Optional: what distinguishes jobs of one recipe (the seed, the job's other settings as text) and
# where the per-sample log is. When a record lacks them, collect_records derives them from disk.
# A Prism record also names the scoring mode its answers were read and compared in.
OPTIONAL_KEYS = ("seed", "job", "samples", "judge", "scoring")
JUDGE_KEYS = ("name", "model", "weights", "base_url")   # who scored a judge task (null: no judge)
_LABELS = ("run", "backbone", "caption_source", "benchmark", "task", "metric")
# Run-config keys that say where or how a job ran, not what it computed: they never tell two
# jobs apart. `seed` is kept apart: jobs that differ only by it are one row, averaged.
RUN_ONLY_KEYS = ("paths", "force", "until", "cost", "launcher", "seed", "job", "tracker")




def collect_records(paths: Iterable[Path]) -> list[dict]:
    """Every record of every results.jsonl under `paths` (files or folders), validated.

    Sweep folders link shared stages from several runs, so symlinks are followed and each real
    file is read once; files are read in sorted path order so "first seen" is reproducible."""
    records: list[dict] = []
    settings: list[dict | None] = []
    for path in find_files([Path(p) for p in paths], RESULTS_NAME):
        found = read_results(path)
        config = read_job_config(path)
        for rec in found:
            settings.append(attach_job(rec, path, config))
        records.extend(found)
    name_jobs(records, settings)
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


def read_job_config(results: Path) -> dict | None:
    """The resolved run config (config.yaml) of the job whose evaluate stage wrote `results`
    (<run>/stages/evaluate/results.jsonl), or None: a results file elsewhere (a reference model's
    evaluation, shared by every job, or a copied file) has no job of its own."""
    results = Path(results)
    if results.parent.name != "evaluate" or results.parent.parent.name != "stages":
        return None
    config = results.parent.parent.parent / "config.yaml"
    if not config.is_file():
        return None
    import yaml  # only here: reading records alone needs no YAML

    try:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ReportError(f"{config}: not a readable run config ({exc})") from None
    if not isinstance(loaded, dict):
        raise ReportError(f"{config}: expected a mapping at the top, got {type(loaded).__name__}")
    return loaded


def attach_job(rec: dict, results: Path, config: dict | None) -> dict | None:
    """Fill the record's optional seed and samples from disk when it lacks them; return the
    job's settings (flattened run config without the run-only keys), or None without a config."""
    seed, own = (config.get("seed") if config else None), rec.get("seed")
    if own is not None and seed is not None and own != seed:
        raise ReportError(f"{results}: a record says seed {own}, but the job's config.yaml "
                          f"({Path(results).parent.parent.parent / 'config.yaml'}) says seed {seed}")
    rec["seed"] = own if own is not None else seed
    rec.setdefault("job", None)
    if rec.get("samples"):
        rec["samples"] = str(Path(results).parent / rec["samples"])  # relative to its results.jsonl
    elif rec.get("task"):
        from report.samples import find_samples_file

        found = find_samples_file(Path(results).parent, rec["task"])
        rec["samples"] = str(found) if found else None
    if config is None or rec["job"] is not None:
        return None
    return {k: v for k, v in flatten(config).items() if k.split(".")[0] not in RUN_ONLY_KEYS}


def flatten(node: dict, prefix: str = "") -> dict[str, str]:
    """Dotted keys -> values as text (lists and nulls as JSON), as a Hydra override writes them."""
    out: dict[str, str] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def name_jobs(records: list[dict], settings: list[dict | None]) -> None:
    """Set each config-backed record's `job` to the settings that tell its job apart from the
    other jobs of the same backbone and caption source: keys that differ between jobs, except
    those that only change with the backbone or the caption source (already columns)."""
    backed = [(rec, s) for rec, s in zip(records, settings) if s is not None]
    keys = sorted({k for _, s in backed for k in s})
    axes = [k for k in keys if _varies_within_a_row(backed, k)]
    for rec, s in backed:
        rec["job"] = ", ".join(f"{k}={s.get(k, '<absent>')}" for k in axes) or None


def _varies_within_a_row(backed: list[tuple[dict, dict]], key: str) -> bool:
    seen: dict[tuple, str] = {}
    for rec, s in backed:
        value = s.get(key, "<absent>")
        if seen.setdefault((rec["backbone"], rec["caption_source"]), value) != value:
            return True
    return False


def validate_record(obj: object) -> dict:
    """The record itself if it follows the schema, else ValueError saying what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in KEYS if k not in obj]
    extra = sorted(set(obj) - set(KEYS) - set(OPTIONAL_KEYS))
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
    _check_optional(obj, "judge", dict)
    judge = obj.get("judge")
    if judge is not None and (sorted(judge) != sorted(JUDGE_KEYS)
                              or not all(isinstance(v, str) for v in judge.values())):
        raise ValueError(f"'judge' must be null or {{{', '.join(JUDGE_KEYS)}}} as strings, got {judge!r}")
    for key, kind in (("seed", int), ("job", str), ("samples", str), ("scoring", str)):
        _check_optional(obj, key, kind)
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
    value = obj.get(key)  # an optional key may be absent: same as null
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
    """One record per job (backbone, caption source, job settings, seed) and benchmark: the newest
    timestamp wins (a re-run appends), ties go to the later record; paper records carry no
    timestamp and count as oldest. Jobs of a sweep over any setting stay apart."""
    best: dict[tuple, tuple[datetime, dict]] = {}
    for rec in records:
        key = (rec["backbone"], rec["caption_source"], rec.get("job"), rec.get("seed"), rec["benchmark"])
        stamp = parse_timestamp(rec["timestamp"]) if rec.get("timestamp") else _OLDEST
        if key not in best or stamp >= best[key][0]:
            best[key] = (stamp, rec)
    return [rec for _, rec in best.values()]
