"""The evaluation stage: write local task files, run lmms-eval, check its results, append records."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections import deque
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Mapping

from evaluation.benchmarks import (EvaluationError, check_task_imports, is_local_copy, judge_warnings,
                                   lmms_task_name, missing_datasets, split_judge, task_entries)
from evaluation.command import build_command, eval_settings, model_args
from evaluation.local_tasks import write_thin_task

TASK_TEMPLATES = Path(__file__).parent / "lmms_tasks"
LOG_TAIL_LINES = 40
RECORD_KEYS = ("run", "backbone", "caption_source", "benchmark", "task", "metric", "value", "n", "status",
               "reason", "lmms_eval_version", "model_args", "timestamp")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.I)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_evaluation(model_dir: Path, out_dir: Path, *, benchmarks: Mapping, pixels: Mapping, eval_cfg: Mapping,
                   meta: Mapping, log=print) -> Path:
    """Evaluate `model_dir` on the set; append normalized records to out_dir/results.jsonl and return it."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = eval_settings(eval_cfg)
    entries = task_entries(benchmarks)
    runnable, skipped = split_judge(entries)
    margs = model_args(model_dir, pixels, cfg)
    for task, reason in skipped.items():
        log(f"skipping {task}: {reason}; reported as n/a")
    for warning in judge_warnings(runnable):
        log(f"warning: {warning}")

    values: dict[str, tuple[float | None, int | None, str | None]] = {}
    if runnable:
        check_task_imports(runnable)
        write_local_tasks(runnable, out_dir / "tasks")
        if cfg["offline"]:
            _check_offline_data(runnable)
        argv, env = build_command(model_dir, out_dir, benchmarks=benchmarks, pixels=pixels, eval_cfg=cfg)
        log("lmms-eval: " + " ".join(argv))
        started = time.time()
        rc, tail = _run_logged(argv, env, out_dir / "lmms_eval.log", log, cwd=out_dir)
        results_file = latest_results_file(out_dir / "lmms_eval", since=started)
        values = read_scores(results_file, runnable, rc=rc, log_file=out_dir / "lmms_eval.log", log_tail=tail)

    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    version = lmms_eval_version()
    records = []
    for e in entries:
        value, n, why = values.get(e["task"], (None, None, skipped.get(e["task"])))
        records.append(make_record(meta, e, value=value, n=n, reason=why, version=version, model_args=margs,
                                   timestamp=stamp))
    results = out_dir / "results.jsonl"
    with results.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    for r in records:
        shown = f"{r['value']:.2f}" if r["value"] is not None else f"n/a ({r['reason']})"
        log(f"{r['benchmark']:<14} {r['task']:<28} {r['metric']:<22} {shown}")
    return results


def make_record(meta: Mapping, entry: Mapping, *, value: float | None, n: int | None, reason: str | None,
                version: str, model_args: str, timestamp: str) -> dict:
    ok = value is not None
    return {"run": meta["run"], "backbone": meta["backbone"], "caption_source": meta["caption_source"],
            "benchmark": entry["benchmark"], "task": entry["task"], "metric": entry["metric"],
            "value": value, "n": n, "status": "ok" if ok else "n/a", "reason": None if ok else reason,
            "lmms_eval_version": version, "model_args": model_args, "timestamp": timestamp}


def lmms_eval_version() -> str:
    try:
        return metadata.version("lmms-eval")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------- local tasks

def write_local_tasks(entries: list[dict], tasks_dir: Path) -> None:
    """Copy each local task's template folder (evaluation/lmms_tasks/<task>/) with its data file's path filled in,
    or, for an installed lmms-eval task, write its thin local copy (evaluation/local_tasks.py)."""
    for e in entries:
        if not e.get("local_data"):
            continue
        data = Path(e["local_data"])
        if not data.is_file():
            raise EvaluationError(f"task {e['task']}: local data file {data} does not exist "
                                  "(build the embedded world first)")
        if is_local_copy(e):
            write_thin_task(e, tasks_dir)
            continue
        template = TASK_TEMPLATES / e["task"]
        if not template.is_dir():
            raise EvaluationError(f"task {e['task']}: no task template folder {template}")
        dest = tasks_dir / e["task"]
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(template, dest, ignore=shutil.ignore_patterns("__pycache__"))
        for y in dest.glob("*.yaml"):
            y.write_text(y.read_text().replace("LOCAL_DATA", json.dumps(str(data.resolve()))))


