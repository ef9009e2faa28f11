"""Captioning as one SLURM job array (`captioner.slurm`): every task serves its own replica of the
captioner (`serve`: `llamafactory-cli api`, with `infer_backend: vllm` for vLLM's engine) and
captions its shard, a stable split of the image keys (crc32 of the key), journaling to its own
part (parts/<shard>/journal.jsonl). The stage waits where it runs, joins the parts into its
journal, and is done only when every image is captioned or listed in failures.jsonl.

- A re-run submits only the shards with missing images; a task resumes from its part's journal.
- A task killed by its time limit is requeued by submitit (up to `max_requeues` times) and
  resumes from its journal the same way.
- A task that fails (its server never serving, cancelled, out of memory) is named with its task
  id and the error (for a server: the last lines of its log); the other shards' work is kept.

Submitted with submitit, as tokenize=slurm is (train/pretokenize_slurm.py). Run-only: where the
captions were made changes no caption and no fingerprint."""

from __future__ import annotations

import asyncio
import subprocess
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

SLURM_DEFAULTS: dict[str, Any] = dict(
    shards=2,             # array tasks, each serving one replica
    partition=None,       # null: the cluster's default partition
    gpus_per_task=1,      # 0 on CPU (the embedded tiny captioner)
    cpus_per_task=8,
    mem_gb=64,
    timeout_min=1440,     # per task; one killed by it is requeued and resumes from its journal
    max_requeues=3,
    max_parallel=None,    # tasks running at once (sbatch --array=...%K); null: all
)
POLL_S = 5.0
PARTS = "parts"


def shard_of(key: str, shards: int) -> int:
    """Stable across runs, machines and Python versions (unlike hash())."""
    return zlib.crc32(key.encode()) % shards


def split(keys: list[str], shards: int) -> list[list[str]]:
    out: list[list[str]] = [[] for _ in range(shards)]
    for key in keys:
        out[shard_of(key, shards)].append(key)
    return out


def part_dir(out_dir: Path, shard: int) -> Path:
    return Path(out_dir) / PARTS / f"{shard:04d}"


class CaptionShard:
    """One array task: serve, caption the shard's missing images, journal them. With a
    `checkpoint` (submitit's Checkpointable protocol): at its time limit submitit requeues the
    same call, which resumes from the journal."""

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)

    def __call__(self, values: dict, keys: list[str], image_root: str, folder: str, samples: int,
                 empty_ok: bool) -> dict:
        from recaption.endpoint import parse_endpoint
        from recaption.stage import caption_images

        ep = parse_endpoint(values)
        Path(folder).mkdir(parents=True, exist_ok=True)
        out = asyncio.run(caption_images(ep, keys, Path(image_root), Path(folder), log=lambda m: print(m, flush=True),
                                         samples=samples, empty_ok=empty_ok))
        return {"succeeded": out.succeeded, "failed": out.failed, "tokens": out.tokens}


def sbatch_parameters(slurm: Mapping, tasks: int) -> dict:
    mem = float(slurm["mem_gb"])
    params = {"job_name": "recaption", "nodes": 1, "ntasks_per_node": 1, "cpus_per_task": int(slurm["cpus_per_task"]),
              "mem": f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB",
              "time": int(slurm["timeout_min"]), "array_parallelism": int(slurm.get("max_parallel") or tasks)}
    if int(slurm.get("gpus_per_task") or 0):
        params["gpus_per_node"] = int(slurm["gpus_per_task"])
    if slurm.get("partition"):
        params["partition"] = str(slurm["partition"])
    return params


def caption_on_slurm(values: Mapping, slurm: Mapping, keys: list[str], image_root: Path, out_dir: Path,
                     log: Callable[[str], None], samples: int = 1, empty_ok: bool = False):
    """Every shard with missing images as one array; then the parts joined into out_dir's
    journal. The engine's account of the whole; raises naming the tasks that failed."""
    import submitit
    from submitit.helpers import as_completed

    from recaption.engine import Outcome
    from recaption.journal import load_keys
    from train.pretokenize_slurm import _outside_any_job

    shards = split(keys, int(slurm["shards"]))
    missing = {i: [k for k in ks if k not in load_keys(part_dir(out_dir, i) / "journal.jsonl")]
               for i, ks in enumerate(shards)}
    todo = [i for i, ks in missing.items() if ks]
    out = Outcome(total=len(keys), done_before=len(keys) - sum(len(missing[i]) for i in todo))
    task_values = {k: v for k, v in values.items() if k != "slurm"}   # the task serves and captions here
    failed_tasks: dict[int, str] = {}
    t0 = time.monotonic()
    if todo:
        folder = Path(out_dir) / "slurm"
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=int(slurm["max_requeues"]))
        executor.update_parameters(**sbatch_parameters(slurm, len(todo)))
        n = len(todo)
        with _outside_any_job():
            jobs = executor.map_array(CaptionShard(), [task_values] * n, [shards[i] for i in todo],
                                      [str(image_root)] * n, [str(part_dir(out_dir, i)) for i in todo],
                                      [samples] * n, [empty_ok] * n)
        array = jobs[0].job_id.split("_")[0]
        shard_of_job = {job.job_id: i for job, i in zip(jobs, todo)}
        log(f"SLURM array {array}: shards {todo} of {len(shards)}, one replica each (logs: {folder})")
        try:
            for job in as_completed(jobs, poll_frequency=POLL_S):
                i, error = shard_of_job[job.job_id], job.exception()
                if error is None:
                    got = job.result()
                    out.failed.update(got["failed"])
                    log(f"shard {i} done: {got['succeeded']} captioned, {len(got['failed'])} failed (task {job.job_id})")
                else:
                    failed_tasks[i] = f"task {job.job_id}: {last_lines(error)}"
                    log(f"shard {i} failed: {failed_tasks[i]}")
        except BaseException:
            subprocess.call(["scancel", array])   # the stage is stopping: its tasks stop with it
            raise
    out.succeeded = join(out_dir, len(shards)) - out.done_before
    out.seconds = time.monotonic() - t0
    if failed_tasks:
        raise RuntimeError(f"recaption shards {sorted(failed_tasks)} of {len(shards)} failed on SLURM:\n"
                           + "\n".join(f"shard {i}, {why}" for i, why in sorted(failed_tasks.items()))
                           + "\nRun the same command again: only the shards with missing images are submitted")
    return out


def join(out_dir: Path, shards: int) -> int:
    """The parts' journals as the stage's journal (rewritten whole: a part only grows); returns
    how many images it holds."""
    from recaption.journal import repair_tail

    tmp = Path(out_dir) / ".journal.jsonl.tmp"
    held = 0
    with open(tmp, "wb") as dst:
        for i in range(shards):
            path = part_dir(out_dir, i) / "journal.jsonl"
            if not path.exists():
                continue
            repair_tail(path)
            data = path.read_bytes()
            dst.write(data)
            held += sum(1 for line in data.splitlines() if line.strip())
    tmp.replace(Path(out_dir) / "journal.jsonl")
    return held


def last_lines(error: BaseException, n: int = 15) -> str:
    """The end of a task's error; for a server that never served, from its ServeFailed on (the
    server's own last lines, whose cause is above the traceback's last lines)."""
    text = str(error).strip()
    at = text.find("ServeFailed: ")
    if at >= 0:
        return text[at:][:4000]
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-n:])[-3000:] if lines else type(error).__name__
