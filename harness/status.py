"""The run folder's machine-readable status file (status.json), rewritten atomically on every
state change so that a crash leaves the last true state on disk."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from harness.store import write_json_atomic


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RunStatus:
    def __init__(self, run_dir: Path, run: str, stages: list[str], suffix: str = ""):
        self.path = Path(run_dir) / f"status{suffix}.json"
        self.data = {
            "run": run,
            "state": "running",
            "started": now(),
            "finished": None,
            "error": None,
            # Who runs it: `status` tells a live run from one killed mid-stage by this process.
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "stages": {name: {"state": "pending"} for name in stages},
        }
        self._save()

    def stage(self, name: str, state: str, **fields) -> None:
        self.data["stages"][name] = {**self.data["stages"][name], "state": state, **fields}
        self._save()

    def finish(self, state: str, error: str | None = None) -> None:
        self.data.update(state=state, finished=now(), error=error)
        self._save()

    def _save(self) -> None:
        write_json_atomic(self.path, self.data, sort_keys=False)  # stages in chain order
