"""The rendered LLaMA-Factory YAMLs carry the paper's recipe (caprl-recipe.md s.1), checked for
experiment=caprl2m on 4 nodes x 8 GPUs without any GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.chain import build_chain
from harness.config import compose_config, to_plain
from train.batch import BatchError, gradient_accumulation
from train.launch import all_node_envs, node_env
from stagekit import StageLog, StageRun
from train.stage import render
from train.trainable import TrainableMismatch, check_flags

PAPER = {  # stage: (lr, global batch, freeze vision, freeze projector, freeze language)
    "alignment": (1e-3, 256, True, False, True),
    "further_pretrain": (4e-5, 256, False, False, False),
    "sft": (2e-5, 128, False, False, False),
}


def render_stage(stage, out=Path("/o")):
    """The LLaMA-Factory YAML train/stage.py would write for `stage` (its own renderer, a dry run)."""
    job = StageRun(name=stage.name, out_dir=out, inputs={"model": Path("/m"), "data": Path("/d")},
                   config=stage.config, log=StageLog(stage.name, Path("/dev/null"), echo=False),
                   settings=stage.settings)
    return render(job, tokenized_path=None, resolve_master=False).lf


def rendered(overrides):
    cfg = to_plain(compose_config(overrides))
    return cfg, {s.config["name"]: render_stage(s) for s in build_chain(cfg) if s.kind == "train"}


@pytest.mark.parametrize("stage", sorted(PAPER))
def test_caprl2m_on_4_nodes_x_8_gpus_carries_the_paper_recipe(stage, results_dir):
    cfg, yamls = rendered(["experiment=caprl2m", "launcher=multinode", "launcher.nnodes=4", "launcher.nproc_per_node=8"])
    y = yamls[stage]
    lr, batch, fv, fp, fl = PAPER[stage]
    assert y["learning_rate"] == lr
    assert (y["freeze_vision_tower"], y["freeze_multi_modal_projector"], y["freeze_language_model"]) == (fv, fp, fl)
    assert y["per_device_train_batch_size"] * 32 * y["gradient_accumulation_steps"] == batch
    assert y["gradient_accumulation_steps"] == batch // (4 * 32)
    assert y["finetuning_type"] == "full" and y["template"] == "qwen2_vl"
    assert y["use_reentrant_gc"] is False and y["disable_gradient_checkpointing"] is False
    assert y["deepspeed"] == "/o/deepspeed_zero2.json" and y["bf16"] is True
    # the pixel budget (1280 visual tokens of 28 px) goes to the model's image processor, built by init_vlm;
    # LLaMA-Factory's own bounds are where its pre-resize never fires
    assert (y["image_min_pixels"], y["image_max_pixels"]) == (0, 2**62)
    init = next(s for s in build_chain(cfg) if s.kind == "init_vlm")
    assert init.config["pixels"] == {"min_pixels": 3136, "max_pixels": 1003520}


def test_every_stage_resumes_from_its_checkpoints_not_overwrites_them(results_dir):
    """A re-run after a crash continues from the stage folder's last checkpoint: LLaMA-Factory
    must neither wipe the output folder nor save checkpoints without the optimizer state."""
    _, yamls = rendered([])
    assert sorted(yamls) == ["alignment", "further_pretrain", "sft"]
    for y in yamls.values():
        assert (y["output_dir"], y["overwrite_output_dir"], y["save_only_model"]) == ("/o/model", False, False)


def test_one_gpu_gives_the_same_global_batch_by_accumulation(results_dir):
    _, yamls = rendered(["experiment=caprl2m", "launcher.nproc_per_node=1"])
    assert yamls["alignment"]["gradient_accumulation_steps"] == 64
    assert yamls["sft"]["gradient_accumulation_steps"] == 32


def test_global_batch_that_does_not_divide_is_an_error():
    with pytest.raises(BatchError, match=r"train.stages.sft.global_batch_size=128 is not a multiple of "
                                         r"train.common.per_device_train_batch_size=4 x world size 24 .* = 96"):
        gradient_accumulation(128, 4, 24, "sft")


def test_every_node_gets_its_own_rank_and_the_same_master(results_dir):
    cfg = to_plain(compose_config(["experiment=caprl2m", "launcher=multinode", "launcher.master_addr=10.0.0.1"]))
    envs = all_node_envs(cfg["launcher"], deepspeed=True)
    assert [e["NODE_RANK"] for e in envs] == ["0", "1", "2", "3"]
    assert {e["MASTER_ADDR"] for e in envs} == {"10.0.0.1"}
    assert {e["NNODES"] for e in envs} == {"4"} and {e["NPROC_PER_NODE"] for e in envs} == {"8"}


def test_single_process_without_deepspeed_needs_no_torchrun():
    assert node_env({"nnodes": 1, "nproc_per_node": 1, "node_rank": 0, "master_addr": "x", "master_port": 1}) == {}


def test_trainable_declaration_must_match_the_freeze_flags():
    spec = {"trainable": "projector", "freeze_vision_tower": True, "freeze_multi_modal_projector": False,
            "freeze_language_model": False}
    with pytest.raises(TrainableMismatch, match="trainable='projector' needs .*freeze_language_model=True"):
        check_flags(spec, "alignment")
