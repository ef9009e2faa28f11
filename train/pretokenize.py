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
One difference in how, not what: the image processor gives each image's token grid from its size
without computing the pixel values LLaMA-Factory would throw away (GridOnlyImages below).
tests/test_pretokenize.py compares the joined result with get_dataset's.

    lf_args = tokenize_args(rendered_llamafactory_yaml)       # the data-deciding keys only
    tokenize(lf_args, out_dir, parts=4)                       # this machine: 4 processes, joined
    tokenize(lf_args, out_dir, parts=64, run_parts=on_slurm(...))   # a SLURM array of 64 CPU tasks
    tokenize_part(lf_args, shards_dir, part=i, parts=N)       # one of N machines (or array tasks)
    join(shards_dir, out_dir, parts=N)                        # then, once

A part is written aside and renamed into place when whole, so a killed part never looks done and
a re-run computes only the parts that are missing (train/pretokenize_slurm.py for the array).

Uses two private functions of the pinned LLaMA-Factory 0.9.5 (data/loader.py); a version that
renames them fails loudly at import, never silently differently."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stagekit import write_json_atomic

# Keys of the rendered YAML that are not about data, or that this module sets itself.
_DROP = ("tokenized_path", "preprocessing_num_workers", "overwrite_cache", "output_dir")
PART_INFO = "part.json"   # written last into a part: its row range, rows, CPU seconds, thread budget


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
    tokenizer_module["processor"] = grid_only(tokenizer_module.get("processor"))
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    rows = _get_merged_dataset(data_args.dataset, model_args, data_args, training_args, "sft")
    return {"data_args": data_args, "training_args": training_args, "template": template, "rows": rows,
            **tokenizer_module}


