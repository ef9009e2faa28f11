"""Pretrain the tiny LLM source on the world's language, so it is a stand-in for a *pretrained*
LLM as the paper's recipe assumes (Qwen2.5-3B-Instruct), not a random one.

Why: alignment trains only the projector, with the LLM frozen. A random LLM has tied embeddings
drawn with std 0.02, so its logits are near zero whatever its input: every next token is about
equally likely, the loss sits at ln(vocabulary) (~6.3 here) and no projector can move it. A
pretrained LLM already predicts caption words; the projector then has something to steer.

The text is `language.jsonl` (embedded/synthetic.py `language_chats`): text-only chats in the
Qwen2-VL chat template, about imagined scenes that are never drawn. Plain PyTorch, one process,
seeded: the world stage's output is a pure function of its config.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from embedded.pretrain_loop import pretrain


def pretrain_llm_source(model_dir: Path, chats_file: Path, *, steps: int, seed: int, batch_size: int = 16,
                        learning_rate: float = 5e-3, log=print) -> list[float]:
    """Train the causal LM in `model_dir` on the chats for `steps` steps, save it in place; return
    the mean loss of each tenth of the run (first and last show that it learned)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    chats = [json.loads(line)["messages"] for line in Path(chats_file).read_text().splitlines() if line.strip()]
    rows = [tok.apply_chat_template(m, tokenize=False) for m in chats]
    encoded = [tok(r, add_special_tokens=False)["input_ids"] for r in rows]

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rng = random.Random(seed)

    def loss_of_step():
        ids, labels, mask = _batch(rng.sample(encoded, min(batch_size, len(encoded))), tok.pad_token_id)
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    curve = pretrain(model, model.parameters(), steps=steps, learning_rate=learning_rate, loss_of_step=loss_of_step)
    model.save_pretrained(model_dir)
    log(f"LLM source pretrained on {len(rows)} text-only chats, {steps} steps: loss "
        + " ".join(f"{x:.2f}" for x in curve))
    return curve


def _batch(seqs: list[list[int]], pad_id: int):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, labels, mask
