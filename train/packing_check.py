"""Does LLaMA-Factory pack Qwen2.5-VL samples correctly? Measured, not assumed.

The same rows go through LLaMA-Factory's own data path twice, in-process: once unpacked
(SupervisedDatasetProcessor, right-padded batches) and once packed (PackedSupervisedDatasetProcessor,
several samples per cutoff_len row), each through its own collator
(SFTDataCollatorWith4DAttentionMask, which computes the M-RoPE position ids per packed sample and
the block-diagonal mask with neat_packing) and the same model in fp32. Correct packing leaves
every sample's loss as it was; position ids that run on across a pack, or attention that leaks
into the previous sample, change it.

Samples are matched by their token ids and images, not by order: the packer reorders rows
(greedy knapsack by length).

    lf = lf_modules(model_dir, dataset_dir, dataset, packing="neat" or None, ...)
    per_sample_losses(lf) -> {sample key: mean token loss}
    flash_attention_spans(lf) -> the sample boundaries flash attention would see on a GPU

Imports LLaMA-Factory and torch when called, never at import."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

IGNORE_INDEX = -100


def lf_modules(model_dir: Path, dataset_dir: Path, dataset: str, *, packing: str | None, cutoff_len: int,
               work_dir: Path) -> dict:
    """Tokenizer, template, preprocessed dataset, model and collator exactly as LLaMA-Factory's
    run_sft builds them (llamafactory/train/sft/workflow.py), without the trainer; images resized by
    the model's processor alone, as in training (train/recipe.py LF_IMAGE_PIXELS)."""
    from llamafactory.data import (
        SFTDataCollatorWith4DAttentionMask,
        get_dataset,
        get_template_and_fix_tokenizer,
    )
    from llamafactory.extras.constants import IGNORE_INDEX as LF_IGNORE
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model, load_tokenizer

    from train.recipe import LF_IMAGE_PIXELS

    args = {"model_name_or_path": str(model_dir), "stage": "sft", "do_train": True, "finetuning_type": "full",
            "dataset": dataset, "dataset_dir": str(dataset_dir), "template": "qwen2_vl", "cutoff_len": cutoff_len,
            "output_dir": str(work_dir / "out"), "overwrite_cache": True, "report_to": "none", "bf16": False,
            **LF_IMAGE_PIXELS, "packing": packing is not None, "neat_packing": packing == "neat", "seed": 0}
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    data = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=False)
    collator = SFTDataCollatorWith4DAttentionMask(
        template=template, model=model, pad_to_multiple_of=8, label_pad_token_id=LF_IGNORE,
        block_diag_attn=model_args.block_diag_attn, neat_packing=data_args.neat_packing,
        attn_implementation=getattr(model.config, "_attn_implementation", None),
        compute_dtype=model_args.compute_dtype, **tokenizer_module)
    return {"dataset": data["train_dataset"], "model": model, "collator": collator}


def per_sample_losses(lf: dict, *, batch_size: int = 2,
                      edit_batch: Callable[[dict, list], None] | None = None) -> dict[tuple, float]:
    """{(token ids, images) of a sample: its mean next-token loss over its labelled tokens}, for
    the modules of lf_modules. edit_batch(batch, spans) may alter a collated batch before the
    forward pass (a control that shows the comparison can fail)."""
    import torch

    model, rows = lf["model"].float().eval(), lf["dataset"]
    out: dict[tuple, float] = {}
    for start in range(0, len(rows), batch_size):
        features = [dict(rows[i]) for i in range(start, min(start + batch_size, len(rows)))]
        samples = [list(_samples_of(f)) for f in features]   # before the collator pops the fields
        batch = lf["collator"](features)
        if edit_batch is not None:
            edit_batch(batch, [[s["bounds"] for s in row] for row in samples])
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        token_loss = _token_losses(logits, batch["labels"])
        for b, row in enumerate(samples):
            for s in row:
                lo, hi = s["bounds"]
                labelled = batch["labels"][b, lo + 1:hi] != IGNORE_INDEX   # loss at t predicts label t+1
                out[s["key"]] = float(token_loss[b, lo:hi - 1][labelled].mean())
    return out


