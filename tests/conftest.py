"""Shared fixtures: every test writes under its own tmp_path (CAPRL_RESULTS), never into the
repo's results/ folder."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# The embedded world at its small size (configs/hydra/world/small.yaml): the whole chain in about a
# minute. Tests of how the chain runs (resume, launchers, sweeps, trackers, tokenizing) use it;
# only tests/test_embedded_effect.py needs the full world, whose scores are what it checks.
SMALL_WORLD = ["world=small"]

# The suite runs on two pytest-xdist workers (pyproject.toml addopts): most slow tests wait on a
# single-threaded subprocess (Python start-up, LLaMA-Factory and lmms-eval imports, SLURM's
# scheduler) and keep about one core busy, so two at once use the second core. Each module is one
# unit of work, so its module and session fixtures are built once per worker, not per test. These
# modules share one resource of the machine and run on one worker, one after another: the one-node
# SLURM cluster (a second test's job would queue behind the first's and miss its time bounds) and
# torchrun's rendezvous ports (fixed master_port values; two rendezvous on one port fail).
ONE_AT_A_TIME = {"test_slurm.py", "test_pretokenize_slurm.py", "test_recaption_slurm.py",
                 "test_multinode.py", "test_orphans.py", "test_train_stage.py"}


def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduling with the scope described above: ONE_AT_A_TIME's modules one unit,
    every other module a unit of its own. (xdist's --dist loadgroup would say the same with marks,
    but it writes the group into each test's id through an attribute pytest 9 no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndSharedResources(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "slurm-and-torchrun-ports" if Path(module).name in ONE_AT_A_TIME else module

    return ModulesAndSharedResources(config, log)


def pytest_collection_modifyitems(config, items):
    """The longest work goes out first (the shared modules, then modules with slow tests), so that
    no long module starts last and keeps one worker busy while the other idles (xdist hands out
    units in collection order with --no-loadscope-reorder)."""
    slow_modules = {item.path.name for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.path.name not in ONE_AT_A_TIME, item.path.name not in slow_modules))


@pytest.fixture
def results_dir(tmp_path, monkeypatch) -> Path:
    out = tmp_path / "results"
    monkeypatch.setenv("CAPRL_RESULTS", str(out))
    return out


def harness_cmd(*args: str) -> list[str]:
    return [PYTHON, "-m", "harness", *args]


def subprocess_env(results: Path) -> dict:
    return {**os.environ, "CAPRL_RESULTS": str(results), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="session")
def shared_results(tmp_path_factory) -> Path:
    """One results folder (store) for the slow tests: the embedded world, init_vlm and the
    prepared data are built by whichever test needs them first and reused by the others,
    exactly as sweep jobs share them."""
    return tmp_path_factory.mktemp("shared") / "results"


def run_harness(results: Path, *args: str, timeout: int = 900, check: bool = True):
    """Run `python -m harness ARGS` for real; on failure show its output."""
    import subprocess

    proc = subprocess.run(harness_cmd(*args), cwd=REPO, env=subprocess_env(results), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"harness {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def stage_dir(run_dir: Path, name: str) -> Path:
    return (run_dir / "stages" / name).resolve()


def read_status(run_dir: Path) -> dict:
    import json

    return json.loads((run_dir / "status.json").read_text())


@pytest.fixture(scope="session")
def captioner_world(tmp_path_factory) -> Path:
    """A small embedded world whose tiny Qwen2.5-VL the recaption server tests serve (built once)."""
    from embedded.world import build_world

    out = tmp_path_factory.mktemp("world")
    build_world(out, {"n_train": 12, "n_bench": 8, "seed": 0, "vocab_size": 1024, "vit_text_hidden": 48,
                      "llm_hidden": 64, "llm_layers": 2}, log=lambda m: None)
    return out


def processes_naming(folder: Path) -> list[str]:
    """pid and command line of every process whose command line names `folder` (the launcher,
    torchrun and its workers all carry the stage's llamafactory.yaml)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmd:
            out.append(f"{pid}: {cmd}")
    return out


def processes_left(folder: Path, bound_s: float) -> list[str]:
    """processes_naming(folder) once it is empty, or when bound_s has passed (what is left then)."""
    deadline = time.time() + bound_s
    while (left := processes_naming(folder)) and time.time() < deadline:
        time.sleep(0.2)
    return left
