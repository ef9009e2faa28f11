"""The Hydra application: one job = one run of the chain in its own run folder.

Hydra only composes configs and orchestrates jobs; every tool runs in a subprocess on files
written to disk (pain point 17). In a multirun a failing job is recorded and the sweep goes on
(pain point 18); the summary and the report come at the end (harness/sweep.py)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness.config import CONFIG_DIR, to_plain
from harness.runner import STARTED_ENV, node_rank
from harness.validate import force_list

FAILED: list[str] = []   # jobs of this process that failed (multirun exit code)


def run_job(cfg: DictConfig) -> dict:
    from harness.chain import build_chain, run_label
    from harness.runner import Runner, StageFailed
    from harness.status import RunStatus
    from harness.steps import STEPS
    from harness.store import Store

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    plain = to_plain(cfg)
    rank = node_rank(plain)
    config_name = "config.yaml" if rank == 0 else f"config.node{rank}.yaml"   # node 0's copy stays
    (run_dir / config_name).write_text(OmegaConf.to_yaml(OmegaConf.create(plain)))
    runner = Runner(Store(Path(plain["paths"]["store_dir"])), run_dir, STEPS, plain)
    label = run_label(plain)
    chain = None
    try:
        chain = build_chain(plain)
        status = runner.run(chain, run_label=label, force=force_list(plain["force"]))
    except Exception as exc:  # noqa: BLE001 - in a sweep, one job's failure must not stop the others
        reason = str(exc) if isinstance(exc, StageFailed) else f"{type(exc).__name__}: {exc}"
        if chain is None:  # failed before the runner kept a status: status.json must still say so
            RunStatus(run_dir, label, []).finish("failed", error=reason)
        print(f"[harness] {label} FAILED: {reason}\n[harness] logs: {run_dir / 'logs'}", file=sys.stderr, flush=True)
        if hc.mode == RunMode.MULTIRUN:
            FAILED.append(label)
            return {"state": "failed", "error": reason}
        raise SystemExit(1) from None
    print(f"[harness] {label} done: {run_dir}", flush=True)
    return status.data


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def hydra_entry(cfg: DictConfig) -> dict:
    return run_job(cfg)


def launch(args: list[str]) -> int:
    """Hand the overrides to Hydra as if they were its own command line."""
    sys.argv = [sys.argv[0]] + args
    os.environ.setdefault(STARTED_ENV, repr(time.time()))  # one start for every job of a sweep
    hydra_entry()
    from harness.sweep import SWEEP_FAILED

    return 1 if FAILED or SWEEP_FAILED else 0
