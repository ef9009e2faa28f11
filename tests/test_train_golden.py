"""Golden losses and resumed == uninterrupted, in torchtune's style: a tiny training stage run by
the project's own train stage (train/stage.py -> train/render.py -> the real `llamafactory-cli
train`, CPU, fp32) with a fixed seed, on a model built by embedded/tiny_models.py with explicit
sizes and on twelve samples this file writes itself. Nothing comes from the embedded world's data
or the embedded experiment's sizes: every value that decides the losses is in RECIPE below.

- The first logged losses are pinned as numbers: a change that silently breaks learning (labels
  or their mask, what trains, the learning rate or its schedule, data order) moves them.
- A second run is SIGKILLed right after a complete checkpoint and run again through the stage,
  which resumes from that checkpoint: its later losses must equal the uninterrupted run's.

~2.5 min on 2 shared cores (three LLaMA-Factory runs of 20 steps, ~15 s start-up each).
Run: .venv/bin/python -m pytest tests/test_train_golden.py -q"""

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
from tests.conftest import PYTHON, REPO, processes_left
from tests.test_init_vlm_integration import model_dir  # noqa: F401 (fixture: the tiny VLM built by init_vlm)
from train import checkpoints

pytestmark = pytest.mark.slow

STEPS, SAVE_STEPS = 20, 5
# Everything that decides the losses, explicit, so that retuning the embedded experiment does not
# move them. The SFT stage trains all three parts (vision tower, projector, LLM), so a part left
# frozen by mistake shows; global batch 4 = 2 per device x 2 accumulated, so accumulation counts.
RECIPE = ["seed=0", "pixels.min_pixels=3136", "pixels.max_pixels=12544", "deepspeed=none",
          "launcher.nnodes=1", "launcher.nproc_per_node=1",
          "train.common.template=qwen2_vl", "train.common.cutoff_len=256", f"train.common.max_steps={STEPS}",
          "train.common.lr_scheduler_type=cosine", "train.common.warmup_ratio=0.1", "train.common.weight_decay=0.0",
          "train.common.per_device_train_batch_size=2", "train.common.bf16=false",
          "train.common.gradient_checkpointing=false", "train.common.packing=false", "train.common.pretokenize=0",
          f"train.common.save_steps={SAVE_STEPS}", "train.common.save_total_limit=null",
          "train.common.logging_steps=1", "train.common.preprocessing_num_workers=1",
          "train.common.dataloader_num_workers=0",
          "train.stages.sft.trainable=all", "train.stages.sft.learning_rate=5.0e-3",
          "train.stages.sft.global_batch_size=4"]

