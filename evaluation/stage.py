"""The evaluation stage: write local task files, run lmms-eval, check its results, append records."""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Mapping

from evaluation.benchmarks import (EvaluationError, check_task_imports, is_local_copy, judge_warnings,
                                   lmms_task_name, missing_datasets, split_judge, task_entries)
from evaluation.command import build_command, eval_settings, model_args
from evaluation.local_tasks import write_thin_task
from stagekit import StageRun, run_identity, run_label, run_logged, unknown_keys

TASK_TEMPLATES = Path(__file__).parent / "lmms_tasks"
RECORD_KEYS = ("run", "backbone", "caption_source", "benchmark", "task", "metric", "value", "n", "status",
               "reason", "lmms_eval_version", "model_args", "timestamp")


def run_evaluation(model_dir: Path, out_dir: Path, *, benchmarks: Mapping, pixels: Mapping, eval_cfg: Mapping,
                   meta: Mapping, log=print, echo: bool = True, system_prompt: str | None = None) -> Path:
    """Evaluate `model_dir` on the set; append normalized records to out_dir/results.jsonl and return it."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = eval_settings(eval_cfg)
    entries = task_entries(benchmarks)
    runnable, skipped = split_judge(entries, probe=True)
    margs = model_args(model_dir, pixels, cfg, system_prompt)
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
        # only the tasks that run: a judge task skipped above (its judge does not answer) is n/a
        running = {e["task"] for e in runnable}
        to_run = {**benchmarks, "tasks": [t for t in benchmarks["tasks"] if t["task"] in running]}
        argv, env = build_command(model_dir, out_dir, benchmarks=to_run, pixels=pixels, eval_cfg=cfg,
                                  system_prompt=system_prompt)
        log("lmms-eval: " + " ".join(argv))
        started = time.time()
        # cwd = the stage folder: lmms-eval writes stray files (submissions) into its working
        # directory and its judge reads a .env from there. It exits 0 even when the model fails
        # to load, so the exit code is read together with its results file below.
        done = run_logged(argv, env=env, log_path=out_dir / "lmms_eval.log", cwd=out_dir, echo=echo, check=False)
        rc, tail = done.returncode, done.tail
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
            "lmms_eval_version": version, "model_args": model_args, "timestamp": timestamp,
            **({"seed": meta["seed"]} if meta.get("seed") is not None else {})}


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


# ---------------------------------------------------------------- the `evaluate` stage kind

KIND = "evaluate"
VERSION = 1


def _settings(cfg: Mapping) -> dict:
    # The reference model is its own stage; naming one must not change the trained model's fingerprint.
    return {k: v for k, v in cfg["eval"].items() if k != "reference_model"}


def stages(cfg: Mapping, upstream: list[dict]) -> list[dict]:
    """The trained model's evaluation (it reads the last training stage, or the fresh model when
    the chain has none), and the stock reference model's when one is named: a calibration row
    that does not depend on the caption source, so one evaluation serves a whole sweep."""
    trained = [s["name"] for s in upstream if s["kind"] in ("train", "init_vlm")][-1]
    names = ", ".join(t["benchmark"] for t in cfg["benchmarks"]["tasks"])
    common = {"benchmarks": dict(cfg["benchmarks"]), "eval": _settings(cfg), "pixels": dict(cfg["pixels"]),
              # the backbone's, as its training template renders it (configs/hydra/backbone/*.yaml)
              "system_prompt": cfg["backbone"].get("system_prompt")}
    settings = {"tracker": dict(cfg.get("tracker") or {"name": "none"}), "identity": run_identity(cfg)}
    out = [{"name": "evaluate", "inputs": {"model": trained}, "summary": f"lmms-eval: {names}", "settings": settings,
            "config": {**common, "meta": {"run": run_label(cfg), "backbone": cfg["backbone"]["label"],
                                          "caption_source": cfg["captions"]["label"], "seed": cfg["seed"]}}}]
    ref = cfg["eval"].get("reference_model")
    if ref:
        out.append({"name": "evaluate.reference", "summary": f"lmms-eval on the stock model {ref}",
                    "config": {"model": ref, **common,
                               "meta": {"run": f"reference/{ref}", "backbone": cfg["backbone"]["label"],
                                        "caption_source": f"reference: {ref}"}}})
    return out


def problems(cfg: Mapping) -> list[str]:
    from evaluation.benchmarks import task_entries
    from evaluation.command import EVAL_DEFAULTS, EvaluationError

    out = unknown_keys("eval", cfg["eval"], (*EVAL_DEFAULTS, "reference_model"))
    try:
        eval_settings(_settings(cfg))
        task_entries(cfg["benchmarks"], resolved=False)
    except EvaluationError as exc:
        out.append(str(exc))
    return out


def run(job: StageRun) -> dict:
    c = job.config
    # A trained model comes from the upstream stage; a reference model is named in the config.
    model = c["model"] if "model" in c else job.inputs["model"] / "model"
    results = run_evaluation(model, job.out_dir, benchmarks=c["benchmarks"], pixels=c["pixels"], eval_cfg=c["eval"],
                             meta=c["meta"], log=job.log, echo=job.log.echo, system_prompt=c.get("system_prompt"))
    records = [json.loads(line) for line in Path(results).read_text().splitlines() if line.strip()]
    scores = {r["benchmark"]: r["value"] for r in records}
    if job.settings.get("tracker") and "model" not in c:   # the trained model's run, not the reference
        import tracking

        tracking.log_scores(job.settings["tracker"], job.settings["identity"], scores, log=job.log)
    return {"scores": scores}


_TQDM = re.compile(r"(\d+)/(\d+) \[")


def progress(out_dir: Path, config: Mapping) -> dict | None:
    """Questions answered so far, from the progress bar lmms-eval writes to its log."""
    try:
        tail = (Path(out_dir) / "lmms_eval.log").read_text(errors="replace")[-4000:]
    except FileNotFoundError:
        return None
    found = _TQDM.findall(tail.replace("\r", "\n"))
    if not found:
        return None
    done, total = map(int, found[-1])
    return {"step": done, "total": total, "text": f"{done}/{total} requests answered"}
