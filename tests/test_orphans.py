"""Nothing outlives its stage: a training stage under torchrun (2 processes, the real
`llamafactory-cli train`, whose launcher starts torchrun with subprocess.run, which starts the
workers) is SIGKILLed by its own pid only, as an OOM killer or `kill -9` of the harness would. Within
a bounded time no process of the stage remains, nothing writes into its folder afterwards, and
running the stage again resumes from the checkpoint the killed run left.

The workers are kept quiet (no loss lines, no progress bar, no INFO lines): a worker that writes
nothing never meets the dead harness's closed output pipe, so nothing but the group kill ends it.
Measured here: with the group kill disabled (stagekit/group.py end_group a no-op, or os.kill of
the launcher alone for os.killpg) this test fails (the re-run ends at global_step 21, not 20: what
the killed run left running interferes with the resume); with it, it passes. With the workers logging every step (as before) it passed either way:
they died on their next write into the closed pipe.

~2 min on 2 shared cores. Run: .venv/bin/python -m pytest tests/test_orphans.py -q"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import pytest

import train.stage as stage
from harness.chain import build_chain
from harness.config import compose_config, to_plain
from stagekit import StageLog, StageRun
from tests.conftest import PYTHON, REPO, processes_left, processes_naming
from tests.test_init_vlm_integration import model_dir  # noqa: F401 (fixture: the tiny VLM built by init_vlm)
from tests.test_train_golden import RECIPE, STEPS, inputs  # noqa: F401 (fixture: the golden stage's inputs)
from tests.test_evaluate_table1 import bench_dir, tiny_models  # noqa: F401 (fixtures: local benchmark files, tiny models)
from train import checkpoints

pytestmark = pytest.mark.slow

TWO_PROCESSES = [*RECIPE, "launcher.nproc_per_node=2", "train.stages.sft.global_batch_size=4",
                 # quiet workers (no loss lines, no progress bar): a worker that writes nothing never
                 # meets the dead harness's closed pipe, so only the group kill can end it
                 "train.common.logging_steps=1000", "+train.common.extra.disable_tqdm=true"]
# ...and no INFO lines from LLaMA-Factory or transformers ("Saving model checkpoint to ...")
QUIET = {"LLAMAFACTORY_VERBOSITY": "WARN", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
# The group supervisor sends SIGTERM, then SIGKILL after 20 s (stagekit/group.py GRACE_S).
BOUND_S = 40
# lmms-eval ends at SIGTERM at once: with the group kill, the task's processes are gone within ~1 s.
# Killing accelerate's launcher alone (no group kill) left lmms-eval running ~8 s here, until its
# first write into the dead runner's pipe ended it; this bound tells the two apart.
ACCELERATE_BOUND_S = 5


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}


def kill_only(proc: subprocess.Popen, folder: Path, bound_s: float = BOUND_S) -> None:
    """SIGKILL to proc's own pid; then within bound_s no process names `folder`, and nothing writes
    into it for 3 s more."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert processes_left(folder, bound_s) == [], f"processes of {folder} outlived the harness"
    before = snapshot(folder)
    time.sleep(3)
    assert snapshot(folder) == before, f"something still writes into {folder}"


