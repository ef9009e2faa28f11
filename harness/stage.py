"""A stage of the chain: what it is, what it reads, and the fingerprint that names its output.

A stage's output is determined by its kind (and that kind's code version), its own resolved
config, and the fingerprints of the stages it reads. Two sweep jobs that agree on all three
(init_vlm, alignment, SFT data prep, ...) get the same fingerprint and therefore share one
output folder in the store. Run-only settings travel beside the config, outside the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Stage:
    name: str                      # unique in a run, e.g. "train.alignment"
    kind: str                      # which kind module runs it (harness/kinds.py)
    config: Mapping[str, Any]      # plain, JSON-able: everything that decides the output
    inputs: Mapping[str, str] = field(default_factory=dict)  # role -> upstream stage name
    resumable: bool = False        # True: a half-done folder is resumed, not wiped
    summary: str = ""              # one line for `plan`
    settings: Mapping[str, Any] = field(default_factory=dict)  # run-only: never fingerprinted
    version: int = 1               # the kind's code version
    every_node: bool = False       # multi-node: nodes > 0 do their share too, not only wait for node 0
    # input roles that change how fast the stage runs, not what it writes (train's `tokenized`: the
    # rows LLaMA-Factory would have tokenized itself): kept out of the fingerprint
    run_only_inputs: tuple[str, ...] = ()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def fingerprint(stage: Stage, upstream: Mapping[str, str]) -> str:
    """sha256 over kind, code version, config and the upstream fingerprints (by role)."""
    payload = {
        "kind": stage.kind,
        "version": stage.version,
        "config": stage.config,
        "inputs": {role: upstream[name] for role, name in sorted(stage.inputs.items())
                   if role not in stage.run_only_inputs},
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def chain_fingerprints(stages: list[Stage]) -> dict[str, str]:
    """Fingerprints of a topologically ordered chain."""
    fps: dict[str, str] = {}
    for stage in stages:
        missing = [name for name in stage.inputs.values() if name not in fps]
        if missing:
            raise ValueError(f"stage {stage.name} reads {missing} before they are defined")
        fps[stage.name] = fingerprint(stage, fps)
    return fps
