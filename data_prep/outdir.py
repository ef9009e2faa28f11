"""The out_dir of prepare_dataset: one dataset per folder, staged, then published by renames.

    out_dir/<name>/shard-00000.jsonl ...   the shards (nothing else: LLaMA-Factory loads the folder)
    out_dir/dataset_info.json              the LLaMA-Factory entry of <name>
    out_dir/rejects.jsonl                  every dropped row
    out_dir/manifest.json                  the account; written last

rejects.jsonl and manifest.json account for one dataset, and the harness reads them by those names
(train/cost.py; train/stage.py expects one dataset in dataset_info.json), so a folder holds one
dataset: preparing a second name into it is refused rather than overwriting the first's account.
LLaMA-Factory's file_name entries are absolute paths, so the dataset_info.json entries of several
folders can be merged into one dataset_dir by hand when a run wants them together.

A crash leaves .staging-<name> (before publishing) or .old-<name> (inside publish); start() removes
both, so a re-run gives the same bytes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson

from data_prep.errors import DataPrepError
from data_prep.manifest import dataset_info_entry, write_json

MANIFEST, REJECTS, DATASET_INFO = "manifest.json", "rejects.jsonl", "dataset_info.json"
_LEFTOVERS = (".staging-", ".old-")


def start(out_dir: Path, name: str) -> Path:
    """Check that out_dir is free for `name`, clear what a crashed run left, return a fresh staging folder."""
    others = sorted(other_datasets(out_dir, name))
    if others:
        raise DataPrepError(
            f"{out_dir} already holds dataset(s) {others}; its {MANIFEST} and {REJECTS} account for one dataset, "
            f"so prepare {name!r} into its own folder (or remove {out_dir} first)")
    for prefix in _LEFTOVERS:
        shutil.rmtree(out_dir / f"{prefix}{name}", ignore_errors=True)
    staging = out_dir / f".staging-{name}"
    staging.mkdir(parents=True)
    return staging


def other_datasets(out_dir: Path, name: str) -> set[str]:
    """Names of datasets other than `name` that out_dir holds or was preparing when it crashed."""
    found = set()
    if (out_dir / MANIFEST).exists():
        found.add(_read_json(out_dir / MANIFEST).get("dataset"))
    if (out_dir / DATASET_INFO).exists():
        found.update(_read_json(out_dir / DATASET_INFO))
    if out_dir.is_dir():
        found.update(p.name.split("-", 1)[1] for p in out_dir.iterdir() if p.name.startswith(_LEFTOVERS))
    return found - {name, None}


def publish(staging: Path, out_dir: Path, name: str, manifest: dict, ok: bool) -> None:
    """Swap the finished outputs in; manifest.json goes last and marks the run complete.
    A failed run (ok False) publishes its rejects and manifest, and no dataset."""
    final = out_dir / name
    if final.exists():
        old = out_dir / f".old-{name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        shutil.rmtree(old)
    if ok:
        os.replace(staging / name, final)
    os.replace(staging / (REJECTS + ".part"), out_dir / REJECTS)
    if ok:
        write_json(out_dir / DATASET_INFO, {name: dataset_info_entry(final)})
    else:
        (out_dir / DATASET_INFO).unlink(missing_ok=True)
    write_json(out_dir / MANIFEST, manifest)
    shutil.rmtree(staging)


def _read_json(path: Path) -> dict:
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DataPrepError(f"{path}: not valid JSON ({exc}); remove it or fix it") from None
    if not isinstance(data, dict):
        raise DataPrepError(f"{path}: expected a JSON object; remove it or fix it")
    return data
