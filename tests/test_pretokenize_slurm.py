"""tokenize=slurm for real: a tokenize stage's parts as one SLURM job array of CPU-only tasks on
the one-node cluster of scripts/slurm_local.sh, joined where the stage runs.

The first attempt runs the array one task at a time and is cancelled (scancel) once part 0 is
written: the stage fails naming the missing parts, and nothing of a killed part looks done. The
second attempt submits only the missing parts. The joined dataset equals the one the local
processes write from the same rows, file for file (the Arrow data byte for byte) and row for
row; and through the harness, tokenize=slurm and tokenize=local are the same stage (one
fingerprint: the local run finds the SLURM run's output done). And from inside a launcher=slurm
job, as node 0 of a GPU job would: the array is submitted from the job, asks for CPUs and memory
only, and the chain goes on once it is joined. ~5 min.
Run: .venv/bin/python -m pytest tests/test_pretokenize_slurm.py -q"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import SMALL_WORLD, run_harness
from tests.test_multinode import wait_for
from tests.test_pretokenize import lf_yaml
from tests.test_slurm import final_states, sweep
from tests.test_slurm import slurm  # noqa: F401  (the cluster fixture: starts it, or skips with the reason)
from tests.test_train_packing import world  # noqa: F401  (world: the small embedded world fixture)

pytestmark = pytest.mark.slow
PARTS = 3
# One CPU and a little memory per task: two tasks fit the 2-CPU node side by side.
SBATCH = {"name": "slurm", "partition": None, "cpus_per_task": 1, "mem_gb": 2, "timeout_min": 20}


def arrow_files(dataset: Path) -> dict[str, bytes]:
    return {str(p.relative_to(dataset)): p.read_bytes() for p in sorted(dataset.rglob("*.arrow"))}


class Attempt:
    """tokenize(..., run_parts=on_slurm(...)) in a thread, as the stage calls it; its log lines."""

    def __init__(self, args: dict, out: Path, slurm_dir: Path, sbatch: dict):
        from train.pretokenize import tokenize
        from train.pretokenize_slurm import on_slurm

        self.lines: list[str] = []
        self.result: dict | BaseException | None = None

        def go():
            try:
                self.result = tokenize(args, out, PARTS, on_slurm(slurm_dir, sbatch, self.lines.append))
            except BaseException as exc:  # noqa: BLE001 - the test reads it
                self.result = exc

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()

    def array(self) -> str | None:
        found = [m.group(1) for line in list(self.lines) if (m := re.match(r"SLURM array (\d+): ", line))]
        return found[0] if found else None

    def finish(self, timeout: float = 600):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), self.lines
        return self.result


def test_slurm_array_equals_local_processes_and_a_rerun_redoes_only_missing_parts(world, slurm, tmp_path):  # noqa: F811
    from datasets import load_from_disk

    from train.pretokenize import part_dir, shards_dir, tokenize, tokenize_args

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")   # exported to the array's tasks too
    args = tokenize_args(lf_yaml(*world, packing=False), tmp_path / "work")
    local = tokenize(args, tmp_path / "local", PARTS)
    out, folder = tmp_path / "slurm" / "dataset", tmp_path / "slurm" / "submitit"

    first = Attempt(args, out, folder, {**SBATCH, "max_parallel": 1})
    wait_for(first.array, 120, "the array's submission")
    shards = shards_dir(out)
    wait_for(lambda: part_dir(shards, 0, PARTS).exists() or first.result is not None, 600, "part 0")
    subprocess.run(["scancel", first.array()], check=True)
    error = first.finish()
    print("first attempt:", *first.lines, sep="\n  ")
    assert isinstance(error, RuntimeError), error
    done = sorted(int(m.group(1)) for d in shards.glob("part-*") if (m := re.match(r"part-(\d+)-of-", d.name)))
    missing = [p for p in range(PARTS) if p not in done]
    assert 0 in done and missing, done
    assert str(error).startswith(f"tokenized parts {missing} of {PARTS} failed on SLURM (")
    assert "Run the same command again: only these parts are redone" in str(error)
    assert not out.exists()
    # what a task killed mid-part left is hidden and never counts
    assert all(d.name.startswith(".") for d in shards.iterdir() if not re.fullmatch(r"part-\d+-of-\d+", d.name))

    second = Attempt(args, out, folder, SBATCH)
    summary = second.finish()
    print("second attempt:", *second.lines, sep="\n  ")
    assert isinstance(summary, dict), summary
    assert second.lines[0].startswith(f"SLURM array {second.array()}: parts {missing} of {PARTS}, ")
    assert summary == {**local, "reused": len(done), "cpu_s": summary["cpu_s"]}
    assert summary["rows_in"] == summary["rows_out"] == 48 and not shards.exists()

    ours, theirs = load_from_disk(str(out))["train"], load_from_disk(str(tmp_path / "local"))["train"]
    assert ours.column_names == theirs.column_names and len(ours) == len(theirs) == 48
    for column in ours.column_names:
        assert ours[column] == theirs[column], column
    assert arrow_files(out) == arrow_files(tmp_path / "local") and arrow_files(out)


def test_harness_tokenize_on_slurm_is_the_same_stage_as_local(world, slurm, shared_results):  # noqa: F811
    """The stage through the harness: tokenize=slurm submits the array and joins; tokenize=local
    afterwards finds the same fingerprint done and skips it."""
    on_slurm = ["train.common.pretokenize=2", "until=tokenize.alignment", "tokenize=slurm",
                "tokenize.cpus_per_task=1", "tokenize.mem_gb=2", "tokenize.timeout_min=20", *SMALL_WORLD]
    # forced: another test of the session (tokenize=nodes) may have tokenized the same rows (one fingerprint)
    proc = run_harness(shared_results, "run", "-v", *on_slurm, "force=[tokenize.alignment]", timeout=900)
    assert re.search(r"\[tokenize.alignment\] SLURM array \d+: parts \[0, 1\] of 2, ", proc.stdout), proc.stdout[-3000:]
    assert "tokenized 48 rows into 48 in 2 parts (slurm; 0 kept from an earlier attempt)" in proc.stdout
    store = shared_results / "store" / "tokenize"
    (done,) = [d for d in store.iterdir() if (d / ".done.json").exists()
               and json.loads((d / ".stage.json").read_text())["name"] == "tokenize.alignment"]
    assert (done / "dataset" / "dataset_dict.json").exists() and not (done / "dataset.parts").exists()
    again = run_harness(shared_results, "run", "-v", "train.common.pretokenize=2", "until=tokenize.alignment",
                        *SMALL_WORLD)
    assert re.search(r"\[tokenize.alignment\] done already \(.*/tokenize/" + done.name + r"\), skipped", again.stdout)


def sacct_field(job: str, field: str) -> dict[str, str]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", f"JobID,{field}", "-j", job], capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if line)


def test_from_inside_a_slurm_job_the_array_asks_for_cpus_only(world, slurm, shared_results):  # noqa: F811
    """launcher=slurm: the chain runs in a SLURM job (one CPU here), whose tokenize stage submits
    the array (the node's other CPU) and waits for it."""
    folder = shared_results / "sweeps" / "tokenize-in-job"
    proc = sweep(shared_results, "captions=synthetic_dense", "until=tokenize.further_pretrain",
                 "train.common.pretokenize=2", "tokenize=slurm", "tokenize.cpus_per_task=1", "tokenize.mem_gb=2",
                 "tokenize.timeout_min=20", *SMALL_WORLD, f"hydra.sweep.dir={folder}", "hydra.sweep.subdir=job")
    code, out = proc.finish()
    assert code == 0, out[-4000:]
    log = (folder / "job" / "logs" / "tokenize.further_pretrain.log").read_text()
    (array,) = re.findall(r"SLURM array (\d+): parts \[0, 1\] of 2, ", log)
    assert "tokenized 48 rows into 48 in 2 parts (slurm; 0 kept from an earlier attempt)" in log
    assert final_states(array) == {f"{array}_0": "COMPLETED", f"{array}_1": "COMPLETED"}
    # what each task asked for: one CPU, 2 GB, one node; no GPU (no gres)
    assert set(sacct_field(array, "ReqTRES").values()) == {"billing=1,cpu=1,mem=2G,node=1"}
    outer = (folder / ".submitit").glob("*")
    assert all(not p.name.startswith(array) for p in outer)   # the array is not the sweep's job