def test_sigkill_of_the_harness_pid_alone_leaves_no_torchrun_worker(inputs, tmp_path):  # noqa: F811
    spec = next(s for s in build_chain(to_plain(compose_config(TWO_PROCESSES))) if s.name == "train.sft")
    out = tmp_path / "stage"
    out.mkdir()
    job = StageRun(name=spec.name, out_dir=out, inputs={"model": inputs["model"], "data": inputs["data"]},
                   config=spec.config, log=StageLog(spec.name, out / "train.log", echo=False),
                   settings={**spec.settings, "dataset": "golden"},
                   input_fingerprints={"model": "golden-model", "data": "golden-data"}, cache_dir=inputs["cache"])
    (tmp_path / "job.pickle").write_bytes(pickle.dumps(job))
    proc = subprocess.Popen([PYTHON, "-c", "import pickle, sys, train.stage as s; "
                                           "s.run(pickle.load(open(sys.argv[1], 'rb')))", str(tmp_path / "job.pickle")],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **QUIET})
    folder, deadline, ckpt = out / "model", time.time() + 400, None
    while time.time() < deadline and proc.poll() is None and ckpt is None:
        ckpt = checkpoints.last_complete(folder) if folder.exists() else None
        time.sleep(0.05)
    assert proc.poll() is None and ckpt is not None, f"no checkpoint while running: {job.log.path}"
    assert len(processes_naming(out)) >= 4   # supervisor, launcher, torchrun, 2 workers
    kill_only(proc, out)                     # the harness's own pid, not its group
    assert not (folder / "trainer_state.json").exists()

    info = stage.run(job)   # what the harness does when the job is started again
    assert info["resumed_from"] is not None
    assert int(info["resumed_from"].removeprefix("checkpoint-")) >= int(ckpt.name.removeprefix("checkpoint-"))
    state = json.loads((folder / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS


def test_sigkill_of_the_harness_pid_alone_ends_an_accelerate_launched_evaluation(bench_dir, tiny_models,  # noqa: F811
                                                                                   tmp_path):
    """The same for evaluation under `accelerate launch`, whose launcher starts lmms-eval as its own
    child (subprocess.Popen): the real lmms-eval task run through stagekit's runner as the evaluate
    stage runs it, with `accelerate launch` in front (one CPU process: the harness itself launches
    through accelerate only for several GPUs, which this machine has not; the process tree is the
    same). After SIGKILL of the runner's pid, no process of the task remains, the folder stays
    still, and running the task again scores what the always-"A" model scores on AI2D (50.0).
    Measured: with the group kill removed (stagekit/group.py end_group a no-op, or os.kill of the
    launcher alone for os.killpg) lmms-eval outlives the harness by 8 s or more and this test fails
    on its 5-s bound; with the group kill it passes. ~20 s after the module's fixtures."""
    import sys

    from evaluation.command import build_command
    from evaluation.stage import run_evaluation, write_local_tasks
    from tests.test_evaluate_table1 import CPU, META, PIXELS, local_set

    (ai2d,) = [t for t in local_set(bench_dir)["tasks"] if t["task"] == "ai2d"]
    one = {"name": "orphans", "tasks": [ai2d]}
    task_dir = tmp_path / "eval" / "by_task" / "ai2d"
    write_local_tasks([ai2d], task_dir / "tasks")
    argv, env = build_command(tiny_models["model"], task_dir, benchmarks=one, pixels=PIXELS, eval_cfg=CPU)
    assert argv[1:3] == ["-m", "lmms_eval"]
    # quiet (warnings only, no progress bar), so that only the group kill can end it (see the module's docstring)
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", *argv[1:],
            "--verbosity", "WARNING"]
    (tmp_path / "argv.pickle").write_bytes(pickle.dumps((argv, {**os.environ, **env, **QUIET}, task_dir)))
    proc = subprocess.Popen([PYTHON, "-c", "import pickle, sys; from stagekit import run_logged; "
                                           "a, e, d = pickle.load(open(sys.argv[1], 'rb')); "
                                           "run_logged(a, env=e, log_path=d / 'lmms_eval.log', cwd=d, echo=False)",
                             str(tmp_path / "argv.pickle")], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def worker_running() -> bool:   # lmms-eval itself, the launcher's child
        return any("accelerate" not in p and "stagekit.group" not in p for p in processes_naming(task_dir))

    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not worker_running():
        time.sleep(0.05)
    assert proc.poll() is None and worker_running(), (task_dir / "lmms_eval.log").read_text()[-2000:]
    assert len(processes_naming(task_dir)) >= 3   # supervisor, accelerate launcher, lmms-eval
    kill_only(proc, task_dir, ACCELERATE_BOUND_S)  # the runner's own pid, not its group
    assert not (task_dir / "score.json").exists()
    assert not list(task_dir.glob("lmms_eval/**/*results*.json")), "the killed run's lmms-eval went on to score"

    out = run_evaluation(tiny_models["model"], tmp_path / "eval", benchmarks=one, pixels=PIXELS, eval_cfg=CPU,
                         meta=META, log=lambda *_: None)
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["status"], record["value"]) == ("ok", 50.0)
