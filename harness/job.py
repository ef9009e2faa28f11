"""The Hydra application: one job = one run of the chain in its own run folder.

Hydra only composes configs and orchestrates jobs; every tool runs in a subprocess on files
written to disk (pain point 17). In a multirun a failing job is recorded and the sweep goes on
(pain point 18); the summary and the report come at the end (harness/sweep.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness.config import CONFIG_DIR, to_plain

FAILED: list[str] = []   # jobs of this process that failed (multirun exit code)


def run_job(cfg: DictConfig) -> dict:
    from harness.chain import build_chain, run_label
    from harness.runner import Runner, StageFailed
    from harness.steps import STEPS
    from harness.store import Store

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    plain = to_plain(cfg)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plain)))
    runner = Runner(Store(Path(plain["paths"]["store_dir"])), run_dir, STEPS, plain)
    label = run_label(plain)
    try:
        status = runner.run(build_chain(plain), run_label=label, force=list(plain["force"]))
    except StageFailed as exc:
        print(f"[harness] {label} FAILED: {exc}\n[harness] logs: {run_dir / 'logs'}", file=sys.stderr, flush=True)
        if hc.mode == RunMode.MULTIRUN:
            FAILED.append(label)
            return {"state": "failed", "error": str(exc)}
        raise SystemExit(1) from None
    print(f"[harness] {label} done: {run_dir}", flush=True)
    return status.data


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def hydra_entry(cfg: DictConfig) -> dict:
    return run_job(cfg)


def launch(args: list[str]) -> int:
    """Hand the overrides to Hydra as if they were its own command line."""
    sys.argv = [sys.argv[0]] + args
    hydra_entry()
    return 1 if FAILED else 0
