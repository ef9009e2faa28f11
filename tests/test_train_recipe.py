"""The LLaMA-Factory keys that decide a stage's data are stated once (train/recipe.py): the
pretokenize stage tokenizes with exactly the keys training would have tokenized with."""

from __future__ import annotations

from pathlib import Path

from harness.chain import build_chain
from harness.config import compose_config, to_plain
from stagekit import StageRun
from train.stage import render
from train.tokenize_stage import lf_yaml


def stage_run(stage, inputs) -> StageRun:
    return StageRun(name=stage.name, out_dir=Path("/runs/x") / stage.name, inputs=inputs, config=stage.config,
                    log=None, settings=stage.settings)


def test_tokenize_keys_equal_the_training_yamls_for_the_same_config(results_dir):
    cfg = to_plain(compose_config(["train.common.pretokenize=2", "pixels.min_pixels=6272", "pixels.max_pixels=200704",
                                   "+train.stages.sft.packing=true", "+train.common.extra.mask_history=true"]))
    stages = {s.name: s for s in build_chain(cfg)}
    inputs = {"model": Path("/runs/x/init_vlm"), "data": Path("/runs/x/data_prep.sft_data")}
    for name in ("alignment", "sft"):
        tok = lf_yaml(stage_run(stages[f"tokenize.{name}"], inputs))
        train = render(stage_run(stages[f"train.{name}"], inputs), tokenized_path=None).lf
        assert {k: train[k] for k in tok} == tok, name
        assert sorted(tok) == sorted(
            ["model_name_or_path", "trust_remote_code", "image_max_pixels", "image_min_pixels", "dataset_dir",
             "dataset", "media_dir", "template", "cutoff_len", "mask_history"]
            + (["packing", "neat_packing"] if name == "sft" else []))
        # LLaMA-Factory's own pixel bounds never fire; the budget is in the image processor init_vlm builds
        assert (tok["image_min_pixels"], tok["image_max_pixels"]) == (0, 2**62)
        assert stages["init_vlm"].config["pixels"] == {"min_pixels": 6272, "max_pixels": 200704}
        assert tok["model_name_or_path"] == "/runs/x/init_vlm/model"
        assert tok["mask_history"] is True
