"""init_vlm: build a fresh Qwen2.5-VL model from a pretrained ViT, a pretrained Qwen2 LLM and a new projector.

    from init_vlm import build_vlm
    build_vlm("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-3B-Instruct", Path("models/fresh-3b"))

Modules, in the order the stage uses them: sources (where inputs come from; hub for hub ids),
config_merge, tokenizer (tokenizer + processor), weights (plan and streaming), projector, verify,
manifest, publish (the hidden work folder and its atomic rename); build ties them together."""

from init_vlm.build import build_vlm
from init_vlm.errors import InitVLMError
from init_vlm.sources import resolve_source

__all__ = ["build_vlm", "InitVLMError", "resolve_source"]