# The first 10 logged losses of RECIPE, measured 2026-11-30 on this machine (torch 2.13.0+cpu,
# transformers 5.6.0, LLaMA-Factory 0.9.5): four runs, with 1 and 2 threads, gave the same bits.
GOLDEN = [6.042026, 6.019073, 5.621387, 5.208156, 4.728832, 6.409180, 4.171118, 3.842130, 3.518724, 3.325382]
# Another CPU or torch build sums fp32 in another order (SIMD width, BLAS kernels), which changes
# results in the last bit. Measured here: every initial weight nudged by one float32 ulp moves these
# ten losses by at most 2e-6. 1e-4 leaves 50 times that, and is far below what a real change does,
# measured the same day: labels on the prompt tokens too (train_on_prompt) move all ten by 0.015 to
# 1.8; a halved learning rate moves steps 3-10 by 0.13 to 1.5 (step 1's LR is 0, warmup).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def inputs(model_dir, tmp_path_factory) -> dict:  # noqa: F811
    """The stage's two input folders: the model (<input>/model, as init_vlm leaves it) and a
    twelve-sample caption dataset in LLaMA-Factory's sharegpt format, written here."""
    from PIL import Image

    root = tmp_path_factory.mktemp("golden")
    (root / "init_vlm").mkdir()
    (root / "init_vlm" / "model").symlink_to(model_dir)
    data = root / "data"
    data.mkdir()
    colors = {"red": (220, 20, 20), "green": (20, 160, 40), "blue": (30, 60, 220), "yellow": (230, 210, 30)}
    corners = {"top left": (4, 4), "top right": (30, 4), "bottom right": (30, 30)}
    rows = []
    for color, rgb in colors.items():
        for where, (x, y) in corners.items():
            path = data / f"{color}_{where.replace(' ', '_')}.png"   # PNG: the pixels are exactly these
            img = Image.new("RGB", (56, 56), (255, 255, 255))
            img.paste(rgb, (x, y, x + 22, y + 22))
            img.save(path)
            rows.append({"messages": [{"role": "user", "content": "<image>Describe the picture."},
                                      {"role": "assistant", "content": f"A {color} square at the {where}."}],
                         "images": [str(path)]})
    (data / "golden.json").write_text(json.dumps(rows))
    (data / "dataset_info.json").write_text(json.dumps({"golden": {
        "file_name": "golden.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}))
    return {"model": root / "init_vlm", "data": data, "cache": root / "cache"}


def sft_job(inputs: dict, out: Path) -> StageRun:
    """train.sft of RECIPE on `inputs`, as the harness hands it to the stage."""
    spec = next(s for s in build_chain(to_plain(compose_config(RECIPE))) if s.name == "train.sft")
    out.mkdir(parents=True, exist_ok=True)
    return StageRun(name=spec.name, out_dir=out, inputs={"model": inputs["model"], "data": inputs["data"]},
                    config=spec.config, log=StageLog(spec.name, out / "train.log", echo=False),
                    settings={**spec.settings, "dataset": "golden"},
                    input_fingerprints={"model": "golden-model", "data": "golden-data"}, cache_dir=inputs["cache"])


def logged_losses(out: Path) -> dict[int, float]:
    state = json.loads((out / "model" / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


@pytest.fixture(scope="module")
def uninterrupted(inputs, tmp_path_factory) -> dict[int, float]:
    out = tmp_path_factory.mktemp("uninterrupted")
    info = stage.run(sft_job(inputs, out))
    assert info["resumed_from"] is None and info["trainable_params"] > 0
    return logged_losses(out)


def test_first_losses_are_the_golden_numbers(uninterrupted):
    assert sorted(uninterrupted) == list(range(1, STEPS + 1))
    first = [uninterrupted[s] for s in range(1, len(GOLDEN) + 1)]
    assert first == pytest.approx(GOLDEN, abs=TOLERANCE, rel=0), first
    assert uninterrupted[STEPS] < 0.5 * uninterrupted[1]   # and it keeps learning after the pinned steps


def test_sigkill_after_a_checkpoint_then_resume_continues_the_same_losses(inputs, uninterrupted, tmp_path):
    job = sft_job(inputs, tmp_path / "killed")
    (tmp_path / "job.pickle").write_bytes(pickle.dumps(job))
    # The stage in a process of its own, killed as a job is: the stage and LLaMA-Factory under it.
    proc = subprocess.Popen([PYTHON, "-c", "import pickle, sys, train.stage as s; "
                                           "s.run(pickle.load(open(sys.argv[1], 'rb')))", str(tmp_path / "job.pickle")],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    folder, deadline, ckpt = job.out_dir / "model", time.time() + 300, None
    while time.time() < deadline and proc.poll() is None and ckpt is None:
        ckpt = checkpoints.last_complete(folder) if folder.exists() else None
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt is not None, f"no complete checkpoint before the run ended (exit {proc.returncode}): {job.log.path}"
    # LLaMA-Factory runs in a process group of its own, which ends when its supervisor sees the stage
    # die (SIGTERM): on a loaded machine it can finish writing one more checkpoint first. The run
    # resumes from the last checkpoint the killed run left, so read that once nothing of it is left.
    assert processes_left(job.out_dir, 60) == [], f"processes of {job.out_dir} outlived the stage"
    ckpt = checkpoints.last_complete(folder)
    step = int(ckpt.name.removeprefix("checkpoint-"))
    assert step < STEPS, "killed too late: no step left to resume"
    assert not (folder / "trainer_state.json").exists()   # the run did not finish

    info = stage.run(job)   # what the harness does when the job is started again
    assert info["resumed_from"] == ckpt.name
    resumed = logged_losses(job.out_dir)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    later = {s: resumed[s] for s in resumed if s > step}
    # Same machine, same data order, restored optimizer, scheduler and RNG state: bit for bit.
    assert later == {s: uninterrupted[s] for s in later}
