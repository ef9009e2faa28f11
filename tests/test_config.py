"""Config composition: every experiment and every group option composes into a chain; bad
overrides fail before any work with a message naming the key and the valid choices."""

from __future__ import annotations

import subprocess

import pytest

from harness.chain import build_chain
from harness.config import BadOverride, compose_config, group_options, groups, to_plain, validate_overrides
from tests.conftest import REPO, harness_cmd, subprocess_env

GROUP_CASES = [(g, o) for g in groups() if g != "experiment" for o in group_options(g)]


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_experiment_composes_into_a_chain(experiment, results_dir):
    cfg = to_plain(compose_config([f"experiment={experiment}"]))
    names = [s.name for s in build_chain(cfg)]
    assert names[-2:] == ["evaluate", "report"]
    assert "init_vlm" in names and "train.alignment" in names and "train.sft" in names


@pytest.mark.parametrize("group,option", GROUP_CASES)
def test_every_group_option_composes(group, option, results_dir):
    cfg = to_plain(compose_config([f"{group}={option}"]))
    build_chain(cfg)


def test_experiment_files_start_with_the_command_that_runs_them():
    for path in sorted((REPO / "configs/hydra/experiment").glob("*.yaml")):
        head = path.read_text().splitlines()[:8]
        assert any("python -m harness run" in line for line in head), path


def test_vanilla_has_no_further_pretraining(results_dir):
    cfg = to_plain(compose_config(["captions=vanilla"]))
    names = [s.name for s in build_chain(cfg)]
    assert "train.further_pretrain" not in names and "data_prep.captions" not in names
    sft = next(s for s in build_chain(cfg) if s.name == "train.sft")
    assert sft.inputs["model"] == "train.alignment"


def test_unknown_group_option_names_group_and_choices():
    with pytest.raises(BadOverride) as err:
        validate_overrides(["backbone=qwen9"])
    assert str(err.value) == ("unknown option 'qwen9' for config group 'backbone'; "
                              "valid choices: qwen2.5-3b, qwen2.5-7b, tiny")


def test_unknown_key_names_key_and_siblings():
    with pytest.raises(BadOverride) as err:
        validate_overrides(["train.common.lr=1"])
    msg = str(err.value)
    assert msg.startswith("unknown config key 'train.common.lr'; valid keys at train.common: ")
    assert "cutoff_len" in msg and "per_device_train_batch_size" in msg


def test_bad_value_inside_a_sweep_is_caught_before_any_job():
    with pytest.raises(BadOverride, match="unknown option 'nope' for config group 'captions'"):
        validate_overrides(["captions=vanilla,nope"])


def test_cli_bad_override_exits_2_with_one_line(results_dir):
    proc = subprocess.run(harness_cmd("run", "captions=nope"), capture_output=True, text=True, cwd=REPO,
                          env=subprocess_env(results_dir))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown option 'nope' for config group 'captions'; valid choices:")
    assert not results_dir.exists()  # nothing ran, nothing written


def test_until_must_name_a_stage(results_dir):
    with pytest.raises(ValueError, match="until='train.nope' is not a stage"):
        build_chain(to_plain(compose_config(["until=train.nope"])))
