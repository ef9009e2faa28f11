"""The output config: the vision part from the ViT source, the text part from the LLM.

The reference notebook kept the whole Qwen2.5-VL config, which is only right when both sources have
the same text dimensions (3B + 3B). Here every text field comes from the LLM, the projector's output
size follows the LLM's hidden size, and M-RoPE sections are made valid for the LLM's head size.
Qwen2.5-VL and Qwen3-VL (init_vlm/families.py) differ in which text fields exist (Qwen3 states
head_dim, has no sliding window) and in how M-RoPE lays its sections out (Qwen3-VL interleaves them)."""

from __future__ import annotations

from init_vlm.families import Family, detect_family, families
from init_vlm.sources import Checkpoint

# Kept for callers that predate Qwen3-VL: the Qwen2.5-VL family's values.
LLM_MODEL_TYPES = ("qwen2",)
VIT_MODEL_TYPES = ("qwen2_5_vl",)
QWEN_MROPE_SECTION = (16, 24, 24)
TEXT_FIELDS = families()["qwen2_5_vl"].text_fields


def _transformers(name: str):
    import transformers

    return getattr(transformers, name)


def read_vit_config(vit: Checkpoint, family: Family | None = None):
    family = family or families().get(vit.read_config().get("model_type")) or families()["qwen2_5_vl"]
    raw = vit.read_config()
    if raw.get("model_type") != family.vit_model_type or "vision_config" not in raw:
        raise vit.fail(f"model_type {raw.get('model_type')!r} is not a {family.name} checkpoint "
                       f"(expected {family.vit_model_type} with a vision_config)")
    return _parse(vit, _transformers(family.vl_config))


