"""The training recipe's facts that several modules need, stated once: the stages in order, which
of them a run has, and the LLaMA-Factory keys that decide what a stage's data becomes (read by
train/render.py for training and by train/tokenize_stage.py for pretokenizing, so pretokenized data
is the data training would have tokenized itself)."""

from __future__ import annotations

from typing import Any, Mapping

from data_prep.stage import has_data

STAGES = ("alignment", "further_pretrain", "sft")


def runs_stage(cfg: Mapping, name: str) -> bool:
    """Further pretraining exists only when there is a caption source (not for vanilla)."""
    return name != "further_pretrain" or has_data(cfg["captions"])


def packs(config: Mapping[str, Any]) -> bool:
    """Whether a stage packs samples: its own `packing`, else train.common's (off when absent)."""
    spec, common = config.get("stage") or {}, config["common"]
    return bool(spec.get("packing", common.get("packing", False)))


def data_keys(*, model_dir: str, dataset_dir: str, dataset: str, pixels: Mapping, template: str,
              cutoff_len: int, packing: bool) -> dict:
    """The LLaMA-Factory keys that decide a stage's tokenized data (train.common.extra goes on top
    of them, for training and tokenizing alike)."""
    keys = {"model_name_or_path": model_dir, "trust_remote_code": False,
            # the pixel budget of data_prep and evaluation
            "image_max_pixels": pixels["max_pixels"], "image_min_pixels": pixels["min_pixels"],
            "dataset_dir": dataset_dir, "dataset": dataset,
            "media_dir": dataset_dir,   # image paths are absolute; set anyway, so a relative one resolves here
            "template": template, "cutoff_len": cutoff_len}
    if packing:
        # neat_packing, never plain packing: a sample attending to the samples packed before it
        # trains on text it was never paired with
        keys.update({"packing": True, "neat_packing": True})
    return keys
