"""How many CPU threads each process of a stage may use: one rule for every stage kind.

Several libraries start a thread pool per process, each sized to the whole machine by default:
torch's intra-op pool (OpenMP/MKL), OpenBLAS, the tokenizers' Rayon pool. A stage that runs N
processes side by side (tokenize parts, data_prep workers, evaluation processes) then runs N x
cores threads on `cores` cores: they take turns, and the CPU time per row rises while nothing runs
faster. The rule here: the cores this process was given (its CPU affinity, or SLURM's
cpus_per_task inside a SLURM task), shared evenly between the processes it runs at once, never
above the job's `cpu_threads` when one is set, and at least one.

    threads = threads_per_process(processes)      # in the parent, before starting them
    limit_threads(threads)                        # in each child, first thing
    env = {**os.environ, **thread_env(threads)}   # or for a subprocess, through its environment
"""

from __future__ import annotations

import os
import sys

# Where the libraries read their pool sizes when they start one. torchrun keeps an OMP_NUM_THREADS
# it finds rather than setting its own.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")
# The job's `cpu_threads`, exported by the harness so that every process of the job, at any depth,
# applies the same ceiling.
CEILING_VAR = "CAPRL_CPU_THREADS"


def cores_given() -> int:
    """The cores this process may run on: SLURM's cpus_per_task inside a SLURM task (what the
    allocation pays for, whatever the node has), else the CPU affinity mask, else the CPU count."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def ceiling() -> int | None:
    """The job's `cpu_threads` (None: no ceiling)."""
    value = os.environ.get(CEILING_VAR, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def threads_per_process(processes: int, cores: int | None = None) -> int:
    """Threads for each of `processes` processes run at once on `cores` (default: cores_given())."""
    cores = cores_given() if cores is None else int(cores)
    share = max(1, cores // max(1, int(processes)))
    cap = ceiling()
    return min(share, cap) if cap else share


def processes_for(parts: int, cores: int | None = None) -> int:
    """How many of `parts` independent pieces of CPU work to run at once: no more than the cores,
    since a part beyond them only takes turns with the others."""
    cores = cores_given() if cores is None else int(cores)
    return max(1, min(int(parts), cores))


def thread_env(threads: int) -> dict[str, str]:
    """The environment that gives a process started with it `threads` threads per pool."""
    env = {name: str(threads) for name in THREAD_VARS}
    if threads == 1:
        env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def limit_threads(threads: int) -> None:
    """This process, and every process it starts from now on, uses `threads` threads per pool.

    The environment covers pools not yet started; torch (when imported) and the pools already
    loaded (threadpoolctl finds OpenMP and BLAS libraries in this process) are set directly."""
    os.environ.update(thread_env(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


def set_ceiling(threads: int | None) -> None:
    """The job's `cpu_threads`: this process and all it starts use at most `threads` per pool."""
    if threads is None:
        return
    os.environ[CEILING_VAR] = str(threads)
    limit_threads(threads)
