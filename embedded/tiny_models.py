"""Tiny random-weight stand-ins for the paper's two sources, built offline in seconds.

- ViT source: a complete Qwen2.5-VL checkpoint (init_vlm keeps only its vision tower and processor).
- LLM source: a plain Qwen2 causal LM whose hidden size differs from the ViT source's text part,
  so init_vlm really has to merge configs and build a projector of a new shape.
- The same pair for Qwen3-VL (CapRL's newer captioners): a complete Qwen3-VL checkpoint with DeepStack
  mergers and a Qwen3 causal LM whose explicit head_dim differs from hidden/heads, as in Qwen3-4B."""

from __future__ import annotations

from pathlib import Path

# 28*28 = one merged 2x2 block of 14-px patches; 4..16 blocks keep images to a handful of tokens.
MIN_PIXELS = 28 * 28 * 4
MAX_PIXELS = 28 * 28 * 16
# Qwen3-VL: 32*32 = one merged 2x2 block of 16-px patches; the same 4..16 tokens per image.
QWEN3VL_MIN_PIXELS = 32 * 32 * 4
QWEN3VL_MAX_PIXELS = 32 * 32 * 16


def build_tiny_vit_source(out_dir: Path, tokenizer_dir: Path, *, text_hidden: int = 48, seed: int = 0,
                          dtype: str = "float32", vocab_size: int | None = None) -> Path:
    """Write a tiny Qwen2_5_VLForConditionalGeneration + tokenizer + processor into `out_dir`.

    vocab_size: embedding rows (default len(tokenizer); real Qwen pads to 151936)."""
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2_5_VLConfig(
        vision_config=_tiny_vision_config(out_hidden=text_hidden),
        text_config=_tiny_text_config(tok, hidden=text_hidden, layers=2, heads=4, kv_heads=2, mrope=True,
                                      rows=vocab_size),
        tie_word_embeddings=False,  # like Qwen2.5-VL-7B: the ViT source has its own lm_head
        **_token_ids(tok),
    )
    out_dir = Path(out_dir)
    _save_model(Qwen2_5_VLForConditionalGeneration, config, out_dir, seed, getattr(torch, dtype))
    tok.save_pretrained(out_dir)
    build_tiny_processor(tok).save_pretrained(out_dir)
    return out_dir


def build_tiny_llm_source(out_dir: Path, tokenizer_dir: Path, *, hidden: int = 64, layers: int = 2, seed: int = 1,
                          tie_word_embeddings: bool = True, dtype: str = "float32",
                          vocab_size: int | None = None, **config_overrides) -> Path:
    """Write a tiny Qwen2ForCausalLM + tokenizer into `out_dir` (tied embeddings like Qwen2.5-3B by default).

    config_overrides: Qwen2Config fields to set instead of the tiny defaults (e.g. num_attention_heads,
    rope_parameters), so tests can build an LLM that differs from the ViT source's text part everywhere."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    fields = _tiny_text_config(tok, hidden=hidden, layers=layers, heads=4, kv_heads=2, mrope=False, rows=vocab_size)
    config = Qwen2Config(**{**fields, **config_overrides}, tie_word_embeddings=tie_word_embeddings)
    out_dir = Path(out_dir)
    _save_model(Qwen2ForCausalLM, config, out_dir, seed, getattr(torch, dtype))
    tok.save_pretrained(out_dir)
    return out_dir


def build_tiny_processor(tokenizer, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS):
    """A Qwen2.5-VL processor around `tokenizer`, with a small pixel budget unless given another
    (benchmarks/bench_gpu_train.py builds a 3B-shaped source with the paper's)."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    # Explicit size dicts: the processors' defaults are class-level dicts they would otherwise mutate.
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    image = Qwen2VLImageProcessor(size=dict(size), patch_size=14, merge_size=2, temporal_patch_size=2)
    video = Qwen2VLVideoProcessor(size=dict(size), patch_size=14, merge_size=2, temporal_patch_size=2)
    return Qwen2_5_VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                               chat_template=tokenizer.chat_template)


def build_tiny_qwen3vl_vit_source(out_dir: Path, tokenizer_dir: Path, *, text_hidden: int = 48, seed: int = 0,
                                  dtype: str = "float32", vocab_size: int | None = None) -> Path:
    """Write a tiny Qwen3VLForConditionalGeneration + tokenizer + processor into `out_dir`."""
    import torch
    from transformers import AutoTokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = _tiny_text_config(tok, hidden=text_hidden, layers=2, heads=4, kv_heads=2, mrope=False, rows=vocab_size)
    # head_dim 16, not 48/4: Qwen3 states it; M-RoPE interleaved like Qwen3-VL's [24, 20, 20] of 64.
    text.update(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                              "mrope_section": [4, 2, 2], "mrope_interleaved": True})
    config = Qwen3VLConfig(vision_config=_tiny_qwen3vl_vision_config(out_hidden=text_hidden), text_config=text,
                           tie_word_embeddings=False, **_token_ids(tok))
    out_dir = Path(out_dir)
    _save_model(Qwen3VLForConditionalGeneration, config, out_dir, seed, getattr(torch, dtype))
    tok.save_pretrained(out_dir)
    build_tiny_qwen3vl_processor(tok).save_pretrained(out_dir)
    return out_dir


