"""A checkpoint is resumed with its own weights only if they carry the model's parameter names.

transformers 5 saves a Qwen2.5-VL checkpoint under the hub's names (`visual.*`, `model.layers.*`:
save_pretrained reverts its key conversion) but its Trainer resumes with a plain
`load_state_dict(strict=False)` that does not convert them back. Every weight is then "missing", one
warning is logged, and training goes on from the stage's *input* weights with the checkpoint's
optimizer state, LR and step: a resumed run that looks fine and has lost everything trained before
the kill (huggingface/transformers#43701, open; 5.6.0 is pinned here). tests/test_train_golden.py
found it: the resumed losses were those of a restarted model.

So before a resume, the checkpoint's weights are renamed as from_pretrained would rename them (the
conversion rules transformers keeps for the model class), and the result is checked to be exactly
the model's parameters; files are replaced atomically, so a kill meanwhile leaves a checkpoint
that loads either way. Names already in the model's layout stay as they are (a second resume
renames nothing). DeepSpeed checkpoints resume from the engine's own module states, which carry
the model's names, and are left alone."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from stagekit import write_json_atomic

SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"


class LayoutMismatch(RuntimeError):
    pass


def is_deepspeed(ckpt: Path) -> bool:
    return (ckpt / "latest").exists()


def to_model_layout(ckpt: Path, log: Callable[[str], None]) -> int:
    """Rename the weights of `ckpt` to the model's parameter names; returns how many were renamed."""
    if is_deepspeed(ckpt):
        return 0
    files = _weight_files(ckpt)
    if not files:
        return 0
    renamed = model_names(ckpt, [name for f in files for name in _names(f)])
    moved = {old for old, new in renamed.items() if old != new}
    for f in files:
        if moved & set(_names(f)):
            _rewrite(f, renamed)
    if (ckpt / INDEX).exists():   # from the shards themselves: right even after a kill between two of them
        index = json.loads((ckpt / INDEX).read_text())
        weight_map = {name: f.name for f in files for name in _names(f)}
        if index["weight_map"] != weight_map:
            write_json_atomic(ckpt / INDEX, {**index, "weight_map": weight_map}, sort_keys=False)
    if moved:
        log(f"{ckpt.name}: {len(moved)} weights renamed to the model's parameter names, so that resuming "
            "loads them (transformers' Trainer does not: huggingface/transformers#43701)")
    return len(moved)


def model_names(ckpt: Path, saved: list[str]) -> dict[str, str]:
    """saved name -> the model's parameter name, by transformers' own loading rules; LayoutMismatch
    unless the result is every parameter of the model (tied ones once) and nothing else."""
    import torch
    import transformers
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    config = transformers.AutoConfig.from_pretrained(ckpt)
    with torch.device("meta"):
        model = getattr(transformers, config.architectures[0])(config)
    params = model.state_dict(keep_vars=True)
    rules = get_model_conversion_mapping(model)
    renamings = [r for r in rules if isinstance(r, WeightRenaming)]
    converters = [r for r in rules if isinstance(r, WeightConverter)]
    out = {}
    for name in saved:
        new, converted = rename_source_key(name, renamings, converters, model.base_model_prefix, params)
        if new not in params and name in params:   # as from_pretrained: only the prefix may change
            new, converted = rename_source_key(name, [], [], model.base_model_prefix, params)
        if converted is not None:
            raise LayoutMismatch(f"{ckpt}: {name} is stored converted ({converted}); renaming cannot restore it")
        out[name] = new
    _check_complete(ckpt, set(out.values()), params)
    return out


def _check_complete(ckpt: Path, names: set[str], params: dict) -> None:
    unknown = sorted(names - set(params))
    loaded = {id(params[n]) for n in names & set(params)}   # a tied parameter is saved once
    missing = sorted(n for n, p in params.items() if id(p) not in loaded)
    if unknown or missing:
        raise LayoutMismatch(f"cannot resume from {ckpt}: its weights do not match the model's parameters "
                             f"(not in the model: {unknown[:5]}, not in the checkpoint: {missing[:5]})")


def _weight_files(ckpt: Path) -> list[Path]:
    """The safetensors files (transformers 5 writes no pytorch_model.bin)."""
    if (ckpt / INDEX).exists():
        shards = set(json.loads((ckpt / INDEX).read_text())["weight_map"].values())
        return [ckpt / s for s in sorted(shards)]
    return [ckpt / SINGLE] if (ckpt / SINGLE).exists() else []


def _names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(path, "pt") as fh:
        return list(fh.keys())


def _rewrite(path: Path, renamed: dict[str, str]) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, "pt") as fh:
        metadata = fh.metadata()
        tensors = {renamed[k]: fh.get_tensor(k) for k in fh.keys()}
    tmp = path.with_name(f".{path.name}.renaming")   # a kill meanwhile leaves the old file
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)
