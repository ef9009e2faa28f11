"""One stage's run as its kind's `run` function sees it: explicit folders and settings, nothing
global. The harness fills it from the chain and the store; a test can build one by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class StageLog:
    """`log(msg)` prints `[stage] msg` and appends it to the stage's log file; `path` is that file,
    where the stage's subprocesses append their output too."""

    def __init__(self, stage: str, path: Path, echo: bool = True):
        self.stage, self.path, self.echo = stage, Path(path), echo

    def __call__(self, msg: str) -> None:
        line = f"[{self.stage}] {msg}"
        if self.echo:
            print(line, flush=True)
        with open(self.path, "a") as fh:
            fh.write(line + "\n")


@dataclass
class StageRun:
    name: str                               # the stage's name in the chain, e.g. train.sft
    out_dir: Path                           # the stage writes only here
    inputs: Mapping[str, Path]              # role -> upstream stage folder
    config: Mapping[str, Any]               # what decides the output (fingerprinted)
    log: StageLog                           # log(msg); log.path is where subprocess output goes
    settings: Mapping[str, Any] = field(default_factory=dict)   # run-only: how, not what
    input_fingerprints: Mapping[str, str] = field(default_factory=dict)   # role -> fingerprint
    cache_dir: Path | None = None           # a folder shared by every stage of this kind (caches)


def run_label(cfg: Mapping[str, Any]) -> str:
    """The run's name in logs, records and tables: experiment / backbone - caption source (a Prism
    run scores a captioner: experiment / captioner)."""
    if cfg.get("pipeline") == "prism":
        return f"{cfg['experiment_name']}/{cfg['captioner']['name']}"
    return f"{cfg['experiment_name']}/{cfg['backbone']['name']}-{cfg['captions']['name']}"


def unknown_keys(section: str, given: Mapping[str, Any], allowed: set[str] | tuple[str, ...]) -> list[str]:
    """A problem line for each key of `given` a schema does not know, naming the valid keys."""
    extra = sorted(set(given) - set(allowed))
    return [f"{section}: unknown key{'s' if len(extra) > 1 else ''} {', '.join(extra)}; valid keys: "
            f"{', '.join(sorted(allowed))}"] if extra else []


def run_identity(cfg: Mapping[str, Any]) -> dict:
    """Who this run is, for trackers and status: the experiment, the job (its run folder's name:
    backbone-captions for one run, the swept values in a sweep), the group (the sweep, or the
    experiment for a single run) and the labels under test. Run-only: never fingerprinted."""
    job = cfg.get("job") or {}
    return {"experiment": cfg["experiment_name"],
            "job": job.get("name") or f"{cfg['backbone']['name']}-{cfg['captions']['name']}",
            "group": job.get("group") or cfg["experiment_name"],
            "caption_source": cfg["captions"]["label"], "backbone": cfg["backbone"]["label"]}
