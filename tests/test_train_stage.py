"""The training stages for real: LLaMA-Factory subprocesses on the tiny embedded model.

Each test runs the harness up to train.alignment with a different launch setup; the world,
init_vlm and the prepared data come from the shared store (built once)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from safetensors.torch import load_file

from tests.conftest import REPO, SMALL_WORLD, harness_cmd, read_status, run_harness, stage_dir, subprocess_env

pytestmark = pytest.mark.slow
EMB = "results/runs/embedded"


def run_dir(results):
    return results / "runs" / "embedded" / "tiny-synthetic_dense"


def test_alignment_changes_only_projector_weights(shared_results):
    run_harness(shared_results, "run", "until=train.alignment", *SMALL_WORLD)
    rd = run_dir(shared_results)
    before = load_file(stage_dir(rd, "init_vlm") / "model" / "model.safetensors")
    after = load_file(stage_dir(rd, "train.alignment") / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not (before[k].float() == after[k].float()).all()}
    projector = {k for k in before if ".visual.merger." in f".{k}"}   # hub or transformers-5 layout
    assert changed and changed <= projector, sorted(changed - projector)
    assert changed == projector
    done = json.loads((stage_dir(rd, "train.alignment") / ".done.json").read_text())
    assert done["trainable_params"] == sum(before[k].numel() for k in projector)


@pytest.mark.parametrize("extra", [["launcher.nproc_per_node=2"], ["launcher.nproc_per_node=2", "deepspeed=zero2"]],
                         ids=["ddp-gloo-2proc", "deepspeed-zero2-2proc"])
def test_two_processes_train(shared_results, extra):
    run_harness(shared_results, "run", "until=train.alignment", "launcher.master_port=29611",
                "train.common.max_steps=10", *SMALL_WORLD, *extra)
    rd = run_dir(shared_results)
    folder = stage_dir(rd, "train.alignment")
    lf_yaml = (folder / "llamafactory.yaml").read_text()
    assert "gradient_accumulation_steps: 4" in lf_yaml  # global batch 32 = 4 per device x 2 processes x 4
    log = (rd / "logs" / "train.alignment.log").read_text()
    assert "FORCE_TORCHRUN=1" in log and "NPROC_PER_NODE=2" in log
    state = json.loads((folder / "model" / "trainer_state.json").read_text())
    assert state["global_step"] == 10
    if "deepspeed=zero2" in extra:
        assert "deepspeed: " in lf_yaml and json.loads((folder / "deepspeed_zero2.json").read_text())[
            "zero_optimization"]["stage"] == 2


def test_sigkill_mid_training_resumes_from_the_last_checkpoint(shared_results):
    args = ["run", "until=train.alignment", "train.common.max_steps=100", "train.common.save_steps=4", *SMALL_WORLD]
    run_harness(shared_results, "run", "until=data_prep.sft_data", *SMALL_WORLD)  # inputs ready, so timing is training only
    proc = subprocess.Popen(harness_cmd(*args), cwd=REPO, env=subprocess_env(shared_results),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    rd = run_dir(shared_results)
    deadline, ckpt = time.time() + 400, None
    while time.time() < deadline and proc.poll() is None:
        folder = stage_dir(rd, "train.alignment") / "model"
        done = sorted(folder.glob("checkpoint-*/trainer_state.json")) if folder.exists() else []
        if any("checkpoint-4" in str(p) for p in done):
            ckpt = "checkpoint-4"
            break
        time.sleep(0.2)
    assert ckpt, "training never reached checkpoint-4"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job: harness and trainer
    proc.wait()
    assert read_status(rd)["stages"]["train.alignment"]["state"] == "running"
    assert not (stage_dir(rd, "train.alignment") / ".done.json").exists()
    run_harness(shared_results, *args)
    status = read_status(rd)
    assert status["stages"]["train.alignment"]["state"] == "done"
    assert all(status["stages"][s]["state"] == "skipped" for s in ("world", "init_vlm", "data_prep.align_data"))
    done = json.loads((stage_dir(rd, "train.alignment") / ".done.json").read_text())
    resumed = int(done["resumed_from"].removeprefix("checkpoint-"))
    assert resumed >= 4 and resumed % 4 == 0
    log = (rd / "logs" / "train.alignment.log").read_text()
    assert f"Resuming training from {stage_dir(rd, 'train.alignment') / 'model' / done['resumed_from']}" in log
    state = json.loads((stage_dir(rd, "train.alignment") / "model" / "trainer_state.json").read_text())
    assert state["global_step"] == 100
    steps = [e["step"] for e in state["log_history"] if "loss" in e]
    assert steps == sorted(set(steps)) and steps[-1] == 100   # continues, does not restart at 0
