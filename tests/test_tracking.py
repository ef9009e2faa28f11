"""Experiment trackers through LLaMA-Factory's own `report_to`, for real: TensorBoard event files
read back with TensorBoard's own reader, and W&B in offline mode, with no secret in any file."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SMALL_WORLD, run_harness

pytestmark = pytest.mark.slow
SHORT = ["train.common.max_steps=4", "train.common.logging_steps=1", "train.common.save_steps=4", *SMALL_WORLD]
RUN = "tiny-synthetic_dense"


def test_tensorboard_gets_every_training_stages_loss_under_its_run_name(shared_results):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_harness(shared_results, "run", "tracker=tensorboard", *SHORT)
    root = shared_results / "tensorboard" / "embedded" / RUN
    for stage in ("train.alignment", "train.further_pretrain", "train.sft"):
        events = EventAccumulator(str(root / stage))
        events.Reload()
        losses = [e.value for e in events.Scalars("train/loss")]
        assert len(losses) == 4 and all(v > 0 for v in losses), stage
    scores = EventAccumulator(str(root / "evaluate"))
    scores.Reload()
    results = shared_results / "runs" / "embedded" / RUN / "stages" / "evaluate" / "results.jsonl"
    measured = json.loads(results.read_text().splitlines()[-1])["value"]
    assert [e.value for e in scores.Scalars("eval/SynthVQA")] == [pytest.approx(measured, abs=1e-4)]


def test_wandb_offline_writes_named_runs_and_no_secret(shared_results, monkeypatch):
    secret = "wandb-secret-value-0123456789"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_harness(shared_results, "run", "tracker=wandb", "until=train.alignment", "train.common.max_steps=3",
                "train.common.logging_steps=1", "train.common.save_steps=3", *SMALL_WORLD)
    runs = sorted((shared_results / "wandb" / "wandb").glob("offline-run-*"))
    assert runs, "no offline run folder"
    meta = "".join(p.read_text(errors="replace") for r in runs for p in r.rglob("*.log"))
    assert "embedded/tiny-synthetic_dense/train.alignment" in meta or any(
        "embedded/tiny-synthetic_dense/train.alignment" in p.read_bytes().decode(errors="replace")
        for r in runs for p in r.rglob("*.wandb"))
    for path in shared_results.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert secret.encode() not in path.read_bytes(), path
