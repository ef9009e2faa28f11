"""Resuming loads the checkpoint's weights (train/resume_layout.py), checked with transformers'
own resume code (Trainer._load_from_checkpoint) on a checkpoint written the way the Trainer writes
one (save_pretrained of the tiny VLM that init_vlm builds). The end-to-end proof, a SIGKILLed
stage whose resumed losses equal an uninterrupted run's, is tests/test_train_golden.py.

Run: .venv/bin/python -m pytest tests/test_resume_layout.py -q"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.test_init_vlm import built, sources  # noqa: F401 (fixtures: the tiny VLM of init_vlm)
from tests.test_train_qwen3vl import model_dir as qwen3vl_dir  # noqa: F401 (fixture: the tiny Qwen3-VL of init_vlm)
from train.resume_layout import INDEX, SINGLE, LayoutMismatch, to_model_layout


def model_class():
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration


@pytest.fixture(scope="module")
def trained(built, tmp_path_factory) -> dict:  # noqa: F811
    """The tiny VLM as a Trainer has it: loaded, its parameters under the model's own names."""
    model = model_class().from_pretrained(built[0])
    return {"model": model, "params": {k: v.clone() for k, v in model.state_dict().items()}}


def save_checkpoint(trained: dict, folder: Path, **kw) -> Path:
    trained["model"].save_pretrained(folder, **kw)   # what Trainer._save_checkpoint calls
    return folder


def resumed_params(ckpt: Path, tmp_path: Path) -> tuple[dict, dict]:
    """A fresh model's parameters (other weights) before and after the Trainer's resume has loaded
    `ckpt` into it."""
    from transformers import AutoConfig, Trainer, TrainingArguments

    torch.manual_seed(123)
    model = model_class()(AutoConfig.from_pretrained(ckpt))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "t"), report_to="none"))
    trainer._load_from_checkpoint(str(ckpt))
    return fresh, model.state_dict()


def same(params: dict, expected: dict) -> set[str]:
    return {k for k in expected if torch.equal(params[k], expected[k])}


def test_the_trainer_resumes_a_checkpoint_as_saved_without_its_weights(trained, tmp_path):
    """The upstream bug (huggingface/transformers#43701) that the renaming works around. When this
    fails, transformers resumes correctly by itself and train/resume_layout.py can go."""
    ckpt = save_checkpoint(trained, tmp_path / "checkpoint-5")
    assert any(k.startswith("visual.") for k in load_file(ckpt / SINGLE))   # the hub's names
    fresh, resumed = resumed_params(ckpt, tmp_path)
    assert same(resumed, fresh) == set(fresh)   # nothing loaded: the fresh weights train on


def test_renamed_checkpoint_resumes_with_every_weight(trained, tmp_path):
    ckpt = save_checkpoint(trained, tmp_path / "checkpoint-5")
    logged = []
    saved_names = len(load_file(ckpt / SINGLE))
    assert to_model_layout(ckpt, logged.append) == saved_names == 56   # every name: vision, projector, LLM
    assert same(resumed_params(ckpt, tmp_path)[1], trained["params"]) == set(trained["params"])
    assert "checkpoint-5: 56 weights renamed" in logged[0]
    # still an ordinary model folder: from_pretrained reads the model's own names too
    reloaded = model_class().from_pretrained(ckpt).state_dict()
    assert same(reloaded, trained["params"]) == set(trained["params"])
    before = (ckpt / SINGLE).read_bytes()
    assert to_model_layout(ckpt, logged.append) == 0 and (ckpt / SINGLE).read_bytes() == before   # resumed again


def test_sharded_checkpoint_and_its_index_are_renamed(trained, tmp_path):
    ckpt = save_checkpoint(trained, tmp_path / "checkpoint-5", max_shard_size="200KB")
    assert not (ckpt / SINGLE).exists() and len(set(json.loads((ckpt / INDEX).read_text())["weight_map"].values())) > 1
    assert to_model_layout(ckpt, lambda m: None) == 56
    weight_map = json.loads((ckpt / INDEX).read_text())["weight_map"]
    assert set(weight_map) == set(trained["params"]) - {"lm_head.weight"}   # tied to the embedding: saved once
    assert same(resumed_params(ckpt, tmp_path)[1], trained["params"]) == set(trained["params"])


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_a_checkpoint_of_another_model_is_refused(trained, tmp_path, change):
    ckpt = save_checkpoint(trained, tmp_path / "checkpoint-5")
    tensors = load_file(ckpt / SINGLE)
    if change == "extra":
        tensors["visual.extra_head.weight"] = torch.zeros(2)
    else:
        del tensors["visual.merger.mlp.0.weight"]
    save_file(tensors, ckpt / SINGLE, metadata={"format": "pt"})
    name = "model.visual.extra_head.weight" if change == "extra" else "model.visual.merger.mlp.0.weight"
    with pytest.raises(LayoutMismatch, match=f"do not match the model's parameters.*{name}"):
        to_model_layout(ckpt, lambda m: None)


def test_a_deepspeed_checkpoint_is_left_alone(trained, tmp_path):
    """DeepSpeed resumes from the engine's own module states (model names), not model.safetensors."""
    ckpt = save_checkpoint(trained, tmp_path / "checkpoint-5")
    (ckpt / "latest").write_text("global_step5")
    before = (ckpt / SINGLE).read_bytes()
    assert to_model_layout(ckpt, lambda m: None) == 0 and (ckpt / SINGLE).read_bytes() == before


def test_a_checkpoint_without_safetensors_is_left_alone(tmp_path):
    (tmp_path / "checkpoint-5").mkdir()
    assert to_model_layout(tmp_path / "checkpoint-5", lambda m: None) == 0


def test_a_qwen3vl_checkpoint_already_has_the_models_names(qwen3vl_dir, tmp_path):  # noqa: F811
    """transformers keeps no renaming for Qwen3-VL: its checkpoint passes the check unchanged (a
    false alarm here would stop every Qwen3-VL resume)."""
    from transformers import Qwen3VLForConditionalGeneration

    ckpt = tmp_path / "checkpoint-5"
    Qwen3VLForConditionalGeneration.from_pretrained(qwen3vl_dir).save_pretrained(ckpt)
    before = (ckpt / SINGLE).read_bytes()
    assert to_model_layout(ckpt, lambda m: None) == 0 and (ckpt / SINGLE).read_bytes() == before
