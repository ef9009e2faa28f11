"""Durable files: a JSON file is either its old or its new content, never half of one; and a lock
that serialises two processes wanting to build the same folder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary name beside the target, then rename: a crash leaves the old file, and a
    reader (another process, another node) sees the old text or the new, never a half-written one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any, sort_keys: bool = True) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")


@contextlib.contextmanager
def file_lock(folder: Path, log=print) -> Iterator[None]:
    """Exclusive lock on `<folder>.lock` (flock: released by the kernel if the holder dies). The
    second process waits and says so, then finds the first one's work done."""
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
