"""`llamafactory-cli train`, for models whose new projector LLaMA-Factory files partly under the vision tower.

    python -m train.lf_train train llamafactory.yaml      # what the harness runs for a Qwen3-VL stage

A fresh Qwen3-VL's projector is its merger *and* its DeepStack mergers (`visual.deepstack_merger_list`,
one per `deepstack_visual_indexes` entry), all newly initialised by init_vlm. LLaMA-Factory 0.9.5
registers Qwen3-VL with the DeepStack mergers among the vision tower's keys
(model/model_utils/visual.py), so `freeze_vision_tower: true` would keep them frozen at their random
init through the alignment stage; and its name-pattern freeze tuning cannot select their LayerNorms
(`.0.norm`) without also selecting the ViT blocks' `norm1`/`norm2`. So this entry point re-registers
Qwen3-VL in LLaMA-Factory's own table of composite models with the DeepStack mergers on the projector's
side, then hands over to LLaMA-Factory's launcher unchanged. The installed LLaMA-Factory is not
modified, and the three freeze flags keep their meaning: projector-only trains merger + DeepStack
mergers, projector+llm trains them with the LLM, the ViT stays as frozen as the flags say.

Under torchrun, LLaMA-Factory starts every worker from its launcher's own file; this module points
that at itself, so each worker registers before it builds the model. Should a later LLaMA-Factory
start its workers some other way, they would train without the DeepStack mergers, and the harness's
trainable-parameter check (train/trainable.py CountCheck) stops the stage at LLaMA-Factory's first
count line rather than let it run."""

from __future__ import annotations

import sys

# model_type -> the key prefixes (LLaMA-Factory's substring keys) that belong to the new projector
# although LLaMA-Factory lists them with the vision tower.
PROJECTOR_PARTS = {
    "qwen3_vl": ("visual.deepstack_merger_list",),
    "qwen3_vl_moe": ("visual.deepstack_merger_list",),
}


def register_projector_parts() -> None:
    """Move each model type's PROJECTOR_PARTS from vision_model_keys to projector_keys."""
    from llamafactory.model.model_utils import visual

    for model_type, parts in PROJECTOR_PARTS.items():
        entry = visual.COMPOSITE_MODELS.get(model_type)
        if entry is None:
            continue
        entry.projector_keys = [*entry.projector_keys, *(p for p in parts if p not in entry.projector_keys)]
        entry.vision_model_keys = [k for k in entry.vision_model_keys if k not in parts]


def main() -> None:
    register_projector_parts()
    from llamafactory import launcher

    launcher.__file__ = __file__   # torchrun's workers run this file (below), not LLaMA-Factory's
    launcher.launch()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "train":
        main()
    else:   # a torchrun worker: LLaMA-Factory's launcher passed the YAML path alone
        # Run as a file, Python puts train/ first on sys.path, where launch.py, render.py and the
        # like would shadow any top-level module of the same name; the package is installed anyway.
        sys.path.pop(0)
        register_projector_parts()
        from llamafactory.train.tuner import run_exp

        run_exp()
