"""Execute a chain: skip what is done, redo what changed or was forced, record everything.

Per run folder: config.yaml (resolved), status.json, logs/<stage>.log, and stages/<name>, a
link to the stage's folder in the content-addressed store.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.chain import resolve_world
from harness.stage import Stage, chain_fingerprints
from harness.status import RunStatus, now
from harness.store import STAGE_INFO, Store, write_json_atomic


@dataclass
class StageContext:
    stage: Stage
    out_dir: Path                 # the stage writes only here
    inputs: dict[str, Path]       # role -> upstream stage folder
    config: dict                  # stage config with world:// resolved
    log_path: Path
    run_dir: Path
    run_cfg: dict                 # the whole resolved run config (launcher ranks, paths, ...)

    def log(self, msg: str) -> None:
        line = f"[{self.stage.name}] {msg}"
        print(line, flush=True)
        with open(self.log_path, "a") as fh:
            fh.write(line + "\n")


class StageFailed(RuntimeError):
    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"stage {stage} failed: {cause}")
        self.stage = stage


def _forced(stage: Stage, force: list[str]) -> bool:
    return stage.name in force or stage.kind in force


def _link(run_dir: Path, name: str, target: Path) -> None:
    link = run_dir / "stages" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve())


class Runner:
    def __init__(self, store: Store, run_dir: Path, steps: Mapping[str, Callable[[StageContext], Any]],
                 run_cfg: dict | None = None, poll_seconds: float = 10.0):
        self.store, self.run_dir, self.steps = store, Path(run_dir), steps
        self.run_cfg = run_cfg or {}
        # Multi-node: every node runs the same job; only node 0 computes and marks stages done.
        # The others join training (their torchrun ranks) and otherwise wait for node 0.
        rank = int(self.run_cfg.get("launcher", {}).get("node_rank", 0) or 0)
        self.follower = rank > 0
        self.suffix = f".node{rank}" if self.follower else ""   # followers never overwrite node 0's files
        self.poll_seconds = poll_seconds

    def run(self, chain: list[Stage], *, run_label: str, force: list[str] = ()) -> RunStatus:
        fps = chain_fingerprints(chain)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        status = RunStatus(self.run_dir, run_label, [s.name for s in chain], suffix=self.suffix)
        dirs: dict[str, Path] = {}
        for stage in chain:
            dirs[stage.name] = self.store.dir_for(stage.kind, fps[stage.name])
            _link(self.run_dir, stage.name, dirs[stage.name])
        try:
            for stage in chain:
                self._run_stage(stage, fps[stage.name], dirs, status, list(force))
        except StageFailed as exc:
            status.finish("failed", error=str(exc))
            raise
        status.finish("done")
        return status

    def _run_stage(self, stage: Stage, fp: str, dirs: dict[str, Path], status: RunStatus, force: list[str]) -> None:
        folder = dirs[stage.name]
        ctx = StageContext(stage, folder, {r: dirs[n] for r, n in stage.inputs.items()},
                           resolve_world(dict(stage.config), str(dirs["world"]) if "world" in dirs else None),
                           self.run_dir / "logs" / f"{stage.name}{self.suffix}.log", self.run_dir, self.run_cfg)
        forced = _forced(stage, force)
        if self.follower:
            return self._follow(ctx, fp, status)
        if self.store.is_done(folder, fp) and not forced:
            ctx.log(f"done already ({folder}), skipped")
            status.stage(stage.name, "skipped", dir=str(folder), fingerprint=fp)
            return
        with self.store.lock(folder, log=ctx.log):
            if self.store.is_done(folder, fp) and not forced:  # another job finished it meanwhile
                status.stage(stage.name, "skipped", dir=str(folder), fingerprint=fp)
                return
            self._execute(ctx, fp, status, forced)

    def _follow(self, ctx: StageContext, fp: str, status: RunStatus) -> None:
        """Node rank > 0: take part in training, wait for node 0 to finish everything else."""
        folder = ctx.out_dir
        if ctx.stage.kind == "train" and not self.store.is_done(folder, fp):
            ctx.log("joining training as a follower node")
            status.stage(ctx.stage.name, "running", dir=str(folder), fingerprint=fp, started=now())
            folder.mkdir(parents=True, exist_ok=True)
            self.steps[ctx.stage.kind](ctx)
        while not self.store.is_done(folder, fp):
            time.sleep(self.poll_seconds)
        status.stage(ctx.stage.name, "skipped", dir=str(folder), fingerprint=fp, note="done by node 0")

    def _execute(self, ctx: StageContext, fp: str, status: RunStatus, forced: bool) -> None:
        stage, folder = ctx.stage, ctx.out_dir
        self.store.unmark(folder)
        if forced or not stage.resumable or not folder.exists():
            self.store.clear(folder)  # a partial output of a non-resumable stage is discarded
        write_json_atomic(folder / STAGE_INFO, {"name": stage.name, "kind": stage.kind, "fingerprint": fp,
                                                "config": stage.config, "inputs": dict(stage.inputs)})
        t0 = time.time()
        ctx.log(f"running ({'forced, ' if forced else ''}output: {folder})")
        status.stage(stage.name, "running", dir=str(folder), fingerprint=fp, started=now())
        try:
            info = self.steps[stage.kind](ctx) or {}
        except BaseException as exc:  # noqa: BLE001 - record, then re-raise
            with open(ctx.log_path, "a") as fh:
                traceback.print_exc(file=fh)
            status.stage(stage.name, "failed", error=f"{type(exc).__name__}: {exc}", seconds=round(time.time() - t0, 1))
            if isinstance(exc, Exception):
                raise StageFailed(stage.name, exc) from exc
            raise
        seconds = round(time.time() - t0, 1)
        self.store.mark_done(folder, fp, {"name": stage.name, "finished": now(), "seconds": seconds, **info})
        status.stage(stage.name, "done", seconds=seconds)
        ctx.log(f"done in {seconds} s")
