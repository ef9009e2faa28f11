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
from collections.abc import Iterator
from pathlib import Path


class JournalError(RuntimeError):
    pass


class Journal:
    """Appends records; remembers only their keys (a million captions stay on disk, not in memory)."""

    def __init__(self, path: Path, sync_s: float = 1.0):
        self.path, self.sync_s = Path(path), sync_s
        self.done: set[str] = load_keys(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._synced = time.monotonic()

    def append(self, record: dict) -> None:
        key = record["key"]
        if key in self.done:
            raise JournalError(f"{self.path}: key {key!r} is already recorded (a duplicate request)")
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.done.add(key)
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


def repair_tail(path: Path, chunk: int = 1 << 16) -> None:
    """Cut a torn last line (no newline and not JSON) off in place; give a complete one its newline."""
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        pos, tail, end = size, b"", 0
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step)
            cut = block.rfind(b"\n")
            if cut >= 0:
                tail, end = block[cut + 1:] + tail, pos + cut + 1
                break
            tail = block + tail
        if not tail.strip():
            return
        try:
            json.loads(tail)
            fh.seek(size)
            fh.write(b"\n")          # complete, only its newline was lost: keep it
        except ValueError:
            fh.truncate(end)          # torn by a kill: its item is requested again


def records(path: Path) -> Iterator[tuple[int, int, dict]]:
    """(line number, byte offset, record) of every line, read as a stream; damage stops with its line."""
    seen: set[str] = set()
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                key = record["key"]
            except (ValueError, KeyError, TypeError):
                raise JournalError(f"{path}, line {number}: not a journal record ({raw[:120]!r}); the file is "
                                   "damaged: remove the line (its item is then requested again)") from None
            if key in seen:
                raise JournalError(f"{path}, line {number}: key {key!r} recorded twice")
            seen.add(key)
            yield number, start, record


def load(path: Path) -> dict[str, dict]:
    """The records of a journal by key (for small journals: Prism), after repairing its tail."""
    if not path.exists():
        return {}
    repair_tail(path)
    return {r["key"]: r for _, _, r in records(path)}


def load_keys(path: Path) -> set[str]:
    """The keys a journal holds, read as a stream, after repairing its tail."""
    if not path.exists():
        return set()
    repair_tail(path)
    return {r["key"] for _, _, r in records(path)}


def offsets_in_order(path: Path, keys: list[str]) -> list[int]:
    """Byte offsets of the records of `keys` that the journal holds, in the order of `keys`
    (only integers in memory: the records are read back one at a time)."""
    position = {k: i for i, k in enumerate(keys)}
    found = sorted((position[r["key"]], start) for _, start, r in records(path) if r["key"] in position)
    return [start for _, start in found]
