"""Running jobs: one job = one run of the chain in its own run folder; a multirun = one job per
combination of sweep values, through Hydra's sweeper and launcher (local or SLURM).

Hydra only composes configs and orchestrates jobs; every tool runs in a subprocess on files
written to disk. Each job returns its status (it never raises), so a failing job of a sweep does
not stop the others, and the exit code and the sweep's summary and report are computed from
what the jobs returned (harness/sweep.py)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness.config import CONFIG_NAME, env_flag, hydra_app, to_plain
from harness.console import Console
from harness.runner import STARTED_ENV
from harness.validate import force_list
from stagekit.threads import set_ceiling

# -v/--verbose: the CLI sets it; every job (a SLURM job too) inherits it from the environment.
VERBOSE_ENV = "CAPRL_VERBOSE"


def use_cpu_threads(threads: int | None) -> None:
    """`cpu_threads`: this process and every process it starts from now on use at most `threads`
    CPU threads per pool (stagekit/threads.py applies the same ceiling wherever a stage shares its
    cores between processes); None leaves the machine's default."""
    set_ceiling(threads)


def quiet_progress_bars() -> None:
    """Stages that run in this process (the world, checks of saved weights, reports) load and save
    models through transformers and write datasets through `datasets`, and each draws a progress
    bar on the console. Off here, in this process only (an environment variable would reach the
    tools, whose logs keep their bars); -v leaves them on. Hugging Face's switch is read by
    transformers when it is imported, and set on it directly when it already is; `datasets` has a
    switch of its own (importing it here costs ~0.6 s once per job)."""
    import datasets
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    datasets.disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def run_job(cfg: DictConfig) -> dict:
    """Hydra's task function: run the chain; return {"state", "error", "run_dir", ...}."""
    from harness.chain import build_chain, run_label
    from harness.runner import Runner, StageFailed
    from harness.status import RunStatus
    from harness.store import Store
    from train.launch import node_rank

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    plain = to_plain(cfg)
    # The job's identity for trackers and status (run-only: no stage fingerprints it): its folder's
    # name, grouped by the folder that holds it (one sweep, or the experiment's single runs).
    results = Path(plain["paths"]["results_dir"])
    group = run_dir.parent.relative_to(results) if run_dir.parent.is_relative_to(results) else run_dir.parent.name
    plain["job"] = {"name": run_dir.name, "group": str(group)}
    use_cpu_threads(plain.get("cpu_threads"))
    rank = node_rank(plain["launcher"])
    config_name = "config.yaml" if rank == 0 else f"config.node{rank}.yaml"   # node 0's copy stays
    (run_dir / config_name).write_text(OmegaConf.to_yaml(OmegaConf.create(plain)))
    verbose = env_flag(VERBOSE_ENV)
    if not verbose:
        quiet_progress_bars()
    launcher = plain["launcher"]   # a follower checks on node 0 as often as the nodes beat
    label = run_label(plain)
    chain = None
    try:
        chain = build_chain(plain)
        with Console(label, [s.name for s in chain], verbose=verbose) as console:
            runner = Runner(Store(Path(plain["paths"]["store_dir"])), run_dir, node_rank=rank, echo=verbose,
                            console=console, poll_seconds=min(10.0, float(launcher["heartbeat_s"])),
                            follower_wait_s=launcher["follower_wait_s"])
            status = runner.run(chain, run_label=label, force=force_list(plain["force"]))
            _show_table(console, status.data)
    except Exception as exc:  # noqa: BLE001 - in a sweep, one job's failure must not stop the others
        reason = str(exc) if isinstance(exc, StageFailed) else f"{type(exc).__name__}: {exc}"
        if chain is None:  # failed before the runner kept a status: status.json must still say so
            RunStatus(run_dir, label, []).finish("failed", error=reason)
        print(f"[harness] {label} FAILED: {reason.splitlines()[0]}\n[harness] logs: {run_dir / 'logs'}",
              file=sys.stderr, flush=True)
        return {"state": "failed", "error": reason, "run": label, "run_dir": str(run_dir)}
    print(f"[harness] {label} done: {run_dir}", flush=True)
    return {**status.data, "run_dir": str(run_dir)}


def _show_table(console, status: dict) -> None:
    """The run's results table (the report stage's table.md), the one thing the user came for."""
    report = status["stages"].get("report", {}).get("dir")
    table = Path(report) / "table.md" if report else None
    if table is not None and table.exists():
        console.message(table.read_text().rstrip())


def launch(overrides: list[str], multirun: bool) -> int:
    """Run one job, or every job of a sweep; 0 when every job finished."""
    os.environ.setdefault(STARTED_ENV, repr(time.time()))  # one start for every job of a sweep
    app = hydra_app()
    if not multirun:
        ret = app.run(CONFIG_NAME, run_job, [*overrides, "hydra.mode=RUN"])
        return 0 if ret.return_value["state"] == "done" else 1
    from harness.sweep import finish_sweep

    started = time.time()
    sweep_dir = Path(str(app.compose_config(CONFIG_NAME, overrides, run_mode=RunMode.MULTIRUN).hydra.sweep.dir))
    try:
        returns = app.multirun(CONFIG_NAME, run_job, [*overrides, "hydra.mode=MULTIRUN"])
    except Exception as exc:  # noqa: BLE001 - e.g. submitit: a SLURM job was cancelled or lost its node
        # No job returned a value (one never will), but every job's status file is on disk: the
        # summary still says how far each got, and re-running the sweep resumes them.
        print(f"[harness] the launcher stopped: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return finish_sweep(sweep_dir, [{"state": "failed", "error": str(exc)}], started)
    jobs = [_job_result(r) for batch in returns for r in batch]
    return finish_sweep(sweep_dir, jobs, started)


def _job_result(ret) -> dict:
    """A job's returned status; a job that raised anyway (a launcher failure) counts as failed."""
    try:
        return ret.return_value
    except Exception as exc:  # noqa: BLE001 - JobReturn re-raises the job's exception here
        return {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
