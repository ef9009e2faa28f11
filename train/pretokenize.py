"""Tokenize a training stage's data before any GPU job, in shards over many processes, then join:
the dataset LLaMA-Factory loads through `tokenized_path` instead of tokenizing on node 0 while
every GPU of the job waits.

Identical to LLaMA-Factory's own single-process preprocessing by construction: the rows are
loaded and aligned by LLaMA-Factory's loader (its own file order), cut into contiguous shards,
and each shard goes through LLaMA-Factory's own preprocessing (`_get_preprocessed_dataset`, the
function get_dataset calls) with the same arguments; the shards are concatenated in order and
saved as get_dataset saves (a DatasetDict with "train"). With packing, part boundaries fall on
multiples of preprocessing_batch_size, so packing (which packs within one preprocessing batch)
packs the same rows together; without, parts are cut anywhere (each row is preprocessed alone).
tests/test_pretokenize.py compares the joined result with get_dataset's.

    lf_args = tokenize_args(rendered_llamafactory_yaml)       # the data-deciding keys only
    tokenize(lf_args, out_dir, parts=4)                       # this machine: 4 processes, joined
    tokenize_part(lf_args, shards_dir, part=i, parts=N)       # one of N machines (or SLURM array tasks)
    join(shards_dir, out_dir, parts=N)                        # then, once

Uses two private functions of the pinned LLaMA-Factory 0.9.5 (data/loader.py); a version that
renames them fails loudly at import, never silently differently."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Keys of the rendered YAML that are not about data, or that this module sets itself.
_DROP = ("tokenized_path", "preprocessing_num_workers", "overwrite_cache", "output_dir")
EMPTY = "EMPTY"   # marks a part that got no rows


def tokenize_args(lf_yaml: Mapping[str, Any], work_dir: Path) -> dict:
    """LLaMA-Factory arguments for preprocessing only: every model and data argument of the stage's
    YAML (template, cutoff, pixels, packing, dataset, pass-through data keys), none of training's."""
    from llamafactory.hparams import DataArguments, ModelArguments

    keep = {f.name for cls in (DataArguments, ModelArguments) for f in dataclasses.fields(cls)} - set(_DROP)
    args = {k: v for k, v in lf_yaml.items() if k in keep}
    if float(args.get("val_size") or 0) > 0:
        raise ValueError("val_size: pretokenization writes the train split only; evaluate with eval_dataset instead")
    return {**args, "stage": "sft", "do_train": True, "finetuning_type": "full", "report_to": "none",
            "output_dir": str(Path(work_dir) / "lf_output"), "overwrite_cache": True}


def _lf(args: dict) -> dict:
    """LLaMA-Factory's parsed arguments, tokenizer, template and the aligned (not yet tokenized) rows."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.data.loader import _get_merged_dataset
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, *_ = get_train_args(dict(args))
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    rows = _get_merged_dataset(data_args.dataset, model_args, data_args, training_args, "sft")
    return {"data_args": data_args, "training_args": training_args, "template": template, "rows": rows,
            **tokenizer_module}


def part_range(n_rows: int, part: int, parts: int, unit: int) -> tuple[int, int]:
    """Rows [lo, hi) of one part: whole units of rows, as even as they go (possibly none)."""
    units = -(-n_rows // unit)
    lo_u, hi_u = part * units // parts, (part + 1) * units // parts
    return min(lo_u * unit, n_rows), min(hi_u * unit, n_rows)


def _unit(data_args) -> int:
    """Packing packs within one preprocessing batch, so its parts hold whole batches; without
    packing every row is preprocessed alone and any cut gives the same rows."""
    return data_args.preprocessing_batch_size if data_args.packing else 1


def _preprocess_part(lf: dict, part: int, parts: int, out: Path) -> int:
    from llamafactory.data.loader import _get_preprocessed_dataset

    data_args = lf["data_args"]
    data_args.preprocessing_num_workers = None   # this process is the worker
    lo, hi = part_range(len(lf["rows"]), part, parts, _unit(data_args))
    out.mkdir(parents=True, exist_ok=True)
    if lo == hi:   # more parts than units of rows: nothing to do, and join skips it
        (out / EMPTY).touch()
        return 0
    shard = _get_preprocessed_dataset(lf["rows"].select(range(lo, hi)), data_args, lf["training_args"], "sft",
                                      lf["template"], lf["tokenizer"], lf["processor"])
    shard.save_to_disk(str(out))
    return hi - lo


def tokenize_part(args: dict, shards_dir: Path, part: int, parts: int) -> int:
    """One part, in this process (a machine of a multi-node job, or a SLURM array task): rows done."""
    return _preprocess_part(_lf(args), part, parts, Path(shards_dir) / f"part-{part:05d}")


def _forked_part(job: tuple[dict, int, int, str]) -> tuple[int, float]:
    """(rows, CPU seconds of this process: every thread, setup included)."""
    import time

    args, part, parts, out = job
    t0 = time.process_time()
    rows = tokenize_part(args, Path(out).parent, part, parts)
    return rows, time.process_time() - t0


def tokenize(args: dict, out_dir: Path, parts: int) -> dict:
    """All parts on this machine in `parts` processes, then joined into out_dir.

    The processes come from a fork server that has imported LLaMA-Factory and loaded nothing:
    starting each one costs no imports (~10 s each otherwise), and none inherits thread pools a
    tokenizer or image processor left running in this process (a process forked after that can
    hang in them: seen here). The server starts once per calling process."""
    shards = Path(out_dir).with_name(Path(out_dir).name + ".parts")
    shutil.rmtree(shards, ignore_errors=True)
    shards.mkdir(parents=True)
    jobs = [(args, p, parts, str(shards / f"part-{p:05d}")) for p in range(parts)]
    with fork_server().Pool(parts) as pool:
        done = pool.map(_forked_part, jobs)
    rows = join(shards, out_dir, parts)
    shutil.rmtree(shards)
    return {"parts": parts, "rows_in": sum(n for n, _ in done), "rows_out": rows,
            "cpu_s": round(sum(c for _, c in done), 3)}


def fork_server():
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["llamafactory.data.loader", "llamafactory.model", "train.pretokenize"])
    return ctx


def join(shards_dir: Path, out_dir: Path, parts: int) -> int:
    """Concatenate the parts in order and save as get_dataset saves; returns the rows written."""
    from datasets import DatasetDict, concatenate_datasets, load_from_disk

    dirs = [Path(shards_dir) / f"part-{p:05d}" for p in range(parts)]
    missing = [p for p, d in enumerate(dirs) if not (d / "dataset_info.json").exists() and not (d / EMPTY).exists()]
    if missing:
        raise FileNotFoundError(f"tokenized parts {missing} of {parts} are missing under {shards_dir}")
    train = concatenate_datasets([load_from_disk(str(d)) for d in dirs if not (d / EMPTY).exists()])
    DatasetDict({"train": train}).save_to_disk(str(out_dir))
    return len(train)