def flash_attention_spans(lf: dict, edit_batch: Callable[[dict, list], None] | None = None) -> list[tuple[list, list]]:
    """On a GPU, LLaMA-Factory's neat_packing with flash_attention_2 drops the mask (one packed row
    per device batch, padding removed) and transformers finds the samples where the text position
    ids restart at 0 (prepare_fa_kwargs_from_position_ids). Per packed row: (the cumulative sample
    lengths flash attention would use, the packed samples' own), computed on CPU through the same
    collator code with no flash-attention kernel."""
    from llamafactory.data import SFTDataCollatorWith4DAttentionMask
    from transformers.modeling_flash_attention_utils import (
        prepare_fa_kwargs_from_position_ids,
    )

    cpu = lf["collator"]
    fa2 = SFTDataCollatorWith4DAttentionMask(
        template=cpu.template, model=cpu.model, pad_to_multiple_of=8, label_pad_token_id=IGNORE_INDEX,
        block_diag_attn=True, neat_packing=True, attn_implementation="flash_attention_2",
        compute_dtype=cpu.compute_dtype, tokenizer=cpu.tokenizer, processor=cpu.processor)
    out = []
    for i in range(len(lf["dataset"])):
        feature = dict(lf["dataset"][i])
        spans = [s["bounds"] for s in _samples_of(feature)]
        batch = fa2([feature])
        if edit_batch is not None:
            edit_batch(batch, [spans])
        (cu_seqlens, _), _ = prepare_fa_kwargs_from_position_ids(batch["position_ids"][0])
        out.append((cu_seqlens.tolist(), [0] + [hi for _, hi in spans]))
    return out


def _token_losses(logits, labels):
    """Cross-entropy of the prediction at t for the label at t+1; (batch, seq - 1)."""
    import torch.nn.functional as F

    shifted = labels[:, 1:]
    loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), shifted.clamp(min=0), reduction="none")
    return loss.masked_fill(shifted == IGNORE_INDEX, 0.0)


def _samples_of(feature: dict) -> Iterator[dict]:
    """The samples of one dataset row: one unpacked, several in a packed row (its packing_params)."""
    ids, images = feature["input_ids"], list(feature.get("images") or [])
    params = feature.get("packing_params")
    if params:
        bounds = params["sequence_boundaries"]
        subseq = params["image_subseq_ids"]
        # the last span is the right padding (there always is some: a pack fills at most cutoff_len of cutoff_len + 1)
        spans = pairwise(bounds[:-1] if params.get("right_padding_length") else bounds)
        for i, (lo, hi) in enumerate(spans):
            yield {"bounds": (lo, hi), "key": (tuple(ids[lo:hi]), tuple(str(im) for im, s in zip(images, subseq)
                                                                           if s == i))}
        return
    n = sum(1 for m in feature["attention_mask"] if m)
    yield {"bounds": (0, n), "key": (tuple(ids[:n]), tuple(str(im) for im in images))}


# ---------------------------------------------------------------- controls: what broken packing looks like

def positions_run_on(batch: dict, bounds: list) -> None:
    """Each packed sample's position ids continue where the previous sample's ended, as when
    M-RoPE positions are computed over the whole packed row instead of per sample."""
    pos = batch["position_ids"]   # (4, batch, seq): text positions, then temporal/height/width
    for b, spans in enumerate(bounds):
        offset = 0
        for lo, hi in spans:
            pos[:, b, lo:hi] += offset
            offset = int(pos[:, b, lo:hi].max()) + 1


def attention_leaks(batch: dict, bounds: list) -> None:
    """A plain causal mask over the packed row: each sample also attends to the samples before it."""
    import torch

    mask = batch["attention_mask"]   # (batch, 1, seq, seq) additive, from prepare_4d_attention_mask
    seq = mask.shape[-1]
    causal = torch.full((seq, seq), torch.finfo(mask.dtype).min, dtype=mask.dtype).triu(1)
    batch["attention_mask"] = causal.expand_as(mask).clone()
