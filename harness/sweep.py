"""End of a multirun: one summary of every job (state, time, and why it failed), then the
ablation report over the whole sweep folder. Hydra calls this through hydra.callbacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def job_summaries(sweep_dir: Path) -> list[dict]:
    rows = []
    for status_file in sorted(sweep_dir.glob("*/status.json")):
        data = json.loads(status_file.read_text())
        stages = data["stages"].values()
        seconds = sum(s.get("seconds", 0) for s in stages if s.get("state") == "done")
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
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = job_summaries(sweep_dir)
        text = format_summary(rows)
        (sweep_dir / "summary.md").write_text(text + "\n")
        (sweep_dir / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
        print(f"\n[harness] sweep summary ({sweep_dir}):\n{text}\n", flush=True)
        if any(r["state"] == "done" for r in rows):
            from report.cli import main as report_main

            report_main([str(sweep_dir)])
