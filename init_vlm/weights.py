"""Which output tensor comes from where, checked before any byte moves, then streamed shard by shard.

The list of tensors the output must hold comes from transformers itself (the model class built on
the meta device from the merged config), so a checkpoint that would load with missing or
mis-shaped weights is caught here and not at training time. Qwen2.5-VL names are written in the hub
layout (`visual.*`, `model.*`, `lm_head.weight`), which is what transformers 5.6 itself saves and what
older loaders and inference engines read; Qwen3-VL was published with the runtime names
(`model.visual.*`, `model.language_model.*`), so those are kept as they are."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from init_vlm.errors import InitVLMError
from init_vlm.safetensors_io import DTYPE_SIZES, ShardWriter, TensorEntry, read_tensor, torch_dtype
from init_vlm.sources import VISION_PREFIXES, Checkpoint

MAX_SHARD_BYTES = 5 * 10**9  # the hub's usual shard size
# Runtime (transformers >= 4.52) prefixes -> the hub's on-disk prefixes.
_RUNTIME_TO_DISK = (("model.visual.", "visual."), ("model.language_model.", "model."))


@dataclass
class OutTensor:
    name: str                 # on-disk name
    shape: tuple[int, ...]
    tag: str                  # safetensors dtype of the output
    group: str                # vision / projector / embeddings / layers / norm / lm_head
    role: str | None = None   # "ViT" or "LLM" for copied tensors
    src: TensorEntry | None = None
    src_name: str | None = None
    data: object = None       # a tensor for new or rewritten weights (projector, resized embeddings)

    @property
    def nbytes(self) -> int:
        n = DTYPE_SIZES[self.tag]
        for dim in self.shape:
            n *= dim
        return n

    @property
    def copied(self) -> bool:
        return self.src is not None and self.data is None


def disk_name(runtime_name: str, family=None) -> str:
    if family is not None and not family.hub_layout:
        return runtime_name
    for runtime, disk in _RUNTIME_TO_DISK:
        if runtime_name.startswith(runtime):
            return disk + runtime_name[len(runtime):]
    return runtime_name


def runtime_name(name: str, family=None) -> str:
    if family is not None and not family.hub_layout:
        return name
    for runtime, disk in _RUNTIME_TO_DISK:
        if name.startswith(disk):
            return runtime + name[len(disk):]
    return name


def expected_tensors(config, family=None) -> dict[str, tuple[int, ...]]:
    """On-disk name -> shape of every weight the output model needs (tied lm_head excluded)."""
    import torch
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, family.vl_model if family else "Qwen2_5_VLForConditionalGeneration")(config)
    shapes = {disk_name(n, family): tuple(t.shape) for n, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def plan_tensors(expected: dict[str, tuple[int, ...]], vit: Checkpoint, llm: Checkpoint,
                 family=None) -> list[OutTensor]:
    """Bind every expected tensor to its source (dtype still the source's); fails on missing/mismatched ones."""
    vit_prefix = _vision_prefix(vit)
    new = family.projector_prefixes if family else ("model.visual.merger.",)
    plan = []
    for name in sorted(expected):
        shape, runtime = expected[name], runtime_name(name, family)
        if runtime.startswith(new):
            plan.append(OutTensor(name, shape, "", "projector"))
        elif runtime.startswith("model.visual."):
            plan.append(_bind(vit, vit_prefix + runtime[len("model.visual."):], name, shape, "vision"))
        else:
            src = _llm_name(runtime)
            plan.append(_bind(llm, src, name, shape, _text_group(src), check_shape=not _is_vocab(src)))
    _check_unused_llm(llm, {t.src_name for t in plan if t.role == "LLM"})
    replaced = tuple(vit_prefix + p[len("model.visual."):] for p in new)
    _check_unused_vision(vit, vit_prefix, {t.src_name for t in plan if t.role == "ViT"}, replaced)
    return plan


def _llm_name(runtime: str) -> str:
    """The causal LM's own name of an output text tensor (its decoder is `model.*` there)."""
    if runtime.startswith("model.language_model."):
        return "model." + runtime[len("model.language_model."):]
    return runtime


def _vision_prefix(vit: Checkpoint) -> str:
    for prefix in VISION_PREFIXES:
        if any(n.startswith(prefix) for n in vit.tensors):
            return prefix
    raise vit.fail("has no vision weights (no visual.* or model.visual.* tensors)")


def _bind(ckpt: Checkpoint, src_name: str, name: str, shape, group: str, check_shape: bool = True) -> OutTensor:
    entry = ckpt.tensors.get(src_name)
    if entry is None:
        raise ckpt.fail(f"missing tensor {src_name}; its weights do not match its config")
    if check_shape and entry.shape != tuple(shape):
        raise ckpt.fail(f"tensor {src_name} has shape {list(entry.shape)}, its config implies {list(shape)}")
    return OutTensor(name, tuple(shape), entry.dtype, group, ckpt.role, entry, src_name)


def _check_unused_vision(vit: Checkpoint, prefix: str, used: set[str], replaced: tuple[str, ...]) -> None:
    # The old projector (merger, DeepStack mergers) is replaced, and the source's text decoder is not
    # used; anything else is a mismatch.
    extra = sorted(n for n in vit.tensors if n.startswith(prefix) and n not in used and not n.startswith(replaced))
    if extra:
        raise vit.fail(f"{len(extra)} vision tensor(s) its vision_config does not account for (e.g. {extra[0]}); "
                       f"config and weights disagree")


def _check_unused_llm(llm: Checkpoint, used: set[str]) -> None:
    # A tied checkpoint may still carry lm_head.weight; rotary buffers are recomputed at load.
    extra = sorted(n for n in llm.tensors if n not in used and n != "lm_head.weight" and "rotary_emb" not in n)
    if extra:
        raise llm.fail(f"{len(extra)} tensor(s) the config does not account for (e.g. {extra[0]}); "
                       f"config and weights disagree or this is not a Qwen2 layout")


def _text_group(name: str) -> str:
    if name == "lm_head.weight":
        return "lm_head"
    if name.startswith("model.embed_tokens"):
        return "embeddings"
    return "layers" if name.startswith("model.layers.") else "norm"


def _is_vocab(name: str) -> bool:
    return name in ("model.embed_tokens.weight", "lm_head.weight")


def check_vocab_rows(plan: list[OutTensor], llm: Checkpoint, llm_rows: int, hidden: int) -> None:
    """Embedding / lm_head must be [LLM vocab_size, hidden] in the source (rows may grow in the output)."""
    for t in plan:
        if t.role == "LLM" and _is_vocab(t.src_name) and t.src.shape != (llm_rows, hidden):
            raise llm.fail(f"tensor {t.src_name} has shape {list(t.src.shape)}, its config implies "
                           f"{[llm_rows, hidden]}")


def settle_dtype(plan: list[OutTensor], vit: Checkpoint, llm: Checkpoint, dtype: str | None) -> str:
    """The output dtype tag: the one the sources share, or the one asked for (then copies are cast)."""
    from init_vlm.safetensors_io import TORCH_DTYPES

    if dtype is not None:
        tag = {v: k for k, v in TORCH_DTYPES.items()}.get(str(dtype).replace("torch.", ""))
        if tag is None:
            raise InitVLMError(f"dtype {dtype!r} is not one of {', '.join(TORCH_DTYPES.values())}")
    else:
        tags = {c.role: {t.src.dtype for t in plan if t.role == c.role} for c in (vit, llm)}
        found = tags["ViT"] | tags["LLM"]
        if len(found) != 1:
            raise InitVLMError(f"sources hold different dtypes (ViT source {vit.source}: {sorted(tags['ViT'])}, "
                               f"LLM source {llm.source}: {sorted(tags['LLM'])}); pass dtype= to choose one")
        tag = found.pop()
        if tag not in TORCH_DTYPES:
            raise InitVLMError(f"source weights are {tag}, not a floating dtype this stage can keep")
    for t in plan:
        t.tag = tag
    return TORCH_DTYPES[tag]


def resize_vocab(plan: list[OutTensor], rows: int, added_ids: list[int], mean_rows: int) -> None:
    """Grow embeddings / lm_head to `rows`; rows of added tokens get the mean of the first `mean_rows` rows."""
    if not added_ids:
        return
    import torch

    for t in plan:
        if t.role != "LLM" or not _is_vocab(t.src_name):
            continue
        src = read_tensor(t.src)
        mean = src[:mean_rows].float().mean(dim=0)  # float32 sum: a bf16 running sum over 150k rows drifts
        grown = torch.cat([src, src.new_zeros(rows - src.shape[0], src.shape[1])]) if rows > src.shape[0] else src
        grown[added_ids] = mean.to(grown.dtype)
        t.shape, t.data = tuple(grown.shape), grown.to(torch_dtype(t.tag))  # held in the output dtype


def attach_projector(plan: list[OutTensor], tensors: dict[str, object], family=None) -> None:
    root = family.projector_root if family else "model.visual.merger."
    for t in plan:
        if t.group == "projector":
            t.data = tensors[runtime_name(t.name, family)[len(root):]]
            if tuple(t.data.shape) != t.shape:
                raise InitVLMError(f"projector tensor {t.name}: built {list(t.data.shape)}, "
                                   f"the model needs {list(t.shape)}")


def write_shards(plan: list[OutTensor], out_dir: Path, max_shard_bytes: int | None = None) -> dict[str, str]:
    """Stream the plan into safetensors shards (+ index when several); returns file name -> sha256."""
    shards = _split(plan, max_shard_bytes or MAX_SHARD_BYTES)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    digests = {}
    for fname, shard in zip(names, shards):
        digests[fname] = _write_shard(out_dir / fname, shard)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in plan)},
                 "weight_map": {t.name: f for f, shard in zip(names, shards) for t in shard}}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return digests


def _split(plan: list[OutTensor], max_bytes: int) -> list[list[OutTensor]]:
    shards, size = [[]], 0
    for t in plan:
        if shards[-1] and size + t.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _write_shard(path: Path, tensors: list[OutTensor]) -> str:
    writer = ShardWriter(path, [(t.name, t.tag, t.shape) for t in tensors], {"format": "pt"})
    for t in tensors:
        if t.data is not None:
            writer.write_tensor(t.name, t.data.to(torch_dtype(t.tag)))
        elif t.src.dtype == t.tag:
            writer.copy_from(t.name, t.src)  # bit-exact by construction: the source's bytes
        else:
            writer.write_tensor(t.name, read_tensor(t.src).to(torch_dtype(t.tag)))
    return writer.close()
