"""captioner.slurm for real: the recaption stage as a 2-task SLURM job array on the one-node
cluster of scripts/slurm_local.sh, each task serving its own tiny captioner (`llamafactory-cli
api` on CPU) and captioning its shard. One task is cancelled (scancel) mid-run: the stage fails
naming it, the other shard's work is kept; the same call again submits only that shard, and the
joined journal covers every image exactly once. A shard whose server never serves fails with the
task id and the server's last log lines, within its startup time-out."""

from __future__ import annotations

import json
import re
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from recaption.slurm import caption_on_slurm, part_dir, split
from recaption.stage import JOURNAL
from tests.test_recaption_replicas import every_image
from tests.test_slurm import slurm  # noqa: F401  (the cluster fixture: starts it, or skips with the reason)

pytestmark = pytest.mark.slow
SHARDS = 2
# One CPU and a little memory per task: both tasks fit the 2-CPU node side by side.
ON_SLURM = {"shards": SHARDS, "partition": None, "gpus_per_task": 0, "cpus_per_task": 1, "mem_gb": 3,
            "timeout_min": 20, "max_requeues": 1, "max_parallel": None}


def captioner(model_dir: Path, **extra) -> dict:
    return {"name": "tiny", "model": "tiny", "temperature": 0.0, "max_tokens": 32, "concurrency": 1, "retries": 1,
            "backoff_s": 0.5, "timeout_s": 120, "progress_s": 5,
            "serve": {"model_dir": str(model_dir), "template": "qwen2_vl", "startup_timeout_s": 240}, **extra}


def attempt(values: dict, keys: list[str], root: Path, out: Path) -> tuple[Future, list[str]]:
    """caption_on_slurm in a thread, as the stage calls it: its future and its log lines."""
    lines: list[str] = []
    return ThreadPoolExecutor(1).submit(caption_on_slurm, values, ON_SLURM, keys, root, out, lines.append), lines


def array_of(lines: list[str]) -> str | None:
    found = [m.group(1) for line in list(lines) if (m := re.match(r"SLURM array (\d+): ", line))]
    return found[0] if found else None


def outcome(future: Future, timeout: float = 900):
    """The result, or the exception it raised."""
    try:
        return future.result(timeout)
    except RuntimeError as exc:
        return exc


def lines_of(path: Path) -> list[str]:
    # split at "\n" only: a caption may hold U+2028 raw, which str.splitlines() would cut at
    return [json.loads(x)["key"] for x in path.read_text().split("\n")[:-1]] if path.exists() else []


def test_a_cancelled_shard_is_the_only_one_submitted_again(captioner_world, slurm, tmp_path):  # noqa: F811
    keys, root = every_image(captioner_world), captioner_world / "images"
    values = captioner(captioner_world / "vit_source")
    shards = split(keys, SHARDS)
    assert sorted(len(s) for s in shards) != [0, len(keys)]            # both shards have work
    out = tmp_path / "out"
    out.mkdir()

    first, said = attempt(values, keys, root, out)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not lines_of(part_dir(out, 1) / JOURNAL):
        time.sleep(0.05)
    subprocess.run(["scancel", f"{array_of(said)}_1"], check=True)        # shard 1, mid-run
    got = outcome(first)
    assert sorted(lines_of(part_dir(out, 0) / JOURNAL)) == sorted(shards[0])   # the other shard: all kept
    done_1 = lines_of(part_dir(out, 1) / JOURNAL)
    assert 1 <= len(done_1) < len(shards[1])
    # scancel's SIGTERM ends the task's server at once; the task itself either dies with it (the
    # stage names the task) or, still running, lists its shard's other images as failed (the stage
    # then fails on max_failed_fraction): either way nothing of shard 1 looks done
    if isinstance(got, BaseException):
        assert str(got).startswith(f"recaption shards [1] of {SHARDS} failed on SLURM:\nshard 1, task "
                                   f"{array_of(said)}_1:"), got
    else:
        assert sorted(got.failed) == sorted(set(shards[1]) - set(done_1)), (got, said)

    second, said = attempt(values, keys, root, out)
    result = outcome(second)
    assert not isinstance(result, BaseException), (result, said)
    assert any(re.match(rf"SLURM array \d+: shards \[1\] of {SHARDS}, one replica each", x) for x in said)
    assert (result.done_before, result.succeeded, result.failed) == (len(keys) - len(shards[1]) + len(done_1),
                                                                     len(shards[1]) - len(done_1), {})
    joined = lines_of(out / JOURNAL)
    assert sorted(joined) == keys                                           # every image exactly once


def test_a_shard_whose_server_never_serves_fails_with_its_log_tail_and_task_id(captioner_world, slurm, tmp_path):  # noqa: F811
    keys, root = every_image(captioner_world)[:4], captioner_world / "images"
    values = captioner(tmp_path / "no_such_model")
    out = tmp_path / "out"
    out.mkdir()
    t0 = time.monotonic()
    error = outcome(attempt(values, keys, root, out)[0], timeout=600)
    assert isinstance(error, RuntimeError), error
    text = str(error)
    # one shard with work: an array of one task (its id without _0)
    assert re.search(r"shard 0, task \d+(_0)?: ServeFailed: llamafactory-cli api exited with 1 before serving", text), text
    assert "no_such_model" in text                                         # the server's own last lines
    assert time.monotonic() - t0 < 600


def test_the_recaption_stage_runs_as_an_array_through_the_harness(slurm, shared_results):  # noqa: F811
    """`python -m harness run captions=recaptioned_synthetic captioner.slurm=...`: the stage's 48
    images in 2 shards, each task serving the world's tiny captioner; the parts joined."""
    from tests.conftest import SMALL_WORLD, read_status, run_harness, stage_dir

    on_slurm = "captioner.slurm={shards: 2, gpus_per_task: 0, cpus_per_task: 1, mem_gb: 3, timeout_min: 20}"
    # max_tokens other than the embedded captioner's: a stage of its own, never one that
    # test_recaption_server.py's run left done in the shared store
    run_harness(shared_results, "run", "captions=recaptioned_synthetic", "until=recaption", on_slurm,
                "captioner.max_tokens=20", *SMALL_WORLD, timeout=900)
    run_dir = shared_results / "runs" / "embedded" / "tiny-recaptioned_synthetic"
    assert read_status(run_dir)["stages"]["recaption"]["state"] == "done"
    folder = stage_dir(run_dir, "recaption")
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["images"], summary["captioned"], summary["failed"]) == (48, 48, 0)
    parts = [lines_of(part_dir(folder, i) / JOURNAL) for i in range(2)]
    assert all(parts) and sorted(parts[0] + parts[1]) == sorted(lines_of(folder / JOURNAL))
