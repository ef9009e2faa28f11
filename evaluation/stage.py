"""The evaluation stage: write local task files, run lmms-eval, check its results, append records."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Mapping

from evaluation import judge as judge_mod
from evaluation.benchmarks import (EvaluationError, check_task_imports, is_fixed_copy, is_local_copy, judge_answers,
                                   judge_key_status, judge_warnings,
                                   lmms_task_name, missing_datasets, split_judge, task_entries)
from evaluation.command import EVAL_DEFAULTS, build_command, eval_settings, model_args
from evaluation.local_tasks import write_fixed_task, write_thin_task
from stagekit import StageRun, Stopped, run_identity, run_label, run_logged, unknown_keys

TASK_TEMPLATES = Path(__file__).parent / "lmms_tasks"
RECORD_KEYS = ("run", "backbone", "caption_source", "benchmark", "task", "metric", "value", "n", "status",
               "reason", "lmms_eval_version", "model_args", "timestamp", "judge", "samples")


def run_evaluation(model_dir: Path, out_dir: Path, *, benchmarks: Mapping, pixels: Mapping, eval_cfg: Mapping,
                   meta: Mapping, log=print, echo: bool = True, judge: Mapping | None = None,
                   system_prompt: str | None = None) -> Path:
    """Evaluate `model_dir` on the set; write normalized records to out_dir/results.jsonl and return it.

    Each task runs in an lmms-eval process of its own, into out_dir/by_task/<task>/, and leaves a
    score.json there when it has a score: a task that raises costs only its own score, and a re-run
    (the stage is resumable) redoes only the tasks without one, or whose judge or model changed.
    With a `judge` config, the judge tasks get its environment (evaluation/judge.py); without one
    the environment's judge variables are used as before."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = eval_settings(eval_cfg)
    entries = task_entries(benchmarks)
    margs = model_args(model_dir, pixels, cfg, system_prompt)
    who = judge_mod.identity(judge)
    if who is not None:
        ok, why = judge_mod.answers(judge)
        runnable = entries if ok else [e for e in entries if not e["judge"]]
        skipped = {} if ok else {e["task"]: f"{why}; {judge_mod.how_to_start(judge)}" for e in entries if e["judge"]}
    else:
        runnable, skipped = split_judge(entries, probe=True)
        for warning in judge_warnings(runnable):
            log(f"warning: {warning}")
    for task, reason in skipped.items():
        log(f"skipping {task}: {reason}; reported as n/a")

    values: dict[str, tuple[float | None, int | None, str | None, str | None]] = {}
    failed: dict[str, str] = {}
    if runnable:
        check_task_imports(runnable)
        # every local task's file is checked before the first task runs (bad data fails up front)
        write_local_tasks(runnable, out_dir / "tasks")
        if cfg["offline"]:
            _check_offline_data(runnable)
        for e in runnable:
            judged = who if (who is not None and e["judge"]) else None
            try:
                values[e["task"]] = run_task(e, model_dir, out_dir / "by_task" / e["task"], benchmarks=benchmarks,
                                             pixels=pixels, cfg=cfg, margs=margs, system_prompt=system_prompt, judge=judge if judged else None,
                                             log=log, echo=echo)
            except EvaluationError as exc:
                failed[e["task"]] = str(exc)
                values[e["task"]] = (None, None, "lmms-eval failed on this task: " + str(exc).splitlines()[0], None)

    if failed and len(failed) == len(runnable):   # nothing scored (e.g. the model does not load): no records
        raise_failed(failed)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    version = lmms_eval_version()
    records = []
    for e in entries:
        value, n, why, samples = values.get(e["task"], (None, None, skipped.get(e["task"]), None))
        records.append(make_record(meta, e, value=value, n=n, reason=why, version=version, model_args=margs,
                                   timestamp=stamp, judge=who if e["judge"] else None, samples=samples))
    results = out_dir / "results.jsonl"
    # Rewritten whole: a re-run of a resumed stage gives one record per benchmark, not two.
    tmp = results.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(results)
    for r in records:
        shown = f"{r['value']:.2f}" if r["value"] is not None else f"n/a ({r['reason']})"
        log(f"{r['benchmark']:<14} {r['task']:<28} {r['metric']:<22} {shown}")
    if failed:
        raise_failed(failed)
    return results


