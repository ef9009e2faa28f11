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


# LLaMA-Factory's image plugin first shrinks (or grows) an image into image_max_pixels (image_min_pixels),
# with int() sides, and only then does the model's processor round that to whole visual tokens. Two
# roundings land on other sizes than one: evaluation (lmms-eval through qwen_vl_utils) and data_prep's
# token counts resize once, from the image's own size (2000x1500 in a 1280-token budget: 41 x 31 = 1271
# visual tokens after two roundings, 41 x 30 = 1230 after one). So the pixel budget lives in the model's
# image processor (init_vlm writes it there) and LLaMA-Factory's own bounds are set where its resize never
# fires: no decodable image reaches 2**62 pixels, and none has fewer than 0.
LF_IMAGE_PIXELS = {"image_max_pixels": 2**62, "image_min_pixels": 0}


def data_keys(*, model_dir: str, dataset_dir: str, dataset: str, template: str, cutoff_len: int,
              packing: bool) -> dict:
    """The LLaMA-Factory keys that decide a stage's tokenized data (train.common.extra goes on top
    of them, for training and tokenizing alike). The pixel budget is not among them: the model's image
    processor holds it (LF_IMAGE_PIXELS)."""
    keys = {"model_name_or_path": model_dir, "trust_remote_code": False, **LF_IMAGE_PIXELS,
            "dataset_dir": dataset_dir, "dataset": dataset,
            "media_dir": dataset_dir,   # image paths are absolute; set anyway, so a relative one resolves here
            "template": template, "cutoff_len": cutoff_len}
    if packing:
        # neat_packing, never plain packing: a sample attending to the samples packed before it
        # trains on text it was never paired with
        keys.update({"packing": True, "neat_packing": True})
    return keys
