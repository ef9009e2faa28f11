"""The append-only record of finished requests: one JSON object a line, keyed by `key`.

Each finished item is appended as soon as it is done and pushed to disk (flush per line, fsync at
least every `sync_s` and at close), so a killed run loses at most what was in flight. A re-run
reads the journal first and asks only for the keys it lacks. A line cut off by the kill (no
newline, or not JSON) is the last line by construction: it is cut away before appending. A bad
line anywhere else is damage, not a crash, and stops with its line number."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class JournalError(RuntimeError):
    pass


class Journal:
    def __init__(self, path: Path, sync_s: float = 1.0):
        self.path, self.sync_s = Path(path), sync_s
        self.done: dict[str, dict] = load(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._synced = time.monotonic()

    def append(self, record: dict) -> None:
        key = record["key"]
        if key in self.done:
            raise JournalError(f"{self.path}: key {key!r} is already recorded (a duplicate request)")
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.done[key] = record
        if time.monotonic() - self._synced >= self.sync_s:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._fh.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            self.sync()
            self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(path: Path) -> dict[str, dict]:
    """The records of a journal by key, after cutting a torn last line away."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if data[end:].strip():
        try:
            json.loads(data[end:])
            data += b"\n"           # complete, only its newline was lost: keep it
        except ValueError:
            data = data[:end]       # torn by a kill: its item is requested again
        _rewrite(path, data)
    return _parse(path, data.decode("utf-8").splitlines())


def _rewrite(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _parse(path: Path, lines: list[str]) -> dict[str, dict]:
    done: dict[str, dict] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key = record["key"]
        except (ValueError, KeyError, TypeError):
            raise JournalError(f"{path}, line {number}: not a journal record ({line[:120]!r}); the file is "
                               "damaged: remove the line (its item is then requested again)") from None
        if key in done:
            raise JournalError(f"{path}, line {number}: key {key!r} recorded twice")
        done[key] = record
    return done
