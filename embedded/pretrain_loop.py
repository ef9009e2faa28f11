"""The optimisation loop both of the world's source pretrainings share (the LLM's on text-only
chats, the ViT's on images of its own): plain PyTorch, one process. transformers' Trainer would
wrap a few hundred steps on in-memory batches in its dataset, checkpoint and logging machinery,
and the world's output must stay a pure function of its config, so the loop is this short and
fixed: one seeded order of operations."""

from __future__ import annotations

from typing import Callable, Iterable

WARMUP_STEPS = 20   # linear warm-up, then a linear decay to zero at the last step


def pretrain(part, params: Iterable, *, steps: int, learning_rate: float, loss_of_step: Callable) -> list[float]:
    """`steps` AdamW steps (no weight decay) on `params` with `part` (the module they train) in
    training mode, each on the loss `loss_of_step()` returns (it draws its own batch); `part` is
    left in eval mode. The loss curve: the mean of each tenth of the steps."""
    import torch

    part.train()
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / WARMUP_STEPS) * max(0.0, 1 - s / steps))
    losses = []
    for _ in range(steps):
        loss = loss_of_step()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    part.eval()
    return loss_curve(losses)


def loss_curve(losses: list[float]) -> list[float]:
    """Mean loss over each tenth of the steps: what the world's log shows of a source's pretraining."""
    tenth = max(1, len(losses) // 10)
    return [sum(losses[i:i + tenth]) / len(losses[i:i + tenth]) for i in range(0, len(losses), tenth)]
