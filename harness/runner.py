"""Execute a chain: skip what is done, redo what changed or was forced, record everything.

Per run folder: config.yaml (resolved), status.json, logs/<stage>.log, and stages/<name>, a
link to the stage's folder in the content-addressed store.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.chain import resolve_world
from harness.stage import Stage, chain_fingerprints
from harness.status import RunStatus, now
from harness.store import STAGE_INFO, Store
from stagekit import StageLog, StageRun, write_json_atomic

STARTED_ENV = "CAPRL_STARTED"


class StageFailed(RuntimeError):
    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"stage {stage} failed: {cause}")
        self.stage = stage


def why_redo(store: Store, stage: Stage, fps: Mapping[str, str], dirs: Mapping[str, Path],
             forced_before: float | None = None) -> str | None:
    """Why a stage must (re)compute, or None when its output in the store is current.

    Make's rule on top of the fingerprint: an output older than one of its inputs is stale (the
    input was forced and recomputed, so the old output came from other bytes). A forced stage is
    redone unless it already was since `forced_before` (an earlier job of the same sweep)."""
    mine = store.finished_at(dirs[stage.name], fps[stage.name])
    if mine is None:
        return "not done"
    if forced_before is not None and mine < forced_before:
        return "forced"
    for name in (n for role, n in stage.inputs.items() if role not in stage.run_only_inputs):
        theirs = store.finished_at(dirs[name], fps[name])
        if theirs is not None and theirs > mine:
            return f"its input {name} was recomputed after it"
    return None


def invocation_started() -> float:
    """The start of this command: set once by the CLI in CAPRL_STARTED, inherited by every job."""
    return float(os.environ.get(STARTED_ENV) or time.time())


def _forced(stage: Stage, force: list[str]) -> bool:
    return stage.name in force or stage.kind in force


def _link(run_dir: Path, name: str, target: Path) -> None:
    link = run_dir / "stages" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    # Made aside and renamed over the old link: the nodes of a multi-node job link the same run
    # folder at the same moment, and unlink-then-link races ("File exists").
    tmp = link.with_name(f".{name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.resolve())
    os.replace(tmp, link)


class Runner:
    def __init__(self, store: Store, run_dir: Path, steps: Mapping[str, Callable[[StageRun], Any]] | None = None,
                 node_rank: int = 0, poll_seconds: float = 10.0, started: float | None = None, echo: bool = True,
                 console=None, follower_wait_s: float | None = None):
        from harness.kinds import KINDS

        self.store, self.run_dir = store, Path(run_dir)
        self.steps = steps if steps is not None else {kind: module.run for kind, module in KINDS.items()}
        self.echo = echo              # stream stage messages and tool output to stdout (-v)
        self.console = console        # harness/console.py: states and progress for the terminal
        # Multi-node: every node runs the same job; only node 0 computes and marks stages done.
        # The others join training (their torchrun ranks) and otherwise wait for node 0.
        rank = node_rank
        self.follower = rank > 0
        self.suffix = f".node{rank}" if self.follower else ""   # followers never overwrite node 0's files
        self.poll_seconds = poll_seconds
        self.follower_wait_s = follower_wait_s   # None: wait for node 0 as long as it takes
        # When this command started (shared by every job of a sweep, see harness/job.py): a forced
        # stage finished after it was already redone by an earlier job of the same sweep.
        self.started = started if started is not None else invocation_started()

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
                self._run_stage(stage, fps, dirs, status, list(force))
        except BaseException as exc:  # noqa: BLE001 - whatever stops the chain, status.json says so
            status.finish("failed", error=str(exc) if isinstance(exc, StageFailed) else f"{type(exc).__name__}: {exc}")
            raise
        status.finish("done")
        return status

    def why_redo(self, stage: Stage, fps: Mapping[str, str], dirs: Mapping[str, Path], forced: bool) -> str | None:
        return why_redo(self.store, stage, fps, dirs, forced_before=self.started if forced else None)

    def _context(self, stage: Stage, fps: Mapping[str, str], dirs: Mapping[str, Path]) -> StageRun:
        world = str(dirs["world"]) if "world" in dirs else None
        return StageRun(name=stage.name, out_dir=dirs[stage.name],
                        inputs={r: dirs[n] for r, n in stage.inputs.items()},
                        config=resolve_world(dict(stage.config), world),
                        log=StageLog(stage.name, self.run_dir / "logs" / f"{stage.name}{self.suffix}.log", self.echo),
                        settings=resolve_world(dict(stage.settings), world),
                        input_fingerprints={r: fps[n] for r, n in stage.inputs.items()},
                        cache_dir=self.store.root / "cache" / stage.kind)

    def _run_stage(self, stage: Stage, fps: Mapping[str, str], dirs: dict[str, Path], status: RunStatus,
                   force: list[str]) -> None:
        folder, fp = dirs[stage.name], fps[stage.name]
        ctx = self._context(stage, fps, dirs)
        forced = _forced(stage, force)
        if self.follower:
            return self._follow(stage, ctx, fp, status, self.why_redo(stage, fps, dirs, forced))
        if self.why_redo(stage, fps, dirs, forced) is None:
            return self._skip(stage, ctx, fp, status)
        with self.store.lock(folder, log=ctx.log):
            reason = self.why_redo(stage, fps, dirs, forced)  # another job may have finished it meanwhile
            if reason is None:
                return self._skip(stage, ctx, fp, status)
            self._execute(stage, ctx, fp, status, reason)

    def _skip(self, stage: Stage, ctx: StageRun, fp: str, status: RunStatus, note: str = "done already") -> None:
        ctx.log(f"{note} ({ctx.out_dir}), skipped")
        status.stage(stage.name, "skipped", dir=str(ctx.out_dir), fingerprint=fp)
        self._tell("finished", stage.name, "skipped", note=note)

    def _tell(self, event: str, *args, **kw) -> None:
        if self.console is not None:
            getattr(self.console, event)(*args, **kw)

    @staticmethod
    def _watcher(stage: Stage, ctx: StageRun):
        """The kind's progress reader for this stage's folder, if the kind has one."""
        from harness.kinds import KINDS

        read = getattr(KINDS.get(stage.kind), "progress", None)
        return (lambda: read(ctx.out_dir, ctx.config)) if read else None

    def _follow(self, stage: Stage, ctx: StageRun, fp: str, status: RunStatus, reason: str | None) -> None:
        """Node rank > 0: do its share of an every-node stage (training, its torchrun ranks; a
        tokenize stage on nodes, its parts), wait for node 0 to finish everything else."""
        folder = ctx.out_dir
        before = self.store.finished_at(folder, fp) if reason is not None else None
        if stage.every_node and reason is not None:
            ctx.log(f"joining {stage.name} as a follower node ({reason})")
            status.stage(stage.name, "running", dir=str(folder), fingerprint=fp, started=now())
            self._tell("started", stage.name, note="follower node", watch=self._watcher(stage, ctx))
            folder.mkdir(parents=True, exist_ok=True)
            self.steps[stage.kind](ctx)
        # Wait for node 0's mark; when the stage is being redone, for a mark newer than the old one.
        # Bounded: a node 0 that died or failed must not keep this node's allocation forever.
        waiting_since = time.time()
        while (done := self.store.finished_at(folder, fp)) is None or (reason is not None and done == before):
            self._check_node_0(stage.name, waiting_since)
            time.sleep(self.poll_seconds)
        status.stage(stage.name, "skipped", dir=str(folder), fingerprint=fp, note="done by node 0")
        self._tell("finished", stage.name, "skipped", note="done by node 0")

    def _check_node_0(self, stage: str, waiting_since: float) -> None:
        node_0 = self.run_dir / "status.json"
        try:   # node 0's status of this attempt (written after this node started) says it failed
            if node_0.stat().st_mtime >= self.started and (err := json.loads(node_0.read_text()))["state"] == "failed":
                raise RuntimeError(f"node 0 failed, so {stage} will not be done: {err['error']}")
        except (FileNotFoundError, ValueError, KeyError):
            pass
        waited = time.time() - waiting_since
        if self.follower_wait_s is not None and waited > self.follower_wait_s:
            raise RuntimeError(f"node 0 did not finish {stage} within launcher.follower_wait_s={self.follower_wait_s:g} s "
                               f"(lost? its status: {node_0}); re-run every node with the same command")

    def _execute(self, stage: Stage, ctx: StageRun, fp: str, status: RunStatus, reason: str) -> None:
        folder = ctx.out_dir
        self.store.unmark(folder)
        # A resumable stage keeps what a killed attempt left (its checkpoints) only when it was
        # simply not done; forced or stale, it starts over.
        if reason != "not done" or not stage.resumable or not folder.exists():
            self.store.clear(folder)  # a partial output of a non-resumable stage is discarded
        write_json_atomic(folder / STAGE_INFO, {"name": stage.name, "kind": stage.kind, "fingerprint": fp,
                                                "config": stage.config, "inputs": dict(stage.inputs)})
        t0 = time.time()
        ctx.log(f"running ({'' if reason == 'not done' else reason + ', '}output: {folder})")
        status.stage(stage.name, "running", dir=str(folder), fingerprint=fp, started=now())
        self._tell("started", stage.name, note="" if reason == "not done" else reason, watch=self._watcher(stage, ctx))
        try:
            info = self.steps[stage.kind](ctx) or {}
        except BaseException as exc:  # noqa: BLE001 - record, then re-raise
            with open(ctx.log.path, "a") as fh:
                traceback.print_exc(file=fh)
            seconds = round(time.time() - t0, 1)
            status.stage(stage.name, "failed", error=f"{type(exc).__name__}: {exc}", seconds=seconds)
            self._tell("finished", stage.name, "failed", seconds, note=_first_line(exc), log_path=ctx.log.path)
            if isinstance(exc, Exception):
                raise StageFailed(stage.name, exc) from exc
            raise
        seconds = round(time.time() - t0, 1)
        self.store.mark_done(folder, fp, {"name": stage.name, "finished": now(), "seconds": seconds, **info})
        status.stage(stage.name, "done", seconds=seconds)
        ctx.log(f"done in {seconds} s")
        self._tell("finished", stage.name, "done", seconds)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
