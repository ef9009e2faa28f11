"""What enters a stage's fingerprint decides whether a change redoes it, and everything after it.
A run-only setting in a fingerprint restarts a multi-day stage for a logging change; a deciding
setting missing from it silently reuses an output made from other settings.

The two lists are written out here, not taken from the code under test, so that a kind module
that lets a run-only key into its fingerprint (or drops a deciding one) fails this test."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.chain import build_chain
from harness.config import compose_config, to_plain
from harness.stage import chain_fingerprints
from tests.test_train_render import render_stage

RUN_ONLY = [
    "train.common.save_total_limit=7",
    "train.common.logging_steps=3",
    "train.common.preprocessing_num_workers=5",
    "train.common.dataloader_num_workers=3",
    "+captions.workers=1",
    "+captions.expected_rows=10",
    "+captions.layout.same_images_as=synthetic_sparse",   # where images come from: prefetch and data check
    "+align_data.workers=2",
    "launcher.master_port=29999",
    "launcher.master_addr=10.1.2.3",
    "backbone.params.llm=1",            # plan's cost estimate only
    "cost.mfu=0.5",
]

# (override, the first stages it must change)
DECIDING = [
    ("train.common.save_steps=7", {"train.alignment"}),            # where checkpoints are: resuming differs
    ("train.common.max_steps=10", {"train.alignment"}),
    ("train.stages.sft.learning_rate=1e-4", {"train.sft"}),
    ("launcher.nproc_per_node=2", {"train.alignment"}),            # world size changes the batches
    ("captions.seed=3", {"data_prep.captions"}),
    # the budget is the built image processor's resize bounds, and data_prep's token counts
    ("pixels.max_pixels=20000", {"init_vlm", "data_prep.align_data", "data_prep.captions", "data_prep.sft_data"}),
    ("seed=3", {"init_vlm"}),
    ("backbone.projector_init=normal", {"init_vlm"}),
    ("eval.batch_size=2", {"evaluate"}),
    ("world.n_train=40", {"world"}),
]


def fingerprints(*overrides: str) -> dict[str, str]:
    return chain_fingerprints(build_chain(to_plain(compose_config(list(overrides)))))


@pytest.mark.parametrize("override", RUN_ONLY)
def test_a_run_only_setting_changes_no_fingerprint(override, results_dir):
    base, changed = fingerprints(), fingerprints(override)
    assert {k: v for k, v in changed.items() if k in base} == base


@pytest.mark.parametrize("override,first", DECIDING)
def test_a_deciding_setting_changes_its_stage_and_what_reads_it(override, first, results_dir):
    base, changed = fingerprints(), fingerprints(override)
    moved = {name for name in base if changed[name] != base[name]}
    assert first <= moved
    assert "report" in moved   # everything downstream moves with it


def test_run_only_training_settings_still_reach_the_rendered_yaml(results_dir):
    cfg = to_plain(compose_config(["train.common.save_total_limit=5", "train.common.logging_steps=3"]))
    stage = next(s for s in build_chain(cfg) if s.name == "train.sft")
    y = render_stage(stage, out=Path("/o"))
    assert (y["save_total_limit"], y["logging_steps"]) == (5, 3)
    assert y["save_steps"] == cfg["train"]["common"]["save_steps"]


def test_the_embedded_fingerprints_are_pinned(results_dir):
    """Moving these restarts every user's finished stages: change them only on purpose (a kind's
    VERSION bump, a new deciding key), and say so in the change."""
    fps = fingerprints()
    assert {k: v[:16] for k, v in fps.items() if k in ("world", "init_vlm", "train.alignment")} == {
        "world": "aaf1f90d68dc5bc0", "init_vlm": "d52cfb02e8eb2856", "train.alignment": "2d35be78ac8db70a"}
