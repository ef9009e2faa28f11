"""Recipe problems found before any work (train/validate.py), the ScaleCap switch as one
override, and what `plan` prints for multi-node and SLURM launches outside SLURM."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from harness.chain import build_chain
from harness.config import compose_config, to_plain, validate_overrides
from harness.plan import render_plan
from train.launch import node_env, slurm_master_addr
from tests.test_train_render import render_stage
from train.render import FREEZE_KEYS
from train.trainable import TRAINABLE
from train.validate import check_recipe

SCALECAP = "train.stages.further_pretrain.trainable=projector+llm"   # documented in paper_recipe.yaml


def cfg_of(*overrides):
    return to_plain(compose_config(list(overrides)))


@pytest.mark.parametrize("overrides", [[], ["experiment=caprl2m"], ["experiment=caprl2m", "launcher=multinode"],
                                       ["experiment=caprl2m", "launcher=slurm"], ["captions=vanilla"]])
def test_shipped_recipes_have_no_problems(results_dir, overrides):
    assert check_recipe(cfg_of(*overrides)) == []


def test_scalecap_is_one_documented_override_that_composes_validates_and_renders(results_dir):
    doc = (Path(__file__).resolve().parent.parent / "configs/hydra/train/paper_recipe.yaml").read_text()
    assert SCALECAP in doc
    validate_overrides(["experiment=caprl2m", SCALECAP])
    cfg = cfg_of("experiment=caprl2m", SCALECAP)
    assert check_recipe(cfg) == []
    stage = next(s for s in build_chain(cfg) if s.name == "train.further_pretrain")
    lf = render_stage(stage)
    assert {k: lf[k] for k in FREEZE_KEYS} == {"freeze_vision_tower": True, "freeze_multi_modal_projector": False,
                                               "freeze_language_model": False}
    assert "trainable: projector+llm  freeze_vision_tower=True" in render_plan(cfg)


def test_setting_only_the_freeze_flag_is_reported_naming_the_keys(results_dir):
    problems = check_recipe(cfg_of("experiment=caprl2m", "train.stages.further_pretrain.freeze_vision_tower=true"))
    assert problems == [("train.stages.further_pretrain: trainable='all' needs freeze_vision_tower=False, "
                         "freeze_multi_modal_projector=False, freeze_language_model=False; the config has "
                         "(True, False, False)")]


def test_an_unknown_trainable_value_is_reported_not_a_composition_error(results_dir):
    assert check_recipe(cfg_of("train.stages.sft.trainable=vit")) == [
        "train.stages.sft.trainable='vit'; choose one of ['all', 'projector', 'projector+llm']"]


def test_the_yaml_freeze_table_is_the_one_the_checks_use(results_dir):
    table = cfg_of()["train"]["freezes"]
    flags = {k: (v["vision_tower"], v["multi_modal_projector"], v["language_model"]) for k, v in table.items()}
    assert flags == TRAINABLE


def test_a_global_batch_that_does_not_divide_names_every_key(results_dir):
    cfg = cfg_of("experiment=caprl2m", "launcher.nproc_per_node=3")
    assert check_recipe(cfg) == [
        f"train.stages.{name}.global_batch_size={batch} is not a multiple of "
        f"train.common.per_device_train_batch_size=4 x world size 3 (launcher.nnodes x launcher.nproc_per_node) "
        f"= 12; change one of them" for name, batch in (("alignment", 256), ("further_pretrain", 256), ("sft", 128))]
    plan = render_plan(cfg)   # shown in place, no traceback
    assert "cannot render llamafactory.yaml: train.stages.sft.global_batch_size=128 is not a multiple" in plan


def test_vanilla_does_not_check_the_stage_it_skips(results_dir):
    assert check_recipe(cfg_of("captions=vanilla", "train.stages.further_pretrain.global_batch_size=3")) == []
    assert check_recipe(cfg_of("train.stages.further_pretrain.global_batch_size=3"))


# ----------------------------------------------------------------------------- plan: launch lines

def node_lines(plan: str, stage: str) -> list[str]:
    block = plan.split(f". {stage} [")[1].split("\n\n")[0]
    return [line.strip() for line in block.splitlines() if re.match(r"\s+node \d+: ", line)]


@pytest.fixture
def outside_slurm(monkeypatch):
    for var in ("SLURM_JOB_NODELIST", "SLURM_NODEID", "NODE_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)


def test_plan_for_slurm_outside_slurm_prints_what_each_node_evaluates(results_dir, outside_slurm, tmp_path,
                                                                     monkeypatch):
    plan = render_plan(cfg_of("experiment=caprl2m", "launcher=slurm"))
    lines = node_lines(plan, "train.sft")
    assert len(lines) == 4
    master = 'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"'
    for rank, line in enumerate(lines):
        assert line.startswith(f"node {rank}: FORCE_TORCHRUN=1 NNODES=4 NODE_RANK={rank} NPROC_PER_NODE=8 {master} "
                               f"MASTER_PORT=29500 PET_RDZV_CONF=timeout=1800 llamafactory-cli train ")
    # On a node of the job the printed line evaluates to the allocation's first host.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\n[ "$3" = "gpu-[07-08]" ] && printf "gpu-07\\ngpu-08\\n"\n')
    (bin_dir / "scontrol").chmod(0o755)
    argv_start = lines[1].index("llamafactory-cli")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-[07-08]"}
    out = subprocess.run(["bash", "-c", lines[1][len("node 1: "):argv_start] + "env"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "MASTER_ADDR=gpu-07\n" in out and "NODE_RANK=1\n" in out
    # ... and the run itself still resolves it through SLURM, or says why it cannot.
    launcher = cfg_of("experiment=caprl2m", "launcher=slurm")["launcher"]
    with pytest.raises(RuntimeError, match="needs SLURM_JOB_NODELIST"):
        node_env(launcher)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu-[07-08]")
    assert slurm_master_addr() == "gpu-07" and node_env(launcher)["MASTER_ADDR"] == "gpu-07"


def test_plan_for_multinode_prints_every_node(results_dir, outside_slurm):
    plan = render_plan(cfg_of("experiment=caprl2m", "launcher=multinode"))
    for stage in ("train.alignment", "train.further_pretrain", "train.sft"):
        lines = node_lines(plan, stage)
        assert [shlex.split(line.split(": ", 1)[1])[:6] for line in lines] == [
            ["FORCE_TORCHRUN=1", "NNODES=4", f"NODE_RANK={rank}", "NPROC_PER_NODE=8", "MASTER_ADDR=node-0",
             "MASTER_PORT=29500"] for rank in range(4)]
