"""The content-addressed store of stage outputs: <store>/<kind>/<fingerprint[:16]>/.

A folder counts as done only when its `.done.json` exists and names the same fingerprint;
that file is written last, atomically (write to a temporary name, then rename), so a crash
at any point leaves a folder that does not look done. A lock file serialises two jobs that
want the same stage at once (parallel sweep jobs): the second waits, then finds it done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

DONE = ".done.json"
STAGE_INFO = ".stage.json"


def write_json_atomic(path: Path, data: Any, sort_keys: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")
    os.replace(tmp, path)


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
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.with_name(folder.name + ".lock"), "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"waiting for another job that is computing {folder} ...")
                t0 = time.time()
                fcntl.flock(fh, fcntl.LOCK_EX)
                log(f"... it finished after {time.time() - t0:.0f} s")
            yield
