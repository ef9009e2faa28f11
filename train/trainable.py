"""What a stage should train, counted from the model's safetensors headers (no torch, no load),
and checked against the count LLaMA-Factory reports when it starts: a wrong freeze flag would
otherwise train the wrong parts for days without a sign.

Module groups follow LLaMA-Factory's own definitions (model/model_utils/visual.py), per model type:
- qwen2_5_vl: projector = visual.merger; vision = the rest of visual; language = everything else.
- qwen3_vl: projector = visual.merger and the DeepStack mergers (visual.deepstack_merger_list), all
  new in a fresh build. LLaMA-Factory 0.9.5 files the DeepStack mergers under the vision tower, so
  such a stage runs through train/lf_train.py, which registers them as projector before LLaMA-Factory
  builds the model; the count here is what that registration trains, and the check below is what
  catches a launch that missed it."""

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


def model_config(model_dir: Path) -> dict:
    """The model folder's config.json ({} before the folder exists, as when `plan` renders a stage)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TrainableMismatch(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def _is_qwen3_vl(config: Mapping) -> bool:
    return config.get("model_type") == "qwen3_vl" and bool(_deepstack_count(config))


def _deepstack_count(config: Mapping) -> int:
    return len((config.get("vision_config") or {}).get("deepstack_visual_indexes") or [])


def param_groups(model_dir: Path) -> dict[str, int]:
    """Parameter counts per group (projector, vision, language) from the safetensors headers."""
    qwen3 = _is_qwen3_vl(model_config(model_dir))
    groups = {"projector": 0, "vision": 0, "language": 0}
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        for name, meta in _header(shard).items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in meta["shape"]:
                count *= dim
            groups[_group(name, qwen3)] += count
    return groups


def _group(name: str, qwen3: bool = False) -> str:
    name = f".{name}"
    if ".visual.merger." in name:
        return "projector"
    if qwen3 and ".visual.deepstack_merger_list." in name:
        return "projector"
    if ".visual." in name:
        return "vision"
    return "language"


def trained_groups(trainable: str) -> set[str]:
    frozen = dict(zip(("vision", "projector", "language"), TRAINABLE[trainable]))
    return {g for g, f in frozen.items() if not f}


def expected_trainable(model_dir: Path, spec: Mapping) -> int:
    groups = param_groups(model_dir)
    return sum(groups[g] for g in trained_groups(spec["trainable"]))


def moves_projector_parts(model_dir: Path, template: str) -> bool:
    """Whether the stage must run through train/lf_train.py (the DeepStack mergers registered as
    projector): a Qwen3-VL model folder, or, before init_vlm has built it (plan), a Qwen3-VL template."""
    config = model_config(model_dir)
    if config:
        return _is_qwen3_vl(config)
    return str(template).startswith("qwen3_vl")


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
