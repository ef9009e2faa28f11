"""Render one training stage to a complete LLaMA-Factory YAML (train/stage.py `render` calls it).

The YAML alone reproduces the stage by hand (`llamafactory-cli train llamafactory.yaml`; for a
Qwen3-VL model `python -m train.lf_train train llamafactory.yaml`, which registers the DeepStack
mergers as projector first): every value it needs is written out, nothing comes from the harness
at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from train.batch import gradient_accumulation
from train.launch import world_size
from train.recipe import data_keys, packs

# Pass-through keys of train.common (LLaMA-Factory argument names).
_COMMON_KEYS = ("template", "cutoff_len", "num_train_epochs", "max_steps", "lr_scheduler_type", "warmup_ratio",
                "weight_decay", "per_device_train_batch_size", "bf16", "save_steps",
                "save_total_limit", "logging_steps", "preprocessing_num_workers", "dataloader_num_workers")
FREEZE_KEYS = ("freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model")


def render_lf_config(*, config: Mapping[str, Any], model_dir: Path, dataset_dir: Path, dataset: str,
                     output_dir: Path, tokenized_path: Path | None, deepspeed_json: Path | None) -> dict:
    common, spec = config["common"], config["stage"]
    world = world_size(config["world_size"])
    yaml: dict[str, Any] = {
        **data_keys(model_dir=str(model_dir), dataset_dir=str(dataset_dir), dataset=dataset,
                    template=common["template"], cutoff_len=common["cutoff_len"], packing=packs(config)),
        # method: full fine-tuning, the three freeze flags always explicit (LLaMA-Factory's defaults
        # for them differ between versions, and a silently frozen part wastes a run)
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        **{k: bool(spec[k]) for k in FREEZE_KEYS},
        "overwrite_cache": False,
        # output
        "output_dir": str(output_dir),
        "overwrite_output_dir": False,   # lets LLaMA-Factory resume from the last checkpoint
        "plot_loss": False,
        "report_to": "none",
        "save_only_model": False,        # resuming needs the optimizer state
        # train
        "learning_rate": float(spec["learning_rate"]),
        "gradient_accumulation_steps": gradient_accumulation(
            int(spec["global_batch_size"]), int(common["per_device_train_batch_size"]), world, config["name"]),
        "seed": int(config["seed"]),
        "data_seed": int(config["seed"]),
    }
    yaml.update({k: common[k] for k in _COMMON_KEYS if k not in yaml})
    # LLaMA-Factory enables checkpointing itself (not through the HF Trainer flag). Reentrant
    # checkpointing breaks with a frozen LLM ("None of the inputs have requires_grad").
    yaml["disable_gradient_checkpointing"] = not common["gradient_checkpointing"]
    yaml["use_reentrant_gc"] = False
    if tokenized_path is not None:
        yaml["tokenized_path"] = str(tokenized_path)
    if deepspeed_json is not None:
        yaml["deepspeed"] = str(deepspeed_json)
    yaml.update(common.get("extra") or {})
    return yaml
