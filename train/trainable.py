"""What a stage should train, counted from the model's safetensors headers (no torch, no load),
and checked against the count LLaMA-Factory reports when it starts: a wrong freeze flag would
otherwise train the wrong parts for days without a sign.

Module groups follow LLaMA-Factory's own qwen2_5_vl definition (model/model_utils/visual.py):
projector = visual.merger; vision = the rest of visual; language = everything else."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Mapping

# What `trainable` may say, and the freeze flags (vision, projector, language) it implies.
# configs/hydra/train/paper_recipe.yaml `freezes` derives the flags from the same table (a test
# checks they agree).
TRAINABLE = {
    "projector": (True, False, True),
    "projector+llm": (True, False, False),   # ScaleCap's further pretraining: ViT frozen
    "all": (False, False, False),
}
_LF_LINE = re.compile(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+)")


class TrainableMismatch(RuntimeError):
    pass


def flag_problem(spec: Mapping, stage: str) -> str | None:
    """Why a stage's `trainable` and its freeze flags disagree, or None."""
    want = TRAINABLE.get(spec["trainable"])
    if want is None:
        return f"train.stages.{stage}.trainable={spec['trainable']!r}; choose one of {sorted(TRAINABLE)}"
    have = (spec["freeze_vision_tower"], spec["freeze_multi_modal_projector"], spec["freeze_language_model"])
    if tuple(bool(x) for x in have) != want:
        return (f"train.stages.{stage}: trainable={spec['trainable']!r} needs freeze_vision_tower={want[0]}, "
                f"freeze_multi_modal_projector={want[1]}, freeze_language_model={want[2]}; the config has {have}")
    return None


def check_flags(spec: Mapping, stage: str) -> None:
    problem = flag_problem(spec, stage)
    if problem:
        raise TrainableMismatch(problem)


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


class CountCheck:
    """Compares LLaMA-Factory's "trainable params: X || all params: Y" line, as it streams by,
    with the expected count; stops the launch on a mismatch. A run that ends without the line
    (a changed log format, LLAMAFACTORY_VERBOSITY=WARN) was never checked: `finish` refuses it
    rather than pass silently."""

    def __init__(self, expected: int, stage: str, trainable: str):
        self.expected, self.stage, self.trainable = expected, stage, trainable
        self.seen: int | None = None

    def on_line(self, line: str) -> None:
        count = parse_lf_count(line)
        if count is None or self.seen is not None:
            return
        self.seen = count
        if count != self.expected:
            raise TrainableMismatch(
                f"stage {self.stage} should train {self.expected:,} parameters ({self.trainable}) "
                f"but LLaMA-Factory reports {count:,} trainable; stopped before training")

    def finish(self) -> None:
        if self.seen is None:
            raise TrainableMismatch(
                f"stage {self.stage}: the trainable-parameter check could not be made: LLaMA-Factory never "
                f"printed 'trainable params: X || all params: Y' (is LLAMAFACTORY_VERBOSITY above INFO?); "
                f"expected {self.expected:,} ({self.trainable}). Not marked done; fix the logging and re-run "
                f"(training resumes from its last checkpoint)")
