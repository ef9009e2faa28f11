"""A Qwen2-style tokenizer trained locally, so the embedded world needs no model hub.

Same pipeline as Qwen2's (NFC, Qwen's split regex, byte-level BPE) with a tiny vocabulary; the Qwen2.5
special tokens are appended after the BPE vocabulary in Qwen's order, like the real one."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from init_vlm.qwen_vocab import QWEN2_VL_CHAT_TEMPLATE, QWEN25_ADDED_TOKENS

# Qwen2's pre-tokenizer regex (transformers' tokenization_qwen2.PRETOKENIZE_REGEX).
_SPLIT_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

# The same without the leading space a word takes along ("Ġred" and "red" become "Ġ" "red"): a word
# is one token wherever it stands. A real LLM learns from billions of words that " red" inside a
# sentence and "red" at the start of a reply are one word; the embedded world's tiny LLM, shown
# "red" in captions and asked for it as a one-word answer, would otherwise have two unrelated tokens.
_WORD_REGEX = _SPLIT_REGEX.replace(r"[^\r\n\p{L}\p{N}]?\p{L}+", r"\p{L}+")


def train_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int = 1024, *,
                    added_tokens: tuple[tuple[str, bool], ...] = QWEN25_ADDED_TOKENS,
                    words_without_space: bool = False) -> Path:
    """Train byte-level BPE on `texts`, wrap it as a Qwen2 tokenizer with a Qwen2-VL chat template, save it.

    `vocab_size` caps the final length including the added tokens (a small corpus stops BPE earlier).
    `added_tokens` exists so tests can build a plain-Qwen2 tokenizer (no vision tokens);
    `words_without_space` splits a word's leading space off (_WORD_REGEX), for the embedded world."""
    from transformers import Qwen2TokenizerFast

    backend = _train_backend(list(texts), vocab_size - len(added_tokens), words_without_space)
    _append_added_tokens(backend, added_tokens)
    tok = Qwen2TokenizerFast(
        tokenizer_object=backend,
        unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    tok.chat_template = QWEN2_VL_CHAT_TEMPLATE
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out_dir)
    return out_dir


def _train_backend(texts: list[str], bpe_size: int, words_without_space: bool = False):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_WORD_REGEX if words_without_space else _SPLIT_REGEX), behavior="isolated",
                             invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    # The full byte alphabet keeps every string encodable whatever the training texts held.
    trainer = trainers.BpeTrainer(vocab_size=max(bpe_size, 256), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    backend.train_from_iterator(sorted(texts), trainer=trainer)  # sorted: same set -> same vocab
    return backend


def _append_added_tokens(backend, added_tokens) -> None:
    from tokenizers import AddedToken

    # One at a time so each gets the next id, in Qwen's order.
    for content, special in added_tokens:
        token = AddedToken(content, special=special, normalized=False)
        (backend.add_special_tokens if special else backend.add_tokens)([token])
