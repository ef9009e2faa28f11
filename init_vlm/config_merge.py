"""The output config: the vision part from the ViT source, the text part from the LLM.

The reference notebook kept the whole Qwen2.5-VL config, which is only right when both sources have
the same text dimensions (3B + 3B). Here every text field comes from the LLM, the projector's output
size follows the LLM's hidden size, and M-RoPE sections are made valid for the LLM's head size."""

from __future__ import annotations

from init_vlm.sources import Checkpoint

LLM_MODEL_TYPES = ("qwen2",)            # Qwen2 and Qwen2.5 causal LMs share this type and layout
LLM_ARCHITECTURES = ("Qwen2ForCausalLM",)
VIT_MODEL_TYPES = ("qwen2_5_vl",)
# Qwen2.5-VL's own split of 64 rotary frequencies (head_dim 128) into time/height/width.
QWEN_MROPE_SECTION = (16, 24, 24)

# Text fields the Qwen2.5-VL text config takes over from the LLM unchanged.
TEXT_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps",
               "use_sliding_window", "sliding_window", "max_window_layers", "attention_dropout",
               "initializer_range", "bos_token_id", "eos_token_id", "use_cache")


def read_vit_config(vit: Checkpoint):
    raw = vit.read_config()
    if raw.get("model_type") not in VIT_MODEL_TYPES or "vision_config" not in raw:
        raise vit.fail(f"model_type {raw.get('model_type')!r} is not a Qwen2.5-VL checkpoint "
                       f"(expected {VIT_MODEL_TYPES[0]} with a vision_config)")
    from transformers import Qwen2_5_VLConfig

    return _parse(vit, Qwen2_5_VLConfig)


def read_llm_config(llm: Checkpoint):
    raw = llm.read_config()
    arch = raw.get("architectures") or []
    if raw.get("model_type") not in LLM_MODEL_TYPES or (arch and not set(arch) & set(LLM_ARCHITECTURES)):
        raise llm.fail(f"model_type {raw.get('model_type')!r} / architectures {arch} is not a Qwen2-family "
                       f"causal LM (expected model_type qwen2, Qwen2ForCausalLM)")
    if raw.get("head_dim") not in (None, raw.get("hidden_size", 0) // max(raw.get("num_attention_heads", 1), 1)):
        raise llm.fail(f"head_dim {raw['head_dim']} differs from hidden_size/num_attention_heads, "
                       f"which Qwen2.5-VL's text model assumes")
    from transformers import Qwen2Config

    return _parse(llm, Qwen2Config)


def _parse(ckpt: Checkpoint, config_cls):
    try:
        return config_cls.from_pretrained(ckpt.folder)
    except Exception as err:  # strict config validation: report the field it names
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise ckpt.fail(f"config.json rejected by {config_cls.__name__}: {first}") from None


def mrope_section(llm_cfg, vit_cfg, llm: Checkpoint) -> list[int]:
    """M-RoPE sections summing to head_dim/2: the ViT source's own when its head size matches, else derived."""
    head_dim = llm_cfg.hidden_size // llm_cfg.num_attention_heads
    if llm_cfg.hidden_size % llm_cfg.num_attention_heads or head_dim % 2:
        raise llm.fail(f"hidden_size {llm_cfg.hidden_size} / {llm_cfg.num_attention_heads} heads gives no even "
                       f"head size, which rotary embeddings need")
    half = head_dim // 2
    vit_text = vit_cfg.text_config
    own = (vit_text.rope_parameters or {}).get("mrope_section")
    if own and sum(own) == half:
        return list(own)
    # Same proportions as Qwen's (1/4 time, the rest split evenly between height and width).
    t = round(half * QWEN_MROPE_SECTION[0] / sum(QWEN_MROPE_SECTION))
    h = (half - t) // 2
    section = [t, h, half - t - h]
    if min(section) < 1:
        raise llm.fail(f"head size {head_dim} is too small to split into the 3 M-RoPE sections")
    return section


def merge_config(vit_cfg, llm_cfg, llm: Checkpoint, *, vocab_rows: int, token_ids: dict[str, int], dtype: str):
    """The Qwen2_5_VLConfig of the output model."""
    from transformers import Qwen2_5_VLConfig

    rope = dict(llm_cfg.rope_parameters or {})
    if rope.get("rope_type", "default") != "default":
        raise llm.fail(f"rope_type {rope['rope_type']!r} cannot be combined with Qwen2.5-VL's M-RoPE")
    rope["mrope_section"] = mrope_section(llm_cfg, vit_cfg, llm)
    text = {field: getattr(llm_cfg, field) for field in TEXT_FIELDS}
    text.update(vocab_size=vocab_rows, rope_parameters=rope, pad_token_id=llm_cfg.pad_token_id,
                tie_word_embeddings=bool(llm_cfg.tie_word_embeddings), dtype=dtype)
    vision = _vision_dict(vit_cfg, out_hidden=llm_cfg.hidden_size)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                              tie_word_embeddings=bool(llm_cfg.tie_word_embeddings), **token_ids)
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    config.dtype = dtype
    return config


def _vision_dict(vit_cfg, out_hidden: int) -> dict:
    generic = {"transformers_version", "architectures", "_name_or_path", "id2label", "label2id", "dtype",
               "output_hidden_states", "output_attentions", "return_dict", "chunk_size_feed_forward",
               "is_encoder_decoder", "problem_type", "model_type"}
    vision = {k: v for k, v in vit_cfg.vision_config.to_dict().items() if k not in generic}
    vision["out_hidden_size"] = out_hidden  # the projector now feeds the LLM
    return vision
