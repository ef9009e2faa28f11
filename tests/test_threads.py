"""One rule for CPU threads per process (stagekit/threads.py): N processes run at once share the
cores they were given, never above the job's cpu_threads, at least one each. Expected values are
worked out by hand from that rule."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stagekit.threads import CEILING_VAR, cores_given, processes_for, thread_env, threads_per_process


@pytest.fixture(autouse=True)
def no_ceiling(monkeypatch):
    monkeypatch.delenv(CEILING_VAR, raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)


@pytest.mark.parametrize("processes,cores,threads", [
    (1, 2, 2), (2, 2, 1), (3, 2, 1), (1, 16, 16), (4, 16, 4), (3, 16, 5), (16, 16, 1), (64, 16, 1), (0, 8, 8)])
def test_threads_per_process_share_the_cores(processes, cores, threads):
    assert threads_per_process(processes, cores) == threads
    assert threads * max(1, min(processes, cores)) <= cores


@pytest.mark.parametrize("parts,cores,at_once", [(1, 2, 1), (2, 2, 2), (3, 2, 2), (64, 16, 16), (4, 128, 4)])
def test_no_more_processes_at_once_than_cores(parts, cores, at_once):
    assert processes_for(parts, cores) == at_once


def test_the_jobs_cpu_threads_is_a_ceiling(monkeypatch):
    monkeypatch.setenv(CEILING_VAR, "2")
    assert threads_per_process(1, 16) == 2 and threads_per_process(4, 16) == 2 and threads_per_process(16, 16) == 1


def test_a_slurm_task_has_the_cpus_it_asked_for(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert cores_given() == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "")
    assert cores_given() == len(os.sched_getaffinity(0))


def test_thread_env_names_every_pool():
    assert thread_env(3) == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3",
                             "RAYON_NUM_THREADS": "3"}
    assert thread_env(1)["TOKENIZERS_PARALLELISM"] == "false"


@pytest.mark.slow   # imports torch in two fresh processes
def test_limit_threads_reaches_torch_already_imported_and_children():
    """torch imported before the limit still follows it, and so does a process started after."""
    code = ("import torch, subprocess, sys\n"
            "torch.set_num_threads(2)\n"
            "from stagekit.threads import limit_threads\n"
            "limit_threads(1)\n"
            "child = subprocess.run([sys.executable, '-c', 'import torch; print(torch.get_num_threads())'],"
            " capture_output=True, text=True).stdout.strip()\n"
            "print(torch.get_num_threads(), child)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "1"]


def test_evaluation_processes_get_their_share_of_the_cores(tmp_path, monkeypatch):
    from evaluation import build_command
    from tests.test_evaluate import PIXELS, load_set

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    _, env = build_command(tmp_path, tmp_path, benchmarks=load_set("quick"), pixels=PIXELS,
                           eval_cfg={"num_processes": 4, "device": "cuda"})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
