"""The sequence length training will see, per sample, before training: LLaMA-Factory
truncates an over-long multimodal row silently, cutting image tokens and breaking the sample.

Visual tokens: what training does to an image of size (w, h): LLaMA-Factory's qwen2_vl / qwen3_vl
plugin only enlarges sides below 28 px and clamps the aspect ratio at 200 (its own pixel bounds are set
where they never fire, train/recipe.py LF_IMAGE_PIXELS), then the image processor's smart_resize takes
the image in one step to multiples of patch_size x merge_size within the processor's size bounds,
which init_vlm sets to the pixel budget [min_pixels, max_pixels]; tokens = (h/unit) * (w/unit), as
evaluation counts them. The unit and bounds come from the model folder's processor config
(`VisualGrid.from_model_dir`): 28 px for Qwen2.5-VL (14-px patches, 2x2 merge), 32 px for Qwen3-VL
(16-px patches). Without a model folder the Qwen2.5-VL grid with the pixel budget as bounds is assumed.

Text tokens: LLaMA-Factory renders the qwen2_vl (or qwen3_vl_nothink) template message by message; special tokens split
the text, so the count is the sum of the tokens of each text piece plus a fixed overhead per turn:

    system   "<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n"   (once per sample; Qwen3-VL's
             qwen3_vl_nothink template adds no default system turn)
    user     "<|im_start|>user\\n" {content} "<|im_end|>\\n<|im_start|>assistant\\n"
    assistant {content} "<|im_end|>\\n"
    image    "<|vision_start|>" visual tokens "<|vision_end|>"    (replaces each <image>)

With a tokenizer the pieces are counted exactly; the only approximation is that a piece is
tokenized apart from its neighbours (at most one token per message boundary, since Qwen's
pre-tokenizer already splits at newlines). Without a tokenizer every piece counts
ceil(utf-8 bytes / 4) and every special token 1: an estimate, flagged as such in the manifest."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

FACTOR = 28  # Qwen2.5-VL: 14-px patches merged 2x2
LF_MIN_SIDE = 28  # LLaMA-Factory's qwen2_vl plugin (and qwen3_vl, which inherits it) enlarges sides below 28 px
DEFAULT_SYSTEM = "You are a helpful assistant."
IMAGE_TAG = "<image>"
TEMPLATE = {
    "system": ("<|im_start|>system\n", "<|im_end|>\n"),
    "user": ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
    "assistant": ("", "<|im_end|>\n"),
    "image": ("<|vision_start|>", "<|vision_end|>"),
}
SPECIAL = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>")


def smart_resize(height: int, width: int, factor: int = FACTOR, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """transformers' Qwen2-VL smart_resize (the aspect-ratio error aside: LF clamps before)."""
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def lf_preresize(width: int, height: int) -> tuple[int, int]:
    """LLaMA-Factory 0.9.5 Qwen2VLPlugin._preprocess_image, on sizes only, with its pixel bounds off
    (train/recipe.py LF_IMAGE_PIXELS): the pixel budget is the processor's, applied in smart_resize."""
    if min(width, height) < LF_MIN_SIDE:
        width, height = max(width, LF_MIN_SIDE), max(height, LF_MIN_SIDE)
    if width / height > 200:
        width = height * 180
    if height / width > 200:
        height = width * 180
    return width, height


@dataclass(frozen=True)
class VisualGrid:
    """One visual token's side in pixels and the image processor's own resize bounds (None: the pixel budget)."""

    unit: int = FACTOR
    min_pixels: int | None = None
    max_pixels: int | None = None

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> "VisualGrid":
        """Read from the file the processor itself is built from: preprocessor_config.json (as published),
        else the image_processor part of processor_config.json (as transformers 5 saves it)."""
        path, cfg = processor_config(model_dir)
        for key in ("patch_size", "merge_size"):
            if not isinstance(cfg.get(key), int) or cfg[key] < 1:
                raise ValueError(f"{path}: key {key!r} must be a positive integer, found {cfg.get(key)!r}")
        size = cfg.get("size") or {}
        return cls(unit=cfg["patch_size"] * cfg["merge_size"],
                   min_pixels=size.get("shortest_edge", cfg.get("min_pixels")),
                   max_pixels=size.get("longest_edge", cfg.get("max_pixels")))

    def bounds(self, min_pixels: int, max_pixels: int) -> tuple[int, int]:
        return (self.min_pixels if self.min_pixels is not None else min_pixels,
                self.max_pixels if self.max_pixels is not None else max_pixels)


