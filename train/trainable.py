"""What a stage should train, counted from the model's safetensors headers (no torch, no load),
and checked against the count LLaMA-Factory reports when it starts (pain point 1).

Module groups follow LLaMA-Factory's own qwen2_5_vl definition (model/model_utils/visual.py):
projector = visual.merger; vision = the rest of visual; language = everything else."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Mapping

# What `trainable` may say, and the freeze flags (vision, projector, language) it implies.
TRAINABLE = {
    "projector": (True, False, True),
    "projector+llm": (True, False, False),   # ScaleCap's further pretraining: ViT frozen
    "all": (False, False, False),
}
_LF_LINE = re.compile(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+)")


class TrainableMismatch(RuntimeError):
    pass


def check_flags(spec: Mapping, stage: str) -> None:
    want = TRAINABLE.get(spec["trainable"])
    if want is None:
        raise TrainableMismatch(f"train.stages.{stage}.trainable={spec['trainable']!r}; choose one of {sorted(TRAINABLE)}")
    have = (spec["freeze_vision_tower"], spec["freeze_multi_modal_projector"], spec["freeze_language_model"])
    if tuple(bool(x) for x in have) != want:
        raise TrainableMismatch(
            f"train.stages.{stage}: trainable={spec['trainable']!r} needs freeze_vision_tower={want[0]}, "
            f"freeze_multi_modal_projector={want[1]}, freeze_language_model={want[2]}; the config has {have}")


def _header(path: Path) -> dict:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n))


def param_groups(model_dir: Path) -> dict[str, int]:
    """Parameter counts per group from the safetensors headers of a model folder."""
    groups = {"projector": 0, "vision": 0, "language": 0}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        for name, meta in _header(shard).items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in meta["shape"]:
                count *= dim
            groups[_group(name)] += count
    return groups


def _group(name: str) -> str:
    if ".visual.merger." in f".{name}":
        return "projector"
    if ".visual." in f".{name}":
        return "vision"
    return "language"


def expected_trainable(model_dir: Path, spec: Mapping) -> int:
    groups = param_groups(model_dir)
    frozen = dict(zip(("vision", "projector", "language"), TRAINABLE[spec["trainable"]]))
    return sum(n for g, n in groups.items() if not frozen[g])


def parse_lf_count(line: str) -> int | None:
    m = _LF_LINE.search(line)
    return int(m.group(1).replace(",", "")) if m else None
