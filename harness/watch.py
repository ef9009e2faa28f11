"""`python -m harness status [RUN_OR_SWEEP_DIR]`: what is done, running (with progress and ETA),
interrupted or failed, for one run or every job of a sweep (default: every run and sweep job
under the results folder). It reads only the run folders (status.json, the store's stage
folders), so it works for a run going on in another terminal, another node or a SLURM job.
Exit code 1 when something failed or was interrupted."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Sequence

USAGE = """usage: python -m harness status [RUN_OR_SWEEP_DIR]

For one run folder (results/runs/<experiment>/<job>), a sweep folder
(results/sweeps/<experiment>), or by default every run under $CAPRL_RESULTS (or ./results):
each stage's state and time, the running stage's progress and ETA, and why a job failed.
A run whose process is gone while a stage was running is shown as interrupted (re-run it to
resume). Exit code 1 when something failed or was interrupted."""


def main(argv: Sequence[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    root = Path(argv[0]) if argv else Path(os.environ.get("CAPRL_RESULTS", "results"))
    runs = status_files(root)
    if not runs:
        print(f"error: no run folders (status.json) under {root}", file=sys.stderr)
        return 2
    bad = False
    for path in runs:
        text, state = describe(path)
        print(text)
        bad |= state in ("failed", "interrupted")
    return 1 if bad else 0


def status_files(root: Path) -> list[Path]:
    if (root / "status.json").is_file():
        return [root / "status.json"]
    return sorted(p for p in root.rglob("status.json") if "store" not in p.relative_to(root).parts)


def run_state(data: dict) -> str:
    """running, unless its process is gone: then interrupted (checked on the host that runs it)."""
    if data["state"] != "running":
        return data["state"]
    if data.get("host") == socket.gethostname() and data.get("pid") and not _alive(int(data["pid"])):
        return "interrupted"
    return "running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(path: Path) -> tuple[str, str]:
    data = json.loads(path.read_text())
    state = run_state(data)
    where = "" if data.get("host") in (None, socket.gethostname()) else f" on {data['host']}"
    lines = [f"{data['run']}  [{state}{where}]  {path.parent}"]
    for name, stage in data["stages"].items():
        shown = stage["state"]
        if shown == "running" and state == "interrupted":
            shown = "interrupted"
        took = f"{stage['seconds']:.1f} s" if stage.get("seconds") is not None else ""
        line = f"  {name:<24} {shown:<12} {took:>9}"
        if shown == "running":
            line += f"  {stage_progress(stage.get('dir')) or ''}"
        if shown == "failed" and stage.get("error"):
            line += f"  {stage['error'].splitlines()[0][:200]}"
        lines.append(line.rstrip())
    if state == "failed" and data.get("error"):
        lines.append(f"  error: {data['error'].splitlines()[0][:300]}")
        lines.append(f"  logs: {path.parent / 'logs'}")
    if state == "interrupted":
        lines.append("  the run's process is gone: re-run the same command to resume")
    return "\n".join(lines), state


def stage_progress(folder: str | None) -> str | None:
    """The kind's own progress reader on the stage's folder (its config from .stage.json)."""
    from harness.kinds import KINDS
    from harness.store import STAGE_INFO

    if not folder:
        return None
    try:
        info = json.loads((Path(folder) / STAGE_INFO).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    read = getattr(KINDS.get(info.get("kind")), "progress", None)
    progress = read(Path(folder), info["config"]) if read else None
    return progress["text"] if progress else None
