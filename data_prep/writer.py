"""JSONL shards and the rejects file, written under temporary names and renamed when complete.

Shards live in their own folder because LLaMA-Factory loads every file of a `file_name` folder and
requires one file type: nothing but finished shard-NNNNN.jsonl files may ever be in it.

One reordering, and why: `datasets` infers a column's type from the first block of a file, so a
shard that starts with text-only rows (images: []) types the column list<null> and then fails on
the first image path ("Couldn't cast ... list<string>"). So when a shard starts with a text-only
row, its first image row is moved to its front, and a shard only closes once it holds an image row
(a text-only tail shard is fine: list<null> casts to list<string>). Deterministic, so re-runs stay
byte-identical."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

_COPY = 1 << 20


class ShardWriter:
    def __init__(self, folder: Path, rows_per_shard: int):
        self.folder, self.rows_per_shard = Path(folder), max(1, int(rows_per_shard))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shards: list[dict] = []
        self._f = None
        # Writing and hashing release the GIL: a thread overlaps them with converting the next batch.
        self._io = ThreadPoolExecutor(1, thread_name_prefix="shard-io")
        self._pending = None

    def add(self, out: bytearray, ends: list[int], has_image: bytearray) -> None:
        """Rows of one batch: `out` holds newline-terminated lines, row i ending at ends[i]."""
        view, i, n = memoryview(out), 0, len(ends)
        while i < n:
            if self._f is None:
                self._open()
            room = self.rows_per_shard - self._rows
            if room > 0:
                take = min(room, n - i)
            else:  # full, but waiting for an image row (see the module docstring)
                j = has_image.find(1, i)
                take = n - i if j < 0 else j - i + 1
            self._write(view, ends, has_image, i, i + take)
            i += take
            if self._rows >= self.rows_per_shard and self._hoist is not None:
                self._close()

    def close(self) -> list[dict]:
        if self._f is not None:
            self._close()
        self._io.shutdown()
        return self.shards

    def _open(self) -> None:
        self._name = f"shard-{len(self.shards):05d}.jsonl"
        self._part = self.folder / (self._name + ".part")
        self._f = open(self._part, "wb")
        self._rows = self._bytes = 0
        self._sha = hashlib.sha256()
        # None: no image row yet; False: the first row had an image; (offset, line): row to hoist
        self._hoist = None

    def _write(self, view: memoryview, ends: list[int], has_image: bytearray, a: int, b: int) -> None:
        """Rows a..b-1 of a batch."""
        start = ends[a - 1] if a else 0
        if self._hoist is None:
            j = has_image.find(1, a, b)
            if j == a and self._rows == 0:
                self._hoist = False
            elif j >= 0:
                line_start = ends[j - 1] if j else 0
                self._hoist = (self._bytes + line_start - start, bytes(view[line_start:ends[j]]))
        data = view[start:ends[b - 1]]
        self._wait()  # one block in flight keeps the order and bounds memory
        self._pending = self._io.submit(_write_block, self._f, self._sha, data)
        self._rows += b - a
        self._bytes += len(data)

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def _close(self) -> None:
        self._wait()
        self._f.close()
        self._f = None
        digest = self._sha.hexdigest()
        if self._hoist:  # a (offset, line) pair: rewrite with that line first
            digest = _hoist_line(self._part, *self._hoist)
        os.replace(self._part, self.folder / self._name)
        self.shards.append({"file": self._name, "rows": self._rows, "bytes": self._bytes, "sha256": digest})


def _write_block(f, sha, data: memoryview) -> None:
    f.write(data)
    sha.update(data)


def _hoist_line(path: Path, offset: int, line: bytes) -> str:
    """Rewrite `path` with the line at `offset` moved to the front; returns the new sha256."""
    tmp, sha = path.with_suffix(".hoist"), hashlib.sha256()
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        def put(data: bytes) -> None:
            dst.write(data)
            sha.update(data)

        put(line)
        left = offset
        while left > 0:
            data = src.read(min(_COPY, left))
            put(data)
            left -= len(data)
        src.seek(len(line), os.SEEK_CUR)
        while data := src.read(_COPY):
            put(data)
    os.replace(tmp, path)
    return sha.hexdigest()


class RejectsWriter:
    """rejects.jsonl: one line per rejected row, in input order: file, line, index, id, reason, detail."""

    def __init__(self, path: Path, files: list[str]):
        self.path, self.files = Path(path), [str(f) for f in files]
        self._f = open(self.path, "wb")

    def add(self, file_idx: int, rejects: list) -> None:
        if not rejects:
            return
        name = self.files[file_idx]
        self._f.write(b"".join(
            orjson.dumps({"file": name, "line": line, "index": index, "id": rid, "reason": reason, "detail": detail})
            + b"\n" for line, index, rid, reason, detail in rejects))

    def close(self) -> None:
        self._f.close()