DEFAULT_GRID = VisualGrid()


def processor_config(model_dir: str | Path) -> tuple[Path, dict]:
    """(file, image processor settings) of a model folder; ValueError names the file when there is none."""
    folder = Path(model_dir)
    for name, part in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = folder / name
        if not path.is_file():
            continue
        try:
            cfg = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read the image processor config ({err})") from None
        if part is None:
            return path, cfg
        if isinstance(cfg.get(part), dict):
            return path, cfg[part]
    raise ValueError(f"{folder}: no preprocessor_config.json, nor a processor_config.json with an image_processor")


@lru_cache(maxsize=65536)
def visual_tokens(width: int, height: int, min_pixels: int, max_pixels: int, grid: VisualGrid = DEFAULT_GRID) -> int:
    width, height = lf_preresize(width, height)
    h_bar, w_bar = smart_resize(height, width, grid.unit, *grid.bounds(min_pixels, max_pixels))
    return (h_bar // grid.unit) * (w_bar // grid.unit)


def max_visual_tokens(min_pixels: int, max_pixels: int, grid: VisualGrid = DEFAULT_GRID) -> int:
    """Upper bound for an image whose size is unknown (image checks off): the processor's bounds (the pixel
    budget) in visual units."""
    min_pixels, max_pixels = grid.bounds(min_pixels, max_pixels)
    unit2 = grid.unit * grid.unit
    return max(max_pixels // unit2, math.ceil(min_pixels / unit2))


def estimate(text: str) -> int:
    """ceil(utf-8 bytes / 4); isascii() is O(1), so ASCII text is never encoded."""
    n = len(text) if text.isascii() else len(text.encode("utf-8"))
    return (n + 3) // 4


class TextCounter:
    """Counts text tokens of many strings at once, with a tokenizer (exact) or the bytes/4 estimate."""

    def __init__(self, tokenizer_json: str | None = None, default_system: str | None = DEFAULT_SYSTEM):
        """default_system: the system turn the template adds when a row has none (None: it adds none)."""
        self.tokenizer = None
        if tokenizer_json is not None:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.default_system = default_system
        self.overheads = self._overheads()

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    def count(self, texts: list[str]) -> list[int]:
        if self.tokenizer is None:
            return [estimate(t) for t in texts]
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def count_special(self, text: str) -> int:
        """Tokens of a template string holding special tokens (each counts 1 in the estimate)."""
        if self.tokenizer is not None:
            return len(self.tokenizer.encode(text, add_special_tokens=False).ids)
        n = 0
        for tok in SPECIAL:
            n += text.count(tok)
            text = text.replace(tok, "")
        return n + (estimate(text) if text else 0)

    def truncate(self, text: str, budget: int) -> str:
        """The longest prefix of `text` that counts at most `budget` tokens (budget >= 1)."""
        if self.tokenizer is None:
            return text.encode("utf-8")[:4 * budget].decode("utf-8", "ignore")
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        keep = budget
        for _ in range(4):  # re-tokenizing a prefix can merge differently: shrink until it fits
            prefix = text[:offsets[min(keep, len(offsets)) - 1][1]]
            over = self.count([prefix])[0] - budget
            if over <= 0:
                return prefix
            keep -= over
            if keep <= 0:
                break
        return ""

    def _overheads(self) -> dict:
        sys_open, sys_close = TEMPLATE["system"]
        return {
            "default_system": (0 if self.default_system is None
                               else self.count_special(sys_open + self.default_system + sys_close)),
            "system": self.count_special(sys_open + sys_close),
            "user": self.count_special("".join(TEMPLATE["user"])),
            "assistant": self.count_special("".join(TEMPLATE["assistant"])),
            "image": self.count_special("".join(TEMPLATE["image"])),
        }