class GridOnlyImages:
    """The Qwen-VL image processor as tokenizing uses it: LLaMA-Factory's preprocessing calls it
    on each row's images only to read image_grid_thw (how many image tokens to write) and throws
    the pixel values away; the training collator computes them again. Resizing each photo to the
    pixel budget, normalizing and cutting it into patches is most of a row's CPU time, so here the
    grid comes from the processor's own smart_resize (the function its resize step calls, from its
    own module) on the image's size. Each image is still decoded, so a broken file fails here, on
    CPU, not in the GPU job. The first call of each process is checked against the real processor
    and a difference stops the part (tests/test_pretokenize.py checks many sizes and both
    families); anything but a flat list of images, or a processor that does not resize, goes to
    the real processor."""

    def __init__(self, real):
        self.real, self.checked = real, False
        self.smart_resize = sys.modules[type(real).__module__].smart_resize

    def __getattr__(self, name):   # only for what __init__ did not set: the real processor's attributes
        if name.startswith("__") or name in ("real", "checked", "smart_resize"):   # e.g. while unpickling
            raise AttributeError(name)
        return getattr(self.real, name)

    def __call__(self, images, return_tensors=None, **kwargs):
        from PIL.Image import Image

        if kwargs or not isinstance(images, list) or not all(isinstance(i, Image) for i in images):
            return self.real(images, return_tensors=return_tensors, **kwargs)
        grids = self.grids(images)
        if not self.checked:
            real = self.real(images, return_tensors="pt")["image_grid_thw"].tolist()
            if real != grids:
                raise RuntimeError(f"the image token count of {type(self.real).__name__} changed: {grids} here, "
                                   f"{real} from the processor itself (images {[getattr(i, 'filename', '') for i in images]}, "
                                   f"sizes {[i.size for i in images]})")
            self.checked = True
        import torch

        return {"image_grid_thw": torch.tensor(grids, dtype=torch.long)}

    def grids(self, images) -> list[list[int]]:
        p, m = self.real.patch_size, self.real.merge_size
        out = []
        for image in images:
            try:
                image.load()   # decoded, so that a broken image fails now
            except OSError as exc:   # PIL's message does not say which file
                raise OSError(f"{getattr(image, 'filename', None) or 'an image'}: {exc}") from exc
            h, w = self.smart_resize(image.height, image.width, factor=p * m,
                                     min_pixels=self.real.size["shortest_edge"], max_pixels=self.real.size["longest_edge"])
            out.append([1, h // p, w // p])   # one image is one temporal patch
        return out


def grid_only(processor):
    """processor with its image processor replaced by GridOnlyImages where that is exact: a Qwen-VL
    image processor that resizes (Qwen2.5-VL and Qwen3-VL both use Qwen2VLImageProcessor)."""
    image = getattr(processor, "image_processor", None)
    if image is None or not getattr(image, "do_resize", False) or \
            not hasattr(sys.modules[type(image).__module__], "smart_resize"):
        return processor
    processor.image_processor = GridOnlyImages(image)
    return processor


def part_range(n_rows: int, part: int, parts: int, unit: int) -> tuple[int, int]:
    """Rows [lo, hi) of one part: whole units of rows, as even as they go (possibly none)."""
    units = -(-n_rows // unit)
    lo_u, hi_u = part * units // parts, (part + 1) * units // parts
    return min(lo_u * unit, n_rows), min(hi_u * unit, n_rows)


def _unit(data_args) -> int:
    """Packing packs within one preprocessing batch, so its parts hold whole batches; without
    packing every row is preprocessed alone and any cut gives the same rows."""
    return data_args.preprocessing_batch_size if data_args.packing else 1


def part_dir(shards_dir: Path, part: int, parts: int) -> Path:
    """A part's folder names the count too: part 1 of 2 and part 1 of 4 are different rows, so a
    re-run with another count never mistakes an old part for one of its own."""
    return Path(shards_dir) / f"part-{part:05d}-of-{parts:05d}"


def missing_parts(shards_dir: Path, parts: int) -> list[int]:
    """The parts not yet written whole (a part appears only once complete: _publish)."""
    return [p for p in range(parts) if not (part_dir(shards_dir, p, parts) / PART_INFO).exists()]


def shards_dir(out_dir: Path) -> Path:
    """Where the parts of out_dir wait to be joined (beside it: kept by a failed attempt)."""
    return Path(out_dir).with_name(Path(out_dir).name + ".parts")


def _preprocess_part(lf: dict, part: int, parts: int, out: Path, cpu_t0: float, budget: dict) -> int:
    from llamafactory.data.loader import _get_preprocessed_dataset

    data_args = lf["data_args"]
    data_args.preprocessing_num_workers = None   # this process is the worker
    lo, hi = part_range(len(lf["rows"]), part, parts, _unit(data_args))
    tmp = out.with_name(f".{out.name}.{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if lo < hi:   # else more parts than units of rows: nothing to do, and join skips it
        shard = _get_preprocessed_dataset(lf["rows"].select(range(lo, hi)), data_args, lf["training_args"], "sft",
                                          lf["template"], lf["tokenizer"], lf["processor"])
        shard.save_to_disk(str(tmp))
    write_json_atomic(tmp / PART_INFO, {"rows": [lo, hi], "rows_in": hi - lo,
                                        "cpu_s": round(time.process_time() - cpu_t0, 3), **budget})
    _publish(tmp, out)
    return hi - lo


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished part into place: a part killed before this (scancel, a time limit, a
    lost node) leaves only its hidden temporary folder, which never counts as done."""
    try:
        os.rename(tmp, out)
    except OSError:   # another attempt at the same part got there first: same rows, keep that one
        shutil.rmtree(tmp, ignore_errors=True)


def tokenize_part(args: dict, shards_dir: Path, part: int, parts: int, processes: int = 1) -> int:
    """One part, in this process (a machine of a multi-node job, a SLURM array task, or one of
    `processes` parts run at once on this machine's cores): rows done. Its thread budget (the
    cores given shared by the processes, stagekit/threads.py) is set before any work, and recorded
    with its CPU seconds (this process's, every thread, setup included) in its part.json."""
    from stagekit.threads import cores_given, limit_threads, threads_per_process

    cores = cores_given()
    threads = threads_per_process(processes, cores)
    limit_threads(threads)
    t0 = time.process_time()
    budget = {"threads": threads, "processes": processes, "cores": cores}
    return _preprocess_part(_lf(args), part, parts, part_dir(shards_dir, part, parts), t0, budget)


def tokenize(args: dict, out_dir: Path, parts: int, run_parts=None) -> dict:
    """The missing parts, then all of them joined into out_dir; parts left whole by an earlier
    attempt of the same stage are kept (its folder survives a failure: the stage is resumable).

    run_parts(args, shards_dir, todo, parts) computes the parts numbered in todo: by default in
    processes on this machine (run_forked), or as a SLURM job array (train/pretokenize_slurm.py)."""
    shards = shards_dir(out_dir)
    todo = missing_parts(shards, parts)
    if todo:
        shards.mkdir(parents=True, exist_ok=True)
        (run_parts or run_forked)(args, shards, todo, parts)
    summary = join(shards, out_dir, parts)
    shutil.rmtree(shards)
    return {"parts": parts, "reused": parts - len(todo), **summary}


def wait_for_parts(shards: Path, parts: int, timeout_s: float, nodes: int, log=print, poll_s: float = 2.0) -> None:
    """Until every part is written by the node that owns it (part p: node p % nodes); bounded, so a
    node that died does not keep the others' allocation: the error names the parts and nodes."""
    deadline = time.time() + timeout_s
    if missing := missing_parts(shards, parts):
        log(f"waiting for parts {missing} from nodes {sorted({p % nodes for p in missing})}")
    while missing := missing_parts(shards, parts):
        if time.time() > deadline:
            raise TimeoutError(f"tokenized parts {missing} of {parts} (nodes {sorted({p % nodes for p in missing})}) "
                               f"did not appear under {shards} within {timeout_s:g} s; re-run every node with "
                               "the same command: only the missing parts are redone")
        time.sleep(poll_s)


def run_forked(args: dict, shards: Path, todo: list[int], parts: int) -> None:
    """The parts in todo on this machine: as many processes at once as there are cores given
    (more would only take turns), each with its share of the cores as its thread budget.

    The processes come from a fork server that has imported LLaMA-Factory and loaded nothing:
    starting each one costs no imports (~10 s each otherwise), and none inherits thread pools a
    tokenizer or image processor left running in this process (a process forked after that can
    hang in them: seen here). The server starts once per calling process."""
    from stagekit.threads import processes_for

    at_once = processes_for(len(todo))
    with fork_server().Pool(at_once) as pool:
        pool.starmap(tokenize_part, [(args, shards, p, parts, at_once) for p in todo], chunksize=1)


def fork_server():
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["llamafactory.data.loader", "llamafactory.model", "train.pretokenize"])
    return ctx


def join(shards_dir: Path, out_dir: Path, parts: int) -> dict:
    """Concatenate the parts in order and save as get_dataset saves: rows in and out, CPU seconds.
    Saved aside and renamed over out_dir, so a join killed midway leaves no half dataset there."""
    from datasets import DatasetDict, concatenate_datasets, load_from_disk

    missing = missing_parts(shards_dir, parts)
    if missing:
        raise FileNotFoundError(f"tokenized parts {missing} of {parts} are missing under {shards_dir}")
    dirs = [part_dir(shards_dir, p, parts) for p in range(parts)]
    info = [json.loads((d / PART_INFO).read_text()) for d in dirs]
    train = concatenate_datasets([load_from_disk(str(d)) for d, i in zip(dirs, info) if i["rows_in"]])
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    DatasetDict({"train": train}).save_to_disk(str(tmp))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(tmp, out_dir)
    return {"rows_in": sum(i["rows_in"] for i in info), "rows_out": len(train),
            "cpu_s": round(sum(i["cpu_s"] for i in info), 3)}
