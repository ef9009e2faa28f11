"""Matched subsets (the paper's Table 2: same images, different captioner).

A row is identified by a seeded 64-bit hash of its image key (images.match_key) and the subset is
the N rows with the smallest (hash, file, position). Because membership depends only on the key's
hash, two caption sources over the same images select the same images, and a source over a
superset of images selects a consistent sample of it (bottom-k / consistent sampling). Finding
the N smallest takes one streaming pass that keeps at most ~2N candidates (sorted now and then),
so memory grows with N, never with the number of rows."""

from __future__ import annotations

import hashlib
import zlib

import numpy as np


def key_hash(key: str, seed: int) -> int:
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8,
                             key=seed.to_bytes(8, "big", signed=True)).digest()
    return int.from_bytes(digest, "big")


def pick(key: str, seed: int, n: int) -> int:
    """A deterministic index in [0, n) for a key (the prompt of a caption row): fast, not uniform-critical."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass"), seed & 0xFFFFFFFF) % n


class BottomN:
    """The N smallest (hash, file, pos) triples seen; the last one is the subset's threshold."""

    def __init__(self, n: int):
        self.n = n
        self._chunks: list[np.ndarray] = []
        self._held = 0
        self.seen = 0

    def add(self, hashes: list[int], files: list[int], positions: list[int]) -> None:
        if not hashes:
            return
        rows = np.empty(len(hashes), dtype=[("h", "<u8"), ("f", "<u4"), ("p", "<u8")])
        rows["h"], rows["f"], rows["p"] = hashes, files, positions
        self._chunks.append(rows)
        self._held += len(rows)
        self.seen += len(rows)
        if self._held > 2 * self.n + 65536:
            self._shrink()

    def _shrink(self) -> np.ndarray:
        rows = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        if len(rows) > self.n:
            rows = np.sort(rows, order=("h", "f", "p"))[:self.n]  # exact ties order: sort, not partition
        self._chunks, self._held = [rows], len(rows)
        return rows

    def threshold(self) -> tuple[int, int, int] | None:
        """The largest selected triple, or None when every row fits (no row is left out)."""
        if self.seen <= self.n:
            return None
        rows = self._shrink()
        last = np.sort(rows, order=("h", "f", "p"))[-1]
        return int(last["h"]), int(last["f"]), int(last["p"])
