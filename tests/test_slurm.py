"""launcher=slurm for real: a one-node SLURM cluster on this machine (scripts/slurm_local.sh:
slurmctld, slurmd, slurmdbd, munge), Hydra's submitit launcher submitting the embedded chain as
SLURM jobs. A sweep over two caption sources runs both chains to the end; a job cancelled with
scancel in the middle of training is resumed by re-running the sweep; a job that reaches its time
limit is requeued by submitit (max_num_timeout) and continues from its last checkpoint."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SMALL_WORLD, harness_cmd, read_status, subprocess_env
from tests.test_multinode import complete_checkpoints, wait_for

pytestmark = pytest.mark.slow
# One SLURM job per sweep job, one node, one CPU task, no GPU: the embedded run (the README's
# command). A job's folder is named by its overrides: few enough to stay under 255 characters.
ON_SLURM = ["launcher=slurm", "launcher.nnodes=1", "launcher.nproc_per_node=1", "launcher.gpus_per_node=0",
            "launcher.cpus_per_task=1", "launcher.mem_gb=3"]
SOURCES = "captions=synthetic_sparse,synthetic_dense"
STEPS = ["train.common.max_steps=60", "train.common.save_steps=10", *SMALL_WORLD]


@pytest.fixture(scope="module")
def slurm():
    """Start the cluster (installing it with apt-get if needed); the job completion log."""
    proc = subprocess.run(["bash", "scripts/slurm_local.sh"], cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr
    yield Path(re.search(r"SLURM_JOBCOMP=(\S+)", proc.stdout).group(1))
    subprocess.run(["scancel", "--name", "harness"])   # whatever a failed test left queued (Hydra's job name)


class Sweep:
    """`python -m harness run -m` on SLURM, its output in a file (it waits for the jobs)."""

    def __init__(self, results: Path, *args: str):
        self.log = results.parent / f"sweep-{time.time():.0f}.out"
        self.proc = subprocess.Popen(harness_cmd("run", "-m", *ON_SLURM, *args), cwd=REPO,
                                     env=subprocess_env(results), stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

    def poll(self):
        return self.proc.poll()

    def finish(self, timeout: float = 900) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        return code, self.log.read_text()

    @property
    def output(self) -> str:
        return self.log.read_text()


def sweep(results: Path, *args: str) -> Sweep:
    return Sweep(results, *args)


def sweep_dir(results: Path) -> Path:
    return results / "sweeps" / "embedded"


def job_dir(results: Path, captions: str) -> Path:
    return next(d for d in sweep_dir(results).glob(f"captions={captions},*") if d.is_dir())


def array_ids(results: Path) -> set[str]:
    """SLURM array job ids of the sweep so far (submitit's folders are named <array>_<task>)."""
    tasks = (re.fullmatch(r"(\d+)_\d+", p.name) for p in (sweep_dir(results) / ".submitit").glob("*"))
    return {m.group(1) for m in tasks if m}


def sacct(job: str) -> dict[str, str]:
    """Job id -> final state, from SLURM's accounting (the array's tasks, not their steps)."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job], capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split("|")[:2] for line in out.splitlines() if line)


def final_states(job: str, timeout: float = 120) -> dict[str, str]:
    """sacct's states once every task has ended (the accounting daemon records them a moment
    after the job leaves the queue)."""
    live = ("PENDING", "RUNNING", "COMPLETING", "REQUEUED")
    wait_for(lambda: all(not s.startswith(live) for s in sacct(job).values()), timeout, f"SLURM job {job} to end")
    return sacct(job)


def stage_running_with_checkpoint(run_dir: Path, stage: str) -> bool:
    try:
        if read_status(run_dir)["stages"][stage]["state"] != "running":
            return False
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return False
    return bool(complete_checkpoints((run_dir / "stages" / stage).resolve() / "model"))


def test_sweep_on_slurm_then_a_cancelled_job_resumes_on_rerun(shared_results, slurm):
    results = shared_results
    first = sweep(results, SOURCES, *STEPS)
    wait_for(lambda: array_ids(results), 60, "the sweep's SLURM jobs")
    (array,) = array_ids(results)
    wait_for(lambda: any(sweep_dir(results).glob("captions=synthetic_dense,*")), 600, "the dense job's folder")
    dense = job_dir(results, "synthetic_dense")
    wait_for(lambda: stage_running_with_checkpoint(dense, "train.further_pretrain") or first.poll() is not None,
             900, "a checkpoint of the dense job's further pretraining")
    assert first.poll() is None, first.output[-4000:]
    # Task 1 is the second job of the sweep (captions=synthetic_dense): Hydra submits the jobs as
    # one array in sweep order.
    subprocess.run(["scancel", f"{array}_1"], check=True)
    code, out = first.finish()
    states = final_states(array)
    print(f"first sweep: {states}")
    assert states == {f"{array}_0": "COMPLETED", f"{array}_1": "CANCELLED by 0"}, out[-4000:]
    assert code == 1, out[-4000:]
    # The cancelled job's harness either recorded the failure of its training (SLURM's SIGTERM
    # reaches LLaMA-Factory first) or was killed before it could: not done, either way.
    first_summary = {r["job"].split(",")[0]: r["state"] for r in json.loads((sweep_dir(results) / "summary.json").read_text())}
    assert first_summary["captions=synthetic_sparse"] == "done"
    assert first_summary["captions=synthetic_dense"] in ("failed", "running")
    assert read_status(job_dir(results, "synthetic_sparse"))["state"] == "done"
    killed = read_status(dense)
    # Stopped in it (SLURM's SIGTERM reaches LLaMA-Factory first, so the harness may record the
    # failure before the SIGKILL): either way, not marked done.
    assert killed["stages"]["train.further_pretrain"]["state"] in ("running", "failed")
    assert not ((dense / "stages" / "train.further_pretrain").resolve() / ".done.json").exists()

    second = sweep(results, SOURCES, *STEPS)
    code, out = second.finish()
    assert code == 0, out[-4000:]
    (again,) = array_ids(results) - {array}
    states = final_states(again)
    print(f"re-run: {states}")
    assert states == {f"{again}_0": "COMPLETED", f"{again}_1": "COMPLETED"}
    status = read_status(dense)
    assert status["state"] == "done"
    assert [n for n, s in status["stages"].items() if s["state"] == "done"] == \
        ["train.further_pretrain", "train.sft", "evaluate", "report"]
    log = (dense / "logs" / "train.further_pretrain.log").read_text()
    assert re.search(r"resuming from checkpoint-\d+", log)
    assert {s["state"] for s in read_status(job_dir(results, "synthetic_sparse"))["stages"].values()} == {"skipped"}
    summary = json.loads((sweep_dir(results) / "summary.json").read_text())
    assert sorted((r["job"].split(",")[0], r["state"]) for r in summary) == \
        [("captions=synthetic_dense", "done"), ("captions=synthetic_sparse", "done")]
    table = (sweep_dir(results) / "report" / "table.md").read_text()
    assert "Synthetic-Dense" in table and "Synthetic-Sparse" in table
    assert "JobState=CANCELLED" in slurm.read_text()   # the job completion log has it too


def test_a_job_past_its_time_limit_is_requeued_and_resumes_from_its_checkpoint(shared_results, slurm):
    results = shared_results
    # Its own alignment (max_steps differs from the sweep's), long enough to shorten its limit
    # in the middle: submitit asks for the signal 120 s before the limit and requeues the job
    # once (max_num_timeout=1); SLURM starts it again after cred_expire (15 s here).
    proc = sweep(results, "captions=synthetic_sparse", "until=train.alignment", "train.common.max_steps=600",
                 "train.common.save_steps=20", "train.common.logging_steps=20", "launcher.max_num_timeout=1", *SMALL_WORLD,
                 "launcher.signal_delay_s=120", "hydra.sweep.dir=" + str(results / "sweeps" / "timeout"),
                 "hydra.sweep.subdir=job")
    folder = results / "sweeps" / "timeout"
    # One job: submitted alone, not as an array (its folder is named by the plain job id).
    wait_for(lambda: any(re.fullmatch(r"\d+", p.name) for p in (folder / ".submitit").glob("*")), 120, "the SLURM job")
    job = next(p.name for p in (folder / ".submitit").glob("*") if re.fullmatch(r"\d+", p.name))
    run_dir = folder / "job"
    wait_for(lambda: (run_dir / "status.json").exists(), 600, "the job's status")
    wait_for(lambda: stage_running_with_checkpoint(run_dir, "train.alignment") or proc.poll() is not None, 600,
             "an alignment checkpoint")
    assert proc.poll() is None
    # A very short limit from now on: two minutes more than it has run (SLURM counts whole
    # minutes), so 60-120 s are left: inside the signal window, and SLURM signals at its next
    # time-limit check (every 30 s); submitit then requeues the job.
    elapsed = subprocess.run(["squeue", "-h", "-j", job, "-o", "%M"], capture_output=True, text=True).stdout.strip()
    assert elapsed.count(":") == 1, elapsed   # M:SS
    minutes = int(elapsed.split(":")[0]) + 2
    subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={minutes}"], check=True)
    at_limit = max(complete_checkpoints((run_dir / "stages" / "train.alignment").resolve() / "model"))
    wait_for(lambda: "Restarts=1" in subprocess.run(["scontrol", "show", "job", job], capture_output=True,
                                                     text=True).stdout, 180, "submitit's requeue")
    # The requeued job keeps its record, limit included: give the second attempt room again.
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=30"], check=True)
    code, out = proc.finish()
    assert code == 0, out[-4000:]
    log = (run_dir / "logs" / "train.alignment.log").read_text()
    resumed = [int(n) for n in re.findall(r"resuming from checkpoint-(\d+)", log)]
    print(f"time-limit job {job}: requeued once, resumed from checkpoint-{resumed[-1] if resumed else None}; "
          f"{final_states(job)}")
    assert resumed and resumed[-1] >= at_limit
    state = json.loads(((run_dir / "stages" / "train.alignment").resolve() / "model" / "trainer_state.json").read_text())
    assert state["global_step"] == 600
    assert read_status(run_dir)["state"] == "done"