def raise_failed(failed: Mapping[str, str]):
    raise EvaluationError("lmms-eval failed on task(s) " + ", ".join(failed)
                          + " (the other tasks' scores are kept in by_task/; a re-run redoes only these):\n"
                          + "\n\n".join(f"{t}: {why}" for t, why in failed.items()))


def task_key(entry: Mapping, margs: str, judge: Mapping | None) -> str:
    """What decides one task's score: the task, the model, and for a judge task its judge."""
    return json.dumps({"entry": dict(entry), "model_args": margs, "judge": judge_mod.identity(judge),
                           "lmms_eval": lmms_eval_version()}, sort_keys=True)


def run_task(entry: Mapping, model_dir: Path, task_dir: Path, *, benchmarks: Mapping, pixels: Mapping, cfg: Mapping,
             margs: str, judge: Mapping | None, log,
             echo: bool, system_prompt: str | None = None) -> tuple[float | None, int | None, str | None, str | None]:
    """One task in its own lmms-eval process: (value, n, reason, per-sample log relative to the stage
    folder); reuses task_dir/score.json when its key still matches."""
    marker = task_dir / "score.json"
    key = task_key(entry, margs, judge)
    # The stage's folders sit side by side in the store (<store>/evaluate/<fingerprint>/): a task
    # whose key matches one scored in another of them (the same model before a judge was added or
    # changed) is not run again.
    for found in [marker, *sorted(task_dir.parent.parent.parent.glob(f"*/by_task/{entry['task']}/score.json"))]:
        done = json.loads(found.read_text()) if found.is_file() else {}
        if done.get("key") == key:
            log(f"{entry['task']}: done already ({found})")
            if found != marker:   # its per-sample log comes along, for the report's intervals
                if task_dir.exists():
                    shutil.rmtree(task_dir)
                shutil.copytree(found.parent, task_dir)
            return done["value"], done["n"], done["reason"], done.get("samples")
    if task_dir.exists():
        shutil.rmtree(task_dir)
    task_dir.mkdir(parents=True)
    write_local_tasks([dict(entry)], task_dir / "tasks")
    judged = judge_mod.task_env(judge, entry["task"]) if judge else {}
    one = {**benchmarks, "tasks": [t for t in benchmarks["tasks"] if t["task"] == entry["task"]]}
    argv, env = build_command(model_dir, task_dir, benchmarks=one, pixels=pixels, eval_cfg=cfg,
                              system_prompt=system_prompt, environ={**os.environ, **judged})
    env = {**env, **judged}
    log("lmms-eval: " + " ".join(argv))
    started = time.time()
    # cwd = the task folder: lmms-eval writes stray files (submissions) into its working
    # directory and its judge reads a .env from there. It exits 0 even when the model fails
    # to load, so the exit code is read together with its results file below.
    # A judge task is watched while it runs: lmms-eval would go on for minutes per question
    # without its judge, then score those questions 0 (judge.outage_watch).
    watch = {"watch": judge_mod.outage_watch(judge), "watch_every_s": judge_mod.watch_every_s(judge)} if judge else {}
    try:
        done = run_logged(argv, env=env, log_path=task_dir / "lmms_eval.log", cwd=task_dir, echo=echo, check=False,
                          **watch)
    except Stopped as stop:
        return None, None, f"the judge stopped answering during evaluation ({stop.reason})", None
    results_file = latest_results_file(task_dir / "lmms_eval", since=started)
    value, n, reason = read_scores(results_file, [dict(entry)], rc=done.returncode, log_file=task_dir / "lmms_eval.log",
                                   log_tail=done.tail)[entry["task"]]
    if judge:
        # lmms-eval scores a question 0 when its judge call fails: a judge gone during the run
        # makes the score not what it says it is.
        ok, why = judge_mod.answers(judge)
        if not ok:
            return None, n, f"the judge stopped answering during evaluation ({why})", None
    logs = sorted(task_dir.glob(f"lmms_eval/*/*_samples_{lmms_task_name(entry)}.jsonl"))
    samples = str(logs[-1].relative_to(task_dir.parent.parent)) if logs else None   # relative to results.jsonl
    marker.write_text(json.dumps({"key": key, "value": value, "n": n, "reason": reason, "samples": samples}))
    return value, n, reason, samples


