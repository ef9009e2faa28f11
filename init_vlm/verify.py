"""Trust, but check: reload what was written the way users will, and compare it with the sources.

Runs on the temporary folder before it is renamed into place, so a folder that fails here is
never published."""

from __future__ import annotations

from pathlib import Path

from init_vlm.errors import InitVLMError
from init_vlm.safetensors_io import iter_chunks, read_tensor, torch_dtype
from init_vlm.weights import OutTensor, runtime_name

# Two merged tokens a side: 56x56 for Qwen2.5-VL's 14-px patches, 64x64 for Qwen3-VL's 16-px ones
# (the processor resizes into its pixel budget anyway).
_PROBE_TOKENS = 2


def verify_output(folder: Path, plan: list[OutTensor], added_ids: list[int], log=print, family=None) -> dict:
    """Reload `folder`, check every tensor and the token ids, run one image+text forward; returns a summary."""
    import torch
    import transformers
    from transformers import AutoProcessor

    def fail(what: str) -> InitVLMError:
        return InitVLMError(f"verification of {folder.name} failed: {what}")

    model_cls = getattr(transformers, family.vl_model if family else "Qwen2_5_VLForConditionalGeneration")
    model, info = model_cls.from_pretrained(folder, dtype="auto", output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise fail(f"reload reported {problems}")
    state = model.state_dict()
    exact = _check_tensors(state, plan, added_ids, fail, family)
    _check_tying(model, fail)
    processor = AutoProcessor.from_pretrained(folder)
    _check_token_ids(model.config, processor.tokenizer, fail)
    with torch.no_grad():
        logits = _forward(model, processor, fail, _PROBE_TOKENS * (family.token_px if family else 28))
    log(f"verified: {exact} tensors bit-exact, forward pass logits {list(logits.shape)}")
    return {"tensors_checked": len(plan), "copied_bit_exact": exact, "forward_logits_shape": list(logits.shape),
            "reload": f"{model_cls.__name__} + AutoProcessor"}


def _check_tensors(state: dict, plan: list[OutTensor], added_ids: list[int], fail, family=None) -> int:
    import torch

    exact = 0
    for t in plan:
        got = state.get(runtime_name(t.name, family))
        if got is None:
            raise fail(f"{t.name} is not in the reloaded model")
        dtype = torch_dtype(t.tag)
        if got.dtype != dtype or tuple(got.shape) != t.shape:
            raise fail(f"{t.name} reloaded as {got.dtype} {list(got.shape)}, wrote {dtype} {list(t.shape)}")
        if t.data is not None:  # built here (projector, grown embeddings): compare with what was built
            if not torch.equal(got, t.data.to(dtype)):
                raise fail(f"{t.name} differs from the tensor this stage built")
            if t.src is not None and not _kept_rows_equal(got, t, added_ids):
                raise fail(f"{t.name}: rows of existing tokens differ from {t.role} source tensor {t.src_name}")
        elif not _equal_to_source(got, t):
            raise fail(f"{t.name} differs from {t.role} source tensor {t.src_name}")
        else:
            exact += 1
    return exact


def _equal_to_source(got, t: OutTensor) -> bool:
    """Chunk-wise torch.equal against the source file, so no second copy of a big tensor is held."""
    import torch

    flat = got.reshape(-1)
    for offset, piece in iter_chunks(t.src):
        if not torch.equal(flat[offset: offset + piece.numel()], piece.to(flat.dtype)):
            return False
    return True


def _kept_rows_equal(got, t: OutTensor, added_ids: list[int]) -> bool:
    import torch

    src = read_tensor(t.src).to(got.dtype)
    keep = _kept_rows(src.shape[0], added_ids)
    return torch.equal(got[: src.shape[0]][keep], src[keep])


def _kept_rows(n: int, added_ids: list[int]):
    import torch

    keep = torch.ones(n, dtype=torch.bool)
    keep[[i for i in added_ids if i < n]] = False
    return keep


def _check_tying(model, fail) -> None:
    tied = model.config.tie_word_embeddings
    same = model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    if tied != same:
        raise fail(f"tie_word_embeddings={tied} but lm_head {'shares' if same else 'does not share'} the embeddings")


def _check_token_ids(config, tokenizer, fail) -> None:
    from init_vlm.qwen_vocab import CONFIG_TOKEN_FIELDS

    for field, token in CONFIG_TOKEN_FIELDS.items():
        if getattr(config, field) != tokenizer.convert_tokens_to_ids(token):
            raise fail(f"config.{field}={getattr(config, field)} but the tokenizer has "
                       f"{token}={tokenizer.convert_tokens_to_ids(token)}")
    if len(tokenizer) > config.text_config.vocab_size:
        raise fail(f"tokenizer has {len(tokenizer)} tokens, embeddings only {config.text_config.vocab_size} rows")


def _forward(model, processor, fail, side: int):
    import torch
    from PIL import Image

    ramp = torch.arange(side * side * 3, dtype=torch.int64) % 256
    image = Image.frombytes("RGB", (side, side), bytes(ramp.to(torch.uint8).tolist()))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    try:
        logits = model(**inputs).logits
    except Exception as err:
        raise fail(f"forward pass raised {err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    if logits.shape[:2] != inputs["input_ids"].shape or not torch.isfinite(logits).all():
        raise fail(f"forward pass gave logits {list(logits.shape)} (finite: {bool(torch.isfinite(logits).all())})")
    return logits