def build_tiny_qwen3_llm_source(out_dir: Path, tokenizer_dir: Path, *, hidden: int = 64, layers: int = 3,
                                seed: int = 1, tie_word_embeddings: bool = True, dtype: str = "float32",
                                vocab_size: int | None = None, **config_overrides) -> Path:
    """Write a tiny Qwen3ForCausalLM + tokenizer (tied like Qwen3-4B, head_dim 32 != hidden/heads).

    3 layers: more than the tiny ViT's 2 DeepStack mergers, which add their features after text layers
    0 and 1; after the last layer they would reach no later token and never get a gradient."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    fields = _tiny_text_config(tok, hidden=hidden, layers=layers, heads=4, kv_heads=2, mrope=False, rows=vocab_size)
    fields.update(head_dim=32, max_window_layers=layers)
    config = Qwen3Config(**{**fields, **config_overrides}, tie_word_embeddings=tie_word_embeddings)
    out_dir = Path(out_dir)
    _save_model(Qwen3ForCausalLM, config, out_dir, seed, getattr(torch, dtype))
    tok.save_pretrained(out_dir)
    return out_dir


def build_tiny_qwen3vl_processor(tokenizer):
    """A Qwen3-VL processor (16-px patches) with a small pixel budget around `tokenizer`."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    size = {"shortest_edge": QWEN3VL_MIN_PIXELS, "longest_edge": QWEN3VL_MAX_PIXELS}
    # Qwen3-VL normalizes with mean = std = 0.5, not CLIP's values.
    norm = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    image = Qwen2VLImageProcessor(size=dict(size), patch_size=16, merge_size=2, temporal_patch_size=2, **norm)
    video = Qwen3VLVideoProcessor(size=dict(size), patch_size=16, merge_size=2, temporal_patch_size=2, **norm)
    return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                            chat_template=tokenizer.chat_template)


def _tiny_qwen3vl_vision_config(out_hidden: int) -> dict:
    # 64 learned positions = an 8x8 grid, interpolated to any image size; DeepStack taps both blocks.
    return dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=16,
                spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=out_hidden, num_position_embeddings=64,
                deepstack_visual_indexes=[0, 1], hidden_act="gelu_pytorch_tanh")


def _tiny_vision_config(out_hidden: int) -> dict:
    return dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, window_size=112, out_hidden_size=out_hidden,
                fullatt_block_indexes=[1], hidden_act="silu")


def _tiny_text_config(tok, *, hidden: int, layers: int, heads: int, kv_heads: int, mrope: bool,
                      rows: int | None) -> dict:
    head_dim = hidden // heads
    rope = {"rope_type": "default", "rope_theta": 1000000.0}
    if mrope:
        # M-RoPE splits head_dim/2 rotary frequencies into (time, height, width) sections.
        half = head_dim // 2
        t = half // 4
        rope["mrope_section"] = [t, (half - t) // 2, half - t - (half - t) // 2]
    return dict(vocab_size=rows or len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048,
                rope_parameters=rope, rms_norm_eps=1e-6, bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _token_ids(tok) -> dict:
    from init_vlm.qwen_vocab import CONFIG_TOKEN_FIELDS

    return {field: tok.convert_tokens_to_ids(token) for field, token in CONFIG_TOKEN_FIELDS.items()}


def _save_model(model_cls, config, out_dir: Path, seed: int, dtype) -> None:
    import torch

    torch.manual_seed(seed)  # random init draws from the global generator: seeding it fixes every weight
    model = model_cls(config).to(dtype)
    model.config.dtype = dtype
    model.generation_config.do_sample = False
    model.save_pretrained(out_dir)



def build_tiny_pair(root: Path, *, seed: int = 0, llm_tied: bool = True, dtype: str = "float32",
                    llm_vision_tokens: bool = True, llm_hidden: int = 64,
                    family: str = "qwen2_5_vl") -> tuple[Path, Path]:
    """A ViT source and an LLM source under `root` (for tests); returns (vit_source, llm_source).

    llm_vision_tokens=False gives the LLM a plain-Qwen2 tokenizer (no vision tokens), like Qwen2-7B.
    family: qwen2_5_vl (Qwen2.5-VL ViT + Qwen2 LM) or qwen3_vl (Qwen3-VL ViT + Qwen3 LM)."""
    from embedded.tokenizer import train_tokenizer
    from init_vlm.qwen_vocab import QWEN2_BASE_TOKENS

    root = Path(root)
    tok = train_tokenizer(tiny_corpus(), root / "tokenizer", vocab_size=512)
    build_vit, build_llm = TINY_BUILDERS[family]
    vit = build_vit(root / "vit_source", tok, seed=seed, dtype=dtype)
    if not llm_vision_tokens:
        tok = train_tokenizer(tiny_corpus(), root / "tokenizer_qwen2", vocab_size=512, added_tokens=QWEN2_BASE_TOKENS)
    llm = build_llm(root / "llm_source", tok, hidden=llm_hidden, seed=seed + 1, tie_word_embeddings=llm_tied,
                    dtype=dtype)  # each builder's own layer count
    return vit, llm


# ViT-source model_type -> (ViT source builder, LLM source builder)
TINY_BUILDERS = {"qwen2_5_vl": (build_tiny_vit_source, build_tiny_llm_source),
                 "qwen3_vl": (build_tiny_qwen3vl_vit_source, build_tiny_qwen3_llm_source)}


def tiny_corpus(n: int = 400) -> list[str]:
    """Deterministic caption-like lines, enough for a few hundred BPE merges."""
    import random

    rng = random.Random(0)
    words = ("a the red green blue small large cat dog house tree car sky road person image photo shows "
             "with and on in near two three left right top bottom of is are describe picture what color").split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))) for _ in range(n)]
