"""The output tokenizer and processor: the LLM's tokenizer, made able to carry images and videos.

The processor expands <|image_pad|> into one token per merged patch and the model finds images by
that id, so the vision tokens must exist, be atomic (special), and match the config's ids."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from init_vlm.qwen_vocab import CONFIG_TOKEN_FIELDS, QWEN2_VL_CHAT_TEMPLATE, QWEN25_ADDED_TOKENS, VISION_TOKENS
from init_vlm.sources import Checkpoint

# Qwen2.5's added tokens up to <|video_pad|>: added in this order when vision tokens are missing, so a
# Qwen2 tokenizer (which ends at <|im_end|>) gets them at the very ids Qwen2.5-VL uses.
_VISION_PREFIX = QWEN25_ADDED_TOKENS[: [t for t, _ in QWEN25_ADDED_TOKENS].index("<|video_pad|>") + 1]


@dataclass
class PreparedTokenizer:
    tokenizer: object
    original_len: int        # len(tokenizer) as the LLM shipped it
    added: list[str]         # tokens this stage added, in id order

    @property
    def token_ids(self) -> dict[str, int]:
        """The config's image/video/vision token-id fields, read from the tokenizer."""
        return {f: self.tokenizer.convert_tokens_to_ids(t) for f, t in CONFIG_TOKEN_FIELDS.items()}

    def added_ids(self) -> list[int]:
        return [self.tokenizer.convert_tokens_to_ids(t) for t in self.added]


def prepare_tokenizer(llm: Checkpoint, chat_template: str = QWEN2_VL_CHAT_TEMPLATE) -> PreparedTokenizer:
    tok = _load_tokenizer(llm)
    original_len = len(tok)
    vocab = tok.get_vocab()
    added: list[str] = []
    if any(t not in vocab for t in VISION_TOKENS):
        from tokenizers import AddedToken

        for content, special in _VISION_PREFIX:
            if content not in vocab:
                tok.add_tokens([AddedToken(content, special=special, normalized=False)], special_tokens=special)
                added.append(content)
    _check_atomic(tok, llm)
    tok.chat_template = chat_template  # the LLM's own template has no image/video parts
    return PreparedTokenizer(tok, original_len, added)


def _load_tokenizer(llm: Checkpoint):
    from transformers import AutoTokenizer

    # Without files, transformers 5 quietly builds an empty Qwen2 tokenizer from the model type alone.
    has_files = (llm.folder / "tokenizer.json").is_file() or all(
        (llm.folder / f).is_file() for f in ("vocab.json", "merges.txt"))
    if not has_files:
        raise llm.fail("tokenizer cannot be loaded: no tokenizer.json (or vocab.json + merges.txt)")
    try:
        tok = AutoTokenizer.from_pretrained(llm.folder)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise llm.fail(f"tokenizer cannot be loaded: {first}") from None
    if len(tok) < 256:  # a byte-level BPE has at least its 256 byte tokens
        raise llm.fail(f"tokenizer cannot be loaded: it has only {len(tok)} tokens")
    return tok


def _check_atomic(tok, llm: Checkpoint) -> None:
    for token in VISION_TOKENS:
        ids = tok(token, add_special_tokens=False).input_ids
        if ids != [tok.convert_tokens_to_ids(token)]:
            raise llm.fail(f"tokenizer splits {token} into {ids}; it must be a single added token")


def build_processor(vit: Checkpoint, tokenizer, family=None, pixels: Mapping | None = None):
    """Image and video processors from the ViT source (its patch/merge sizes), the LLM's tokenizer, and
    the run's pixel budget as the image processor's resize bounds (None keeps the source's)."""
    import transformers
    from transformers import AutoImageProcessor, AutoVideoProcessor

    try:
        image = AutoImageProcessor.from_pretrained(vit.folder)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise vit.fail(f"no usable image processor (preprocessor_config.json / processor_config.json): {first}") \
            from None
    try:
        video = AutoVideoProcessor.from_pretrained(vit.folder)
    except Exception:
        if family is not None and family.vit_model_type != "qwen2_5_vl":
            raise vit.fail("no usable video processor (video_preprocessor_config.json), which every "
                           f"{family.name} checkpoint ships") from None
        # Older Qwen2.5-VL checkpoints have no video processor config: derive one from the image settings.
        from transformers import Qwen2VLVideoProcessor

        video = Qwen2VLVideoProcessor(size=dict(image.size), patch_size=image.patch_size,
                                      merge_size=image.merge_size, temporal_patch_size=image.temporal_patch_size)
    if pixels is not None:
        set_pixel_budget(image, pixels)
    processor_cls = getattr(transformers, family.processor if family else "Qwen2_5_VLProcessor")
    template = family.chat_template if family else QWEN2_VL_CHAT_TEMPLATE
    return processor_cls(image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=template)


def set_pixel_budget(image_processor, pixels: Mapping) -> None:
    """The image processor resizes every image into [min_pixels, max_pixels] itself, in one step from
    the image's own size, rounding to whole visual tokens as evaluation's resize does (qwen_vl_utils'
    smart_resize from the original size, within the same budget); training leaves all resizing to this
    processor (train/recipe.py), so both see the same grid. transformers 5 reads the bounds from `size`
    (shortest_edge/longest_edge are pixel areas) for Qwen2.5-VL's and Qwen3-VL's image processors alike."""
    from transformers.image_utils import SizeDict

    image_processor.size = SizeDict(shortest_edge=int(pixels["min_pixels"]), longest_edge=int(pixels["max_pixels"]))
