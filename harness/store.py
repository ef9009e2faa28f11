"""The content-addressed store of stage outputs: <store>/<kind>/<fingerprint[:16]>/.

A folder counts as done only when its `.done.json` exists and names the same fingerprint;
that file is written last, atomically (write to a temporary name, then rename), so a crash
at any point leaves a folder that does not look done. A lock file serialises two jobs that
want the same stage at once (parallel sweep jobs): the second waits, then finds it done.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Iterator

from stagekit import file_lock, write_json_atomic

DONE = ".done.json"
STAGE_INFO = ".stage.json"


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)

    def dir_for(self, kind: str, fp: str) -> Path:
        return self.root / kind / fp[:16]

    def done_info(self, folder: Path, fp: str) -> dict | None:
        try:
            info = json.loads((folder / DONE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return info if info.get("fingerprint") == fp else None

    def is_done(self, folder: Path, fp: str) -> bool:
        return self.done_info(folder, fp) is not None

    def finished_at(self, folder: Path, fp: str) -> float | None:
        """When the stage was marked done (epoch seconds); 0.0 for markers older than this field."""
        info = self.done_info(folder, fp)
        return None if info is None else float(info.get("finished_at", 0.0))

    def mark_done(self, folder: Path, fp: str, info: dict) -> None:
        write_json_atomic(folder / DONE, {**info, "fingerprint": fp, "finished_at": time.time()})

    def unmark(self, folder: Path) -> None:
        (folder / DONE).unlink(missing_ok=True)

    @staticmethod
    def clear(folder: Path) -> None:
        """Empty a folder that holds a partial output (non-resumable stages start over)."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)

    @contextlib.contextmanager
    def lock(self, folder: Path, log=print) -> Iterator[None]:
        with file_lock(folder, log=log):
            yield
