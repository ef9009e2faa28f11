"""The parts of a tokenize stage as one SLURM job array of CPU-only tasks, submitted with submitit
(the library Hydra's launcher=slurm submits sweep jobs with): one task per missing part; the stage
waits for them where it runs, then joins (train/pretokenize.py).

    tokenize(lf_args, out_dir, parts, run_parts=on_slurm(folder, sbatch, log))

The tasks ask for CPUs, memory and time only (tokenize=slurm, configs/hydra/tokenize/slurm.yaml),
never GPUs: preprocessing needs none, and CPU nodes are cheaper to wait for. A task that fails, is
cancelled or hits its time limit leaves its part missing (a part appears only whole); the stage
then fails naming those parts, and the same command again submits only them."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

# Variables a SLURM job hands to its processes. When the chain itself runs in a SLURM job
# (launcher=slurm), the array's tasks would inherit them through sbatch's default --export=ALL and
# the srun inside each task would read the GPU job's requests (SLURM_GPUS_PER_NODE, memory, CPU
# binding) as its own: the array is submitted as if from a plain shell.
_JOB_ENV = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")
POLL_S = 5.0   # how often the stage looks for finished tasks (submitit asks sacct at most every 60 s)


def on_slurm(folder: Path, sbatch: Mapping, log: Callable[[str], None] = print) -> Callable:
    """run_parts for train.pretokenize.tokenize: the missing parts as one array, logs in folder."""

    def run_parts(args: dict, shards: Path, todo: list[int], parts: int) -> None:
        run_array(args, shards, todo, parts, folder=Path(folder), sbatch=sbatch, log=log)

    return run_parts


def sbatch_parameters(sbatch: Mapping, tasks: int) -> dict:
    """submitit's SlurmExecutor parameters: one process per task on one node, no GPUs."""
    mem = float(sbatch["mem_gb"])
    params = {"job_name": "tokenize", "nodes": 1, "ntasks_per_node": 1, "cpus_per_task": int(sbatch["cpus_per_task"]),
              "mem": f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB",
              "time": int(sbatch["timeout_min"]), "array_parallelism": int(sbatch.get("max_parallel") or tasks)}
    if sbatch.get("partition"):
        params["partition"] = str(sbatch["partition"])
    return params


def run_array(args: dict, shards: Path, todo: list[int], parts: int, *, folder: Path, sbatch: Mapping,
              log: Callable[[str], None]) -> None:
    import submitit
    from submitit.helpers import as_completed

    from train.pretokenize import tokenize_part

    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(**sbatch_parameters(sbatch, len(todo)))
    n = len(todo)
    with _outside_any_job():
        jobs = executor.map_array(tokenize_part, [args] * n, [shards] * n, todo, [parts] * n)
    array = jobs[0].job_id.split("_")[0]
    part_of = {job.job_id: part for job, part in zip(jobs, todo)}
    log(f"SLURM array {array}: parts {todo} of {parts}, one CPU task each (logs: {folder})")
    failed: dict[int, str] = {}
    try:
        for job in as_completed(jobs, poll_frequency=POLL_S):
            part, error = part_of[job.job_id], job.exception()
            if error is None:
                log(f"part {part} done: {job.result()} rows (task {job.job_id})")
            else:
                failed[part] = f"task {job.job_id}: {_last_line(error)}"
                log(f"part {part} failed: {failed[part]}")
    except BaseException:
        # The stage is stopping (Ctrl-C, an error, its own job cancelled): its tasks stop with it.
        subprocess.call(["scancel", array])
        raise
    if failed:
        raise RuntimeError(f"tokenized parts {sorted(failed)} of {parts} failed on SLURM ("
                           + "; ".join(f"part {p}: {why}" for p, why in sorted(failed.items()))
                           + f"); logs in {folder}. Run the same command again: only these parts are redone")


@contextlib.contextmanager
def _outside_any_job() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith(_JOB_ENV)}
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__
