"""Tokenize once: LLaMA-Factory's `tokenized_path`, shared by every stage and
sweep job whose tokenization would come out the same.

LLaMA-Factory 0.9.5 (data/loader.py get_dataset) loads the cache whenever its folder is
non-empty; otherwise it tokenizes, saves with save_to_disk, logs "Tokenized dataset is saved at
<path>." and goes on training. A folder that a kill interrupted mid-save is non-empty too, so we
keep a `.complete` mark: written as soon as that log line appears (not when training ends, so a
later crash keeps a good cache), and a folder without it is removed before the next launch.

A file lock is held from that check until the cache is complete (or the build failed): two jobs
sharing the key (an LR sweep, parallel sweep jobs) never delete or write each other's cache; the
second waits, then reuses it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Mapping

from stagekit import file_lock

COMPLETE = ".complete"
SAVED = "Tokenized dataset is saved at"


def lf_version() -> str:
    try:
        return version("llamafactory")
    except PackageNotFoundError:
        return "unknown"


def cache_key(data_fingerprint: str, config: Mapping, processor: Mapping[str, bytes]) -> str:
    """Prepared data + template + cutoff + pixels + processor files + LLaMA-Factory version (its
    preprocessing may change) + `extra` (pass-through keys may change preprocessing, e.g.
    train_on_prompt, mask_history, max_samples) + packing."""
    h = hashlib.sha256()
    from train.render import packs

    settings = [config["common"]["template"], config["common"]["cutoff_len"], config["pixels"],
                config["common"].get("extra") or {}, lf_version()]
    if packs(config):   # packed rows are other rows; appended only when on, so unpacked keys stay put
        settings.append("neat_packing")
    h.update(data_fingerprint.encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name in sorted(processor):
        h.update(name.encode() + processor[name])
    return h.hexdigest()[:16]


class TokenizedCache:
    """`with TokenizedCache(path, log) as cache:` around a launch; feed it every output line."""

    def __init__(self, path: Path, log=print):
        self.path, self.log = Path(path), log
        self._lock = contextlib.ExitStack()

    def is_complete(self) -> bool:
        return (self.path / COMPLETE).exists()

    def __enter__(self) -> TokenizedCache:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.enter_context(file_lock(self.path, log=self.log))
        if self.is_complete():
            self.log(f"reusing tokenized dataset {self.path}")
            self._lock.close()   # LLaMA-Factory only reads it: nothing to guard
        elif self.path.exists():
            self.log(f"tokenized cache {self.path} is incomplete (killed while saving?); rebuilding")
            shutil.rmtree(self.path)
        return self

    def on_line(self, line: str) -> None:
        if not self.is_complete() and f"{SAVED} {self.path}." in line:
            self.mark_complete()

    def mark_complete(self) -> None:
        if self.path.is_dir() and any(self.path.iterdir()):
            (self.path / COMPLETE).touch()
        self._lock.close()

    def __exit__(self, *exc) -> None:
        self._lock.close()
