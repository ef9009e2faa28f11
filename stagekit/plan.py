"""What `plan` hands a stage kind to describe one of its stages (the kind's optional `describe`
and `plan_total` hooks, harness/kinds.py): the stage's resolved config and its folders, never the
harness's store or chain, so a kind prints its own details and the harness only loops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class PlanView:
    name: str                 # the stage's name in the chain
    config: dict              # its config (fingerprinted), world:// paths resolved
    settings: Mapping         # its run-only settings
    out_dir: Path             # where its output lives (or will)
    inputs: dict              # role -> the upstream stage's folder
    run_cfg: Mapping          # the whole run config
    redo: str | None          # why it would run; None when it is done
