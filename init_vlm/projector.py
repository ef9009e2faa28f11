"""The new projector.

Qwen2.5-VL's `visual.merger`: RMSNorm(vision hidden h) -> Linear(4h, 4h) -> GELU -> Linear(4h, LLM hidden).
Qwen3-VL's `visual.merger`: LayerNorm(h) -> Linear(4h, 4h) -> GELU -> Linear(4h, LLM hidden), plus one
DeepStack merger per `deepstack_visual_indexes` entry, the same but with LayerNorm(4h) after the 2x2
merge. Every one of them feeds the LLM, so all are new and sized for the LLM's hidden size.

Two inits, both seeded with a private generator so nothing else in the process shifts them:
- torch_default: what the ScaleCap notebook effectively gets by building fresh nn.Linear layers
  (kaiming-uniform with a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases);
- normal: the HF convention, weights N(0, 0.02), biases zero.
Norm weights start at one and LayerNorm biases at zero either way, as a fresh norm does."""

from __future__ import annotations

import math

PROJECTOR_INITS = ("torch_default", "normal")
NORMAL_STD = 0.02


def projector_shapes(vision_cfg, llm_hidden: int, family=None) -> dict[str, tuple[int, ...]]:
    """Tensor names (relative to the family's projector_root) and shapes, as transformers lays them out."""
    context = vision_cfg.hidden_size
    merged = context * vision_cfg.spatial_merge_size ** 2
    if family is None or family.vit_model_type == "qwen2_5_vl":  # relative to visual.merger
        return {"ln_q.weight": (context,), "mlp.0.weight": (merged, merged), "mlp.0.bias": (merged,),
                "mlp.2.weight": (llm_hidden, merged), "mlp.2.bias": (llm_hidden,)}
    shapes = _qwen3_merger("merger.", context, merged, llm_hidden)
    for i in range(len(vision_cfg.deepstack_visual_indexes)):
        shapes.update(_qwen3_merger(f"deepstack_merger_list.{i}.", merged, merged, llm_hidden))
    return shapes


def _qwen3_merger(prefix: str, norm_width: int, merged: int, llm_hidden: int) -> dict[str, tuple[int, ...]]:
    return {prefix + "norm.weight": (norm_width,), prefix + "norm.bias": (norm_width,),
            prefix + "linear_fc1.weight": (merged, merged), prefix + "linear_fc1.bias": (merged,),
            prefix + "linear_fc2.weight": (llm_hidden, merged), prefix + "linear_fc2.bias": (llm_hidden,)}


def init_projector(shapes: dict[str, tuple[int, ...]], init: str, seed: int, dtype) -> dict[str, object]:
    """Fresh projector tensors (float32 draws, then cast to the model's dtype)."""
    import torch

    if init not in PROJECTOR_INITS:
        raise ValueError(f"projector_init {init!r} is not one of {', '.join(PROJECTOR_INITS)}")
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):  # fixed order: the draws do not depend on dict order
        shape = shapes[name]
        if _is_norm(name):
            tensor = torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
        else:
            fan_in = shapes[name.replace("bias", "weight")][1]
            tensor = _draw(shape, init, fan_in, is_bias=name.endswith("bias"), gen=gen)
        out[name] = tensor.to(dtype)
    return out


def _is_norm(name: str) -> bool:
    return name.split(".")[-2] in ("ln_q", "norm")


def _draw(shape, init: str, fan_in: int, *, is_bias: bool, gen):
    import torch

    if init == "normal":
        return torch.zeros(shape) if is_bias else torch.empty(shape).normal_(0.0, NORMAL_STD, generator=gen)
    # kaiming_uniform_(a=sqrt(5)) gives bound sqrt(6 / ((1 + a^2) * fan_in)) = 1/sqrt(fan_in); nn.Linear's
    # bias uses the same bound.
    bound = 1.0 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound, generator=gen)
