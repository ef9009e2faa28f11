"""Nothing outlives its stage: a training stage under torchrun (2 processes, the real
`llamafactory-cli train`, whose launcher starts torchrun with subprocess.run, which starts the
workers) is SIGKILLed by its own pid only, as an OOM killer or `kill -9` of the harness would. Within
a bounded time no process of the stage remains, nothing writes into its folder afterwards, and
running the stage again resumes from the checkpoint the killed run left.

Measured here: with the tool started directly (no process group) this test still passed, because
the workers die on their next write into the dead harness's output pipe (LLaMA-Factory logs every
step here); the stand-in launcher of tests/test_proc.py, whose worker stays quiet, is the test
that fails without the group kill. This one shows the real tools end and resume.

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
from tests.conftest import PYTHON, REPO
from tests.test_init_vlm_integration import model_dir  # noqa: F401 (fixture: the tiny VLM built by init_vlm)
from tests.test_train_golden import RECIPE, STEPS, inputs  # noqa: F401 (fixture: the golden stage's inputs)
from train import checkpoints

pytestmark = pytest.mark.slow

TWO_PROCESSES = [*RECIPE, "launcher.nproc_per_node=2", "train.stages.sft.global_batch_size=4"]
# The group supervisor sends SIGTERM, then SIGKILL after 20 s (stagekit/group.py GRACE_S).
BOUND_S = 40


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


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}


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
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder, deadline, ckpt = out / "model", time.time() + 400, None
    while time.time() < deadline and proc.poll() is None and ckpt is None:
        ckpt = checkpoints.last_complete(folder) if folder.exists() else None
        time.sleep(0.05)
    assert proc.poll() is None and ckpt is not None, f"no checkpoint while running: {job.log.path}"
    assert len(processes_naming(out)) >= 4   # supervisor, launcher, torchrun, 2 workers
    proc.send_signal(signal.SIGKILL)         # the harness's own pid, not its group
    proc.wait()

    deadline = time.time() + BOUND_S
    while processes_naming(out) and time.time() < deadline:
        time.sleep(0.2)
    assert processes_naming(out) == [], "the stage's processes outlived the harness"
    before = snapshot(out)
    time.sleep(3)
    assert snapshot(out) == before, "something still writes into the stage folder"
    assert not (folder / "trainer_state.json").exists()

    info = stage.run(job)   # what the harness does when the job is started again
    assert info["resumed_from"] is not None
    assert int(info["resumed_from"].removeprefix("checkpoint-")) >= int(ckpt.name.removeprefix("checkpoint-"))
    state = json.loads((folder / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
