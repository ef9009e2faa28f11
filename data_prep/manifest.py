"""Accounting: the running totals, manifest.json, the dataset_info.json entry and the kept-fraction floor.

Invariant: rows_read == rows_kept + rows_rejected, and rows_rejected is the sum of `rejected` and
the number of lines of rejects.jsonl. Rows outside the dataset are not read rows: those whose image
path is not under path_prefix (path_prefix.rows_outside) and those a matched subset left out
(subset.rows_outside_subset). Rows without an image key belong to no subset and are rejected.

Nothing time- or machine-dependent goes in: a re-run on the same inputs is byte-identical."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import orjson

FORMAT = "caprl-harness data_prep manifest v1"


class Totals:
    def __init__(self):
        self.rows = self.kept = self.outside = self.outside_prefix = self.truncated = 0
        self.text_tokens = self.visual_tokens = self.max_len = 0
        self.lengths: Counter = Counter()   # sequence length -> rows kept
        self.rejected: Counter = Counter()
        self.examples: dict[str, str] = {}   # first example per reason, for error messages

    def add(self, res, files: list[str]) -> None:
        self.rows += res.rows
        self.kept += len(res.ends)
        self.outside += res.outside
        self.outside_prefix += res.outside_prefix
        self.truncated += res.truncated
        self.text_tokens += res.text_tokens
        self.visual_tokens += res.visual_tokens
        self.max_len = max(self.max_len, res.max_len)
        self.lengths.update(res.lengths)
        for line, _, _, reason, detail in res.rejects:
            self.rejected[reason] += 1
            self.examples.setdefault(reason, f"{files[res.file_idx]}:{line}: {detail}")


def dataset_info_entry(shard_dir: Path) -> dict:
    return {"file_name": str(shard_dir), "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}


def build_manifest(*, spec, name: str, out_dir: Path, totals: Totals, shards: list, inputs: list, config: dict,
                   token_info: dict, subset: dict | None, status: str) -> dict:
    rejected_n = sum(totals.rejected.values())
    if totals.rows != totals.kept + rejected_n:  # a bug, never a data problem: refuse to publish
        raise RuntimeError(f"accounting broken: read {totals.rows} != kept {totals.kept} + rejected {rejected_n}")
    return {
        "format": FORMAT,
        "status": status,
        "dataset": name,
        "label": spec.label,
        "reader": spec.reader,
        "rows_read": totals.rows,
        "rows_kept": totals.kept,
        "rows_rejected": rejected_n,
        "kept_fraction": round(totals.kept / totals.rows, 6) if totals.rows else 0.0,
        "rejected": dict(sorted(totals.rejected.items(), key=lambda kv: (-kv[1], kv[0]))),
        "truncated": totals.truncated,
        "path_prefix": None if spec.path_prefix is None else {"prefixes": list(spec.path_prefix),
                                                              "rows_outside": totals.outside_prefix},
        "subset": subset,
        "total_text_tokens": totals.text_tokens,
        "total_visual_tokens": totals.visual_tokens,
        "max_seq_len": totals.max_len,
        # [[length, rows], ...] by length: what padding and packing cost (train/cost.py); exact, and
        # small (at most cutoff_len entries)
        "seq_len_histogram": sorted([n, c] for n, c in totals.lengths.items()),
        "token_count": token_info,
        "shards": shards if status == "complete" else [],
        "dataset_dir": str(out_dir),
        "dataset_info": {name: dataset_info_entry(out_dir / name)} if status == "complete" else {},
        "media_dir": spec.image_root if spec.image_paths == "relative" else None,
        "rejects_file": "rejects.jsonl",
        "inputs": inputs,
        "config": config,
    }


def floor_error(spec, totals: Totals, rejects_path: Path) -> str | None:
    """Why the stage must fail (too few rows kept), with the top reasons and an example of each."""
    if totals.rows == 0:
        return f"source {spec.name!r}: no rows read from {list(spec.paths)}"
    fraction = totals.kept / totals.rows
    if fraction >= spec.min_kept_fraction:
        return None
    top = "\n".join(f"  {reason}: {n} (e.g. {totals.examples[reason]})" for reason, n in totals.rejected.most_common(5))
    return (f"source {spec.name!r}: kept {totals.kept} of {totals.rows} rows ({fraction:.1%}), below "
            f"min_kept_fraction {spec.min_kept_fraction}. Top reasons:\n{top}\nEvery rejected row: {rejects_path}")


def write_json(path: Path, obj) -> None:
    """Write to a temporary name, then rename: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(tmp, path)