def _check_offline_data(entries: list[dict]) -> None:
    missing = missing_datasets(entries)
    if missing:
        lines = [f"  {task}: {', '.join(ids)}" for task, ids in missing.items()]
        raise EvaluationError("offline evaluation, but these tasks' datasets are not in the Hugging Face cache:\n"
                              + "\n".join(lines)
                              + "\npre-fetch them online with `python -m harness prefetch benchmarks=<set>` "
                                "(python -m harness prefetch), or set eval.offline=false")


# ---------------------------------------------------------------- subprocess

def _secrets() -> list[str]:
    return [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6]


def _run_logged(argv: list[str], env: Mapping[str, str], log_file: Path, log, *, cwd: Path) -> tuple[int, list[str]]:
    """Run argv; its output goes, secrets masked, to log_file and to `log`. Returns (exit code, last lines)."""
    secrets = _secrets()
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    # cwd = the stage folder: lmms-eval writes stray files (submissions) into its working
    # directory and its judge reads a .env from there.
    proc = subprocess.Popen(argv, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    with log_file.open("w") as f:
        for raw in proc.stdout:
            line = _ANSI.sub("", raw.decode(errors="replace").rstrip("\n"))
            for s in secrets:
                line = line.replace(s, "***")
            f.write(line + "\n")
            shown = line.split("\r")[-1]          # last state of a progress bar
            tail.append(shown)
            log(shown)
    return proc.wait(), list(tail)


# ---------------------------------------------------------------- results

def latest_results_file(output_path: Path, since: float) -> Path | None:
    """lmms-eval's <output_path>/<model>/<date>_results.json written by this run, if any."""
    # submissions/ holds the tasks' own files, some also named *_results.json (MMBench's).
    found = [p for p in output_path.glob("*/*_results.json")
             if p.parent.name != "submissions" and p.stat().st_mtime >= since - 1]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def read_scores(results_file: Path | None, entries: list[dict], *, rc: int, log_file: Path,
                log_tail: list[str]) -> dict[str, tuple[float | None, int | None, str | None]]:
    """{task: (value on the 0-100 scale or None, n, reason)}; raises unless every task has its metric."""
    tasks = [lmms_task_name(e) for e in entries]

    def fail(what: str) -> EvaluationError:
        return EvaluationError(f"{what}\nlmms-eval exit code {rc}; last lines of {log_file}:\n" + "\n".join(log_tail))

    if results_file is None:
        raise fail(f"lmms-eval wrote no results file for task(s) {', '.join(tasks)} "
                   "(the model may have failed to load)")
    data = json.loads(Path(results_file).read_text())
    results, counts = data.get("results", {}), data.get("n-samples", {})
    absent = [t for t in tasks if t not in results]
    if absent:
        raise fail(f"results file {results_file} lacks task(s) {', '.join(absent)}")
    if rc != 0:
        raise fail(f"lmms-eval failed after writing {results_file}")
    out = {}
    for e in entries:
        row = results[lmms_task_name(e)]
        key = f"{e['metric']},{e['filter']}"
        if key not in row:
            have = sorted(k for k in row if k != "alias" and "_stderr" not in k)
            raise fail(f"task {e['task']} in {results_file} has no metric {key!r} (it has {have})")
        raw = row[key]
        n = counts.get(lmms_task_name(e), {}).get("effective")
        if isinstance(raw, (int, float)):
            out[e["task"]] = (round(float(raw) * float(e["scale"]), 4), n, None)
        else:
            out[e["task"]] = (None, n, f"lmms-eval reported {raw!r} for {key}")
    return out
