"""How the model sees an image and a prompt: the backbone's (configs/hydra/backbone/*.yaml), shared
by training and evaluation, so `plan` prints it the same way for both."""

from __future__ import annotations

from typing import Mapping


def view_line(cfg: Mapping) -> str:
    """The template, the patch size and the pixel budget, also in visual tokens (2x2 patches each)."""
    bb, px = cfg["backbone"], cfg["pixels"]
    unit = int(bb["patch_size"]) * 2
    lo, hi = int(px["min_pixels"]), int(px["max_pixels"])
    system = bb.get("system_prompt")
    return (f"view: template {bb['template']} / lmms-eval {bb['eval_model']}, patch {bb['patch_size']} px "
            f"({unit} px per visual token), pixels {lo}..{hi} = {-(-lo // unit**2)}..{hi // unit**2} visual tokens, "
            f"system prompt {system!r}" + (" (no system turn)" if system == "" else ""))
