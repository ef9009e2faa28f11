"""End of a multirun: one summary of every job (state, time, and why it failed), then the
ablation report over the finished jobs, built by the report library."""

from __future__ import annotations

import json
from pathlib import Path


def job_status_files(sweep_dir: Path, since: float = 0.0) -> list[Path]:
    """status.json of the jobs of this sweep: a folder may also hold jobs of an earlier, other
    sweep of the same experiment, whose status files were not rewritten since it started."""
    return [f for f in sorted(sweep_dir.glob("*/status.json")) if f.stat().st_mtime >= since - 1.0]


def job_summaries(sweep_dir: Path, since: float = 0.0) -> list[dict]:
    rows = []
    for status_file in job_status_files(sweep_dir, since):
        data = json.loads(status_file.read_text())
        stages = data["stages"].values()
        seconds = sum(s.get("seconds", 0) for s in stages if s.get("state") in ("done", "failed"))
        rows.append({"job": status_file.parent.name, "state": data["state"], "seconds": round(seconds, 1),
                     "ran": sum(s.get("state") == "done" for s in stages),
                     "skipped": sum(s.get("state") == "skipped" for s in stages),
                     "error": data.get("error")})
    return rows


def format_summary(rows: list[dict]) -> str:
    lines = ["| job | state | stages run | stages skipped | seconds | error |", "|---|---|---|---|---|---|"]
    for r in rows:
        error = (r["error"] or "").splitlines()[0][:200] if r["error"] else ""
        lines.append(f"| {r['job']} | {r['state']} | {r['ran']} | {r['skipped']} | {r['seconds']} | {error} |")
    return "\n".join(lines)


def finish_sweep(sweep_dir: Path, jobs: list[dict], started: float) -> int:
    """Write summary.md/.json and the sweep report; 0 when every job of this sweep finished.

    The summary reads the jobs' status files (a SLURM job's too, written on its node); the exit
    code also counts a job that returned failure without a status file (failed before its chain)."""
    rows = job_summaries(sweep_dir, started) if sweep_dir.is_dir() else []
    text = format_summary(rows)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "summary.md").write_text(text + "\n")
    (sweep_dir / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n[harness] sweep summary ({sweep_dir}):\n{text}\n", flush=True)
    done = [sweep_dir / r["job"] for r in rows if r["state"] == "done"]
    if done:  # the ablation table of this sweep's finished jobs, beside the paper's numbers
        from report.cli import report_paths
        from report.paper import PAPER_TABLES, PRISM_TABLE

        from report.records import ReportError

        # a Prism sweep (captioners, pipeline=prism) is compared with Table 3, a pretraining sweep with Tables 1-2
        tables = (PRISM_TABLE,) if any((d / "stages" / "prism").exists() for d in done) else PAPER_TABLES
        try:
            written = report_paths(done, out=sweep_dir / "report", paper_csv=[p for p in tables if p.exists()])
            print(written["markdown_text"], flush=True)
        except ReportError as exc:   # e.g. a sweep stopped before evaluation (until=train.alignment)
            print(f"[harness] no sweep report: {exc}", flush=True)
    failed = any(r["state"] != "done" for r in rows) or any(j.get("state") != "done" for j in jobs)
    return 1 if failed else 0