def make_record(meta: Mapping, entry: Mapping, *, value: float | None, n: int | None, reason: str | None,
                version: str, model_args: str, timestamp: str, judge: Mapping | None = None,
                samples: str | None = None) -> dict:
    ok = value is not None
    return {"run": meta["run"], "backbone": meta["backbone"], "caption_source": meta["caption_source"],
            "benchmark": entry["benchmark"], "task": entry["task"], "metric": entry["metric"],
            "value": value, "n": n, "status": "ok" if ok else "n/a", "reason": None if ok else reason,
            "lmms_eval_version": version, "model_args": model_args, "timestamp": timestamp,
            "judge": dict(judge) if judge else None, "samples": samples,
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
        if is_fixed_copy(e):
            write_fixed_task(e, tasks_dir)
            continue
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
# lmms-eval's settings, offered to the eval YAMLs (`- /eval_defaults@_here_`)
CONFIG_DEFAULTS = {"eval_defaults": dict(EVAL_DEFAULTS)}


def _settings(cfg: Mapping) -> dict:
    # The reference model is its own stage; naming one must not change the trained model's fingerprint.
    return {k: v for k, v in cfg["eval"].items() if k != "reference_model"}


def stages(cfg: Mapping, upstream: list[dict]) -> list[dict]:
    """The trained model's evaluation (it reads the last training stage, or the fresh model when
    the chain has none), and the stock reference model's when one is named: a calibration row
    that does not depend on the caption source, so one evaluation serves a whole sweep."""
    trained = [s["name"] for s in upstream if s["kind"] in ("train", "init_vlm")][-1]
    names = ", ".join(t["benchmark"] for t in cfg["benchmarks"]["tasks"])
    # The judge decides the judge tasks' scores only; it enters this stage's fingerprint only when
    # the set has a judge task, and each task's own key (task_key) only for those tasks, so adding
    # a judge re-runs the judge tasks and reuses the others' scores.
    judged = any(t.get("judge") for t in cfg["benchmarks"]["tasks"])
    judge = dict(cfg.get("judge") or {"name": "none"})
    common = {"benchmarks": dict(cfg["benchmarks"]), "eval": _settings(cfg), "pixels": dict(cfg["pixels"]),
              # the backbone's, as its training template renders it (configs/hydra/backbone/*.yaml)
              "system_prompt": cfg["backbone"].get("system_prompt"),
              **({"judge": judge_mod.identity(judge)} if judged else {})}
    settings = {"tracker": dict(cfg.get("tracker") or {"name": "none"}), "identity": run_identity(cfg),
                "judge": judge}
    out = [{"name": "evaluate", "inputs": {"model": trained}, "summary": f"lmms-eval: {names}", "settings": settings,
            "resumable": True,
            "config": {**common, "meta": {"run": run_label(cfg), "backbone": cfg["backbone"]["label"],
                                          "caption_source": cfg["captions"]["label"], "seed": cfg["seed"]}}}]
    ref = cfg["eval"].get("reference_model")
    if ref:
        out.append({"name": "evaluate.reference", "summary": f"lmms-eval on the stock model {ref}",
                    "settings": {"judge": judge}, "resumable": True,
                    "config": {"model": ref, **common,
                               "meta": {"run": f"reference/{ref}", "backbone": cfg["backbone"]["label"],
                                        "caption_source": f"reference: {ref}"}}})
    return out


def problems(cfg: Mapping) -> list[str]:
    from evaluation.command import EVAL_DEFAULTS, EvaluationError

    out = unknown_keys("eval", cfg["eval"], (*EVAL_DEFAULTS, "reference_model")) + judge_mod.problems(cfg.get("judge"))
    try:
        eval_settings(_settings(cfg))
        entries = task_entries(cfg["benchmarks"], resolved=False)
    except EvaluationError as exc:
        return out + [str(exc)]
    world = cfg.get("world") or {}
    needs_world = [e["task"] for e in entries if str(e.get("local_data") or "").startswith(WORLD_BENCHMARKS)]
    if needs_world and not world.get("table1_benchmarks"):
        out.append(f"benchmarks={cfg['benchmarks'].get('name')} reads {WORLD_BENCHMARKS}... (tasks "
                   f"{', '.join(needs_world)}), which this world does not build (world.table1_benchmarks: false, "
                   "as in world=small); use world=embedded, or another benchmark set")
    return out


WORLD_BENCHMARKS = "world://benchmarks/"


def preflight(cfg: Mapping) -> list[str]:
    """What evaluation reads that is not there, checked before stage 1 (files and the network,
    unlike problems()): every hub dataset an offline evaluation reads, and the judge of the judge
    tasks. Each names what fixes it. Local files the world builds are checked when they exist."""
    out = []
    entries = task_entries(cfg["benchmarks"], resolved=False)
    hub = [e for e in entries if not e.get("local_data")]
    if hub and eval_settings(_settings(cfg))["offline"]:
        missing = missing_datasets(hub)
        if missing:
            out.append("offline evaluation, but these datasets are not in the Hugging Face cache (or hold no data): "
                       + "; ".join(f"{task}: {', '.join(ids)}" for task, ids in missing.items())
                       + f"; fetch them with `python -m harness prefetch benchmarks={cfg['benchmarks'].get('name')}` "
                         "where the network is, into the same cache")
    if any(e["judge"] for e in entries):
        judge = cfg.get("judge")
        if judge_mod.is_set(judge):
            ok, why = judge_mod.answers(judge)
            if not ok:
                out.append(f"{why}; {judge_mod.how_to_start(judge)}")
        elif judge_key_status()[0]:   # a judge named by the environment (API_TYPE, ...)
            ok, why = judge_answers()
            if not ok:
                out.append(why.removeprefix("judge task: ") + "; start it, or unset the judge's key variables")
    return out


def describe(view) -> list[str]:
    """plan's lines: how the model sees its inputs, and the exact lmms-eval command of the first
    task (each task runs the same command on its own task, into by_task/<task>/)."""
    from init_vlm.view import view_line
    from stagekit import shell_line

    config = view.config
    model = config["model"] if "model" in config else view.inputs["model"] / "model"
    tasks = config["benchmarks"]["tasks"]
    lines = [view_line(view.run_cfg)]
    if tasks:
        first = {**config["benchmarks"], "tasks": tasks[:1]}
        argv, env = build_command(model, view.out_dir / "by_task" / tasks[0]["task"], benchmarks=first,
                                  pixels=config["pixels"], eval_cfg=config["eval"],
                                  system_prompt=config.get("system_prompt"))
        lines.append(f"one lmms-eval process per task ({len(tasks)}); {tasks[0]['task']}'s: "
                     + (shell_line(argv, env) if argv else "none (a judge task without a judge: n/a)"))
    return lines


def run(job: StageRun) -> dict:
    c = job.config
    # A trained model comes from the upstream stage; a reference model is named in the config.
    model = c["model"] if "model" in c else job.inputs["model"] / "model"
    results = run_evaluation(model, job.out_dir, benchmarks=c["benchmarks"], pixels=c["pixels"], eval_cfg=c["eval"],
                             meta=c["meta"], log=job.log, echo=job.log.echo, judge=job.settings.get("judge"),
                             system_prompt=c.get("system_prompt"))
    records = [json.loads(line) for line in Path(results).read_text().splitlines() if line.strip()]
    scores = {r["benchmark"]: r["value"] for r in records}
    if job.settings.get("tracker") and "model" not in c:   # the trained model's run, not the reference
        import tracking

        tracking.log_scores(job.settings["tracker"], job.settings["identity"], scores, log=job.log)
    return {"scores": scores}


_TQDM = re.compile(r"(\d+)/(\d+) \[")


def progress(out_dir: Path, config: Mapping) -> dict | None:
    """Questions answered so far in the running task, from the progress bar lmms-eval writes to its log."""
    logs = sorted(Path(out_dir).glob("by_task/*/lmms_eval.log"), key=lambda p: p.stat().st_mtime)
    try:   # the task running now writes the newest log
        tail = logs[-1].read_text(errors="replace")[-4000:]
    except (IndexError, FileNotFoundError):
        return None
    found = _TQDM.findall(tail.replace("\r", "\n"))
    if not found:
        return None
    done, total = map(int, found[-1])
    return {"step": done, "total": total, "text": f"{done}/{total} requests answered"}
