"""Resume only from a complete checkpoint.

LLaMA-Factory resumes from the highest `checkpoint-N` in its output_dir. A process killed while
saving leaves a checkpoint folder without its trainer state or weights; resuming from it fails
or hangs. Before each launch we move such folders aside (never delete: they may be inspected)."""

from __future__ import annotations

import json
import re
from pathlib import Path

_CKPT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and _CKPT.match(p.name)]
    return sorted(found, key=lambda p: int(_CKPT.match(p.name).group(1)))


def is_complete(ckpt: Path) -> bool:
    """trainer_state.json is written after weights and optimizer state, in place: a kill while it is
    written leaves it cut short, and resuming from it would fail every time. DeepSpeed keeps its
    states in global_step* folders plus a `latest` file."""
    has_weights = any((ckpt / w).exists() for w in _WEIGHTS)
    has_optim = (ckpt / "optimizer.pt").exists() or (ckpt / "latest").exists()
    return _whole_json(ckpt / "trainer_state.json") and has_weights and has_optim


def _whole_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return False
    return True


def set_aside_incomplete(output_dir: Path, log=print) -> list[Path]:
    moved = []
    for ckpt in checkpoints(output_dir):
        if not is_complete(ckpt):
            target = _unused(ckpt.with_name(f"incomplete-{ckpt.name}"))
            ckpt.rename(target)
            log(f"{ckpt.name} is incomplete (killed while saving?): moved to {target.name}, not resumed from")
            moved.append(target)
    return moved


def _unused(path: Path) -> Path:
    """A name nothing has yet: a stage killed twice while saving the same step leaves a second
    incomplete-checkpoint-N, and rename() onto a non-empty folder fails."""
    candidate, n = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{n}")
        n += 1
    return candidate


def last_complete(output_dir: Path) -> Path | None:
    done = [c for c in checkpoints(output_dir) if is_complete(c)]
    return done[-1] if done else None