def read_llm_config(llm: Checkpoint, family: Family | None = None):
    family = family or families()["qwen2_5_vl"]
    raw = llm.read_config()
    arch = raw.get("architectures") or []
    if raw.get("model_type") != family.llm_model_type or (arch and family.llm_architecture not in arch):
        raise llm.fail(f"model_type {raw.get('model_type')!r} / architectures {arch} is not a {family.llm_name} "
                       f"causal LM (expected model_type {family.llm_model_type}, {family.llm_architecture})")
    if "head_dim" not in family.text_fields and raw.get("head_dim") not in (
            None, raw.get("hidden_size", 0) // max(raw.get("num_attention_heads", 1), 1)):
        raise llm.fail(f"head_dim {raw['head_dim']} differs from hidden_size/num_attention_heads, "
                       f"which {family.name}'s text model assumes")
    if raw.get("use_sliding_window") and "use_sliding_window" not in family.text_fields:
        raise llm.fail(f"use_sliding_window is true, but {family.name}'s text model has no sliding window")
    return _parse(llm, _transformers(family.llm_config))


def read_configs(vit: Checkpoint, llm: Checkpoint):
    """(family, ViT config, LLM config), after refusing sources of two different families."""
    family = detect_family(vit, llm)
    return family, read_vit_config(vit, family), read_llm_config(llm, family)


def _parse(ckpt: Checkpoint, config_cls):
    try:
        return config_cls.from_pretrained(ckpt.folder)
    except Exception as err:  # strict config validation: report the field it names
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise ckpt.fail(f"config.json rejected by {config_cls.__name__}: {first}") from None


def head_dim(llm_cfg, llm: Checkpoint, family: Family) -> int:
    """The LLM's attention head size: stated (Qwen3) or hidden_size / heads (Qwen2)."""
    if "head_dim" in family.text_fields and getattr(llm_cfg, "head_dim", None):
        if llm_cfg.head_dim % 2:
            raise llm.fail(f"head_dim {llm_cfg.head_dim} is odd; rotary embeddings need an even head size")
        return llm_cfg.head_dim
    dim = llm_cfg.hidden_size // llm_cfg.num_attention_heads
    if llm_cfg.hidden_size % llm_cfg.num_attention_heads or dim % 2:
        raise llm.fail(f"hidden_size {llm_cfg.hidden_size} / {llm_cfg.num_attention_heads} heads gives no even "
                       f"head size, which rotary embeddings need")
    return dim


def mrope_section(llm_cfg, vit_cfg, llm: Checkpoint, family: Family | None = None) -> list[int]:
    """M-RoPE sections summing to head_dim/2: the ViT source's own when its head size matches, else derived."""
    family = family or families()["qwen2_5_vl"]
    half = head_dim(llm_cfg, llm, family) // 2
    own = (vit_cfg.text_config.rope_parameters or {}).get("mrope_section")
    if own and sum(own) == half and _fits(own, half, family):
        return list(own)
    base = family.mrope_base
    if family.mrope_interleaved:
        # Same proportions as Qwen3-VL's [24, 20, 20]: height and width equal, time takes the rest.
        h = round(half * base[1] / sum(base))
        section = [half - 2 * h, h, h]
    else:
        # Same proportions as Qwen2.5-VL's (1/4 time, the rest split evenly between height and width).
        t = round(half * base[0] / sum(base))
        h = (half - t) // 2
        section = [t, h, half - t - h]
    if min(section) < 1 or not _fits(section, half, family):
        raise llm.fail(f"head size {2 * half} is too small to split into the 3 M-RoPE sections")
    return section


def _fits(section, half: int, family: Family) -> bool:
    # Interleaved M-RoPE gives height frequency 1, 4, 7, ... and width 2, 5, 8, ...: 3*h and 3*w must fit in half.
    return not family.mrope_interleaved or 3 * max(section[1], section[2]) <= half


def merge_config(vit_cfg, llm_cfg, llm: Checkpoint, *, vocab_rows: int, token_ids: dict[str, int], dtype: str,
                 family: Family | None = None):
    """The VL config of the output model (Qwen2_5_VLConfig or Qwen3VLConfig)."""
    family = family or families()["qwen2_5_vl"]
    rope = dict(llm_cfg.rope_parameters or {})
    if rope.get("rope_type", "default") != "default":
        raise llm.fail(f"rope_type {rope['rope_type']!r} cannot be combined with {family.name}'s M-RoPE")
    rope["mrope_section"] = mrope_section(llm_cfg, vit_cfg, llm, family)
    if family.mrope_interleaved:
        rope["mrope_interleaved"] = True  # what Qwen3-VL checkpoints state; transformers always interleaves
    text = {field: getattr(llm_cfg, field) for field in family.text_fields}
    text.update(vocab_size=vocab_rows, rope_parameters=rope, pad_token_id=llm_cfg.pad_token_id,
                tie_word_embeddings=bool(llm_cfg.tie_word_embeddings), dtype=dtype)
    vision = _vision_dict(vit_cfg, out_hidden=llm_cfg.hidden_size)
    _check_deepstack(vision, llm_cfg, llm)
    config = _transformers(family.vl_config)(text_config=text, vision_config=vision,
                                             tie_word_embeddings=bool(llm_cfg.tie_word_embeddings), **token_ids)
    config.architectures = [family.vl_model]
    config.dtype = dtype
    return config


def _check_deepstack(vision: dict, llm_cfg, llm: Checkpoint) -> None:
    # DeepStack merger i adds its features to the hidden states after text layer i; one added after the
    # last layer reaches no later token, so it would never learn (and one past it is never used).
    n = len(vision.get("deepstack_visual_indexes") or [])
    if n and llm_cfg.num_hidden_layers <= n:
        raise llm.fail(f"num_hidden_layers {llm_cfg.num_hidden_layers} leaves no text layer after the {n} layers "
                       f"the ViT source's DeepStack mergers feed (vision_config.deepstack_visual_indexes); "
                       f"the LLM needs more than {n} layers")


def _vision_dict(vit_cfg, out_hidden: int) -> dict:
    generic = {"transformers_version", "architectures", "_name_or_path", "id2label", "label2id", "dtype",
               "output_hidden_states", "output_attentions", "return_dict", "chunk_size_feed_forward",
               "is_encoder_decoder", "problem_type", "model_type"}
    vision = {k: v for k, v in vit_cfg.vision_config.to_dict().items() if k not in generic}
    vision["out_hidden_size"] = out_hidden  # the projector (and DeepStack mergers) now feed the LLM
    return vision
