"""End of a multirun: one summary of every job (state, time, and why it failed), then the
ablation report over the whole sweep folder. Hydra calls this through hydra.callbacks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parent.parent
PAPER_TABLES = [REPO / "results" / "paper" / "paper_table1.csv", REPO / "results" / "paper" / "paper_table2.csv"]
SWEEP_FAILED: list[str] = []   # failed jobs seen by the summary (also those run by SLURM elsewhere)


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


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = job_summaries(sweep_dir, self.started)
        text = format_summary(rows)
        (sweep_dir / "summary.md").write_text(text + "\n")
        (sweep_dir / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
        print(f"\n[harness] sweep summary ({sweep_dir}):\n{text}\n", flush=True)
        SWEEP_FAILED.extend(r["job"] for r in rows if r["state"] != "done")
        done = [str(sweep_dir / r["job"]) for r in rows if r["state"] == "done"]
        if done:  # the ablation table of this sweep's finished jobs, beside the paper's numbers
            from report.cli import main as report_main

            paper = [arg for csv in PAPER_TABLES if csv.exists() for arg in ("--paper", str(csv))]
            report_main([*done, "--out", str(sweep_dir / "report"), *paper])
