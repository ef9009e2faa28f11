"""The init_vlm stage: a pretrained ViT (from a Qwen2.5-VL or Qwen3-VL checkpoint) + a pretrained LLM of the
same family (Qwen2 / Qwen3) + a new projector (init_vlm/families.py says which family needs what).

Order of work: check everything that can be checked from configs, safetensors headers, the tokenizer
and the processor, then stream weights into a hidden temporary folder, write tokenizer/processor/
config/manifest, verify by reloading, and only then rename the folder into place (publish). Nothing
ever holds a whole source model."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from init_vlm.config_merge import merge_config, read_configs
from init_vlm.errors import InitVLMError
from init_vlm.manifest import (library_versions, module_parameters, parameter_groups, source_record,
                               write_manifest)
from init_vlm.projector import PROJECTOR_INITS, init_projector, projector_shapes
from init_vlm.publish import partial_dir, prepare_out_dir
from init_vlm.safetensors_io import torch_dtype
from init_vlm.sources import VISION_PREFIXES, open_checkpoint
from init_vlm.tokenizer import build_processor, prepare_tokenizer
from init_vlm.verify import verify_output
from init_vlm.weights import (attach_projector, check_vocab_rows, expected_tensors, plan_tensors, resize_vocab,
                              settle_dtype, write_shards)


def build_vlm(vit_source: str, llm_source: str, out_dir: Path, *, projector_init: str = "torch_default",
              seed: int = 0, dtype: str | None = None, vit_revision: str | None = None,
              llm_revision: str | None = None, pixels: Mapping | None = None, verify: bool = True,
              log=print) -> dict:
    """Build the fresh VLM into `out_dir` (must not exist, or be empty); returns the manifest.

    pixels: {min_pixels, max_pixels}, the run's pixel budget, written into the image processor as its
    resize bounds (None keeps the ViT source's own)."""
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, log)
    if projector_init not in PROJECTOR_INITS:
        raise InitVLMError(f"projector_init {projector_init!r} is not one of {', '.join(PROJECTOR_INITS)}")
    vit = open_checkpoint("ViT", str(vit_source), vit_revision, only_prefixes=VISION_PREFIXES)
    llm = open_checkpoint("LLM", str(llm_source), llm_revision)
    log(f"sources: ViT {vit.folder} ({len(vit.tensors)} tensors), LLM {llm.folder} ({len(llm.tensors)} tensors)")

    family, vit_cfg, llm_cfg = read_configs(vit, llm)
    log(f"family: {family.name} ({family.vit_model_type} ViT + {family.llm_model_type} LLM)")
    tok = prepare_tokenizer(llm, family.chat_template)
    # Loaded now, not when writing: a ViT source without a usable processor fails before a 72B pass.
    processor = build_processor(vit, tok.tokenizer, family, pixels)
    if tok.original_len > llm_cfg.vocab_size:
        raise llm.fail(f"tokenizer has {tok.original_len} tokens but the embeddings only "
                       f"{llm_cfg.vocab_size} rows (vocab_size); tokenizer and weights do not belong together")
    rows = max(llm_cfg.vocab_size, len(tok.tokenizer))
    config = merge_config(vit_cfg, llm_cfg, llm, vocab_rows=rows, token_ids=tok.token_ids, dtype="float32",
                          family=family)

    plan = plan_tensors(expected_tensors(config, family), vit, llm, family)
    check_vocab_rows(plan, llm, llm_cfg.vocab_size, llm_cfg.hidden_size)
    out_dtype = settle_dtype(plan, vit, llm, dtype)
    config.dtype = config.text_config.dtype = out_dtype
    resize_vocab(plan, rows, tok.added_ids(), mean_rows=tok.original_len)
    shapes = projector_shapes(vit_cfg.vision_config, llm_cfg.hidden_size, family)
    attach_projector(plan, init_projector(shapes, projector_init, seed, torch_dtype(plan[0].tag)), family)
    if tok.added:
        log(f"tokenizer: added {len(tok.added)} tokens {tok.added}; vocab rows {llm_cfg.vocab_size} -> {rows}")

    tmp = partial_dir(out_dir)
    try:
        manifest = _write(tmp, plan, config, tok, processor, vit, llm, log, family=family,
                          projector={"init": projector_init, "seed": seed,
                                     "shapes": {k: list(v) for k, v in sorted(shapes.items())}},
                          vocab={"llm_rows": llm_cfg.vocab_size, "rows": rows})
        if verify:
            manifest["verification"] = verify_output(tmp, plan, tok.added_ids(), log=log, family=family)
            write_manifest(tmp, manifest)
        os.rename(tmp, out_dir)  # atomic on one filesystem; replaces an empty out_dir
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"init_vlm: wrote {out_dir}")
    return manifest


def _write(tmp: Path, plan, config, tok, processor, vit, llm, log, *, family, projector: dict, vocab: dict) -> dict:
    log(f"writing {sum(t.nbytes for t in plan) / 2**30:.2f} GiB of {plan[0].tag} weights to {tmp}")
    digests = write_shards(plan, tmp)
    config.save_pretrained(tmp)
    _generation_config(llm, tok.tokenizer).save_pretrained(tmp)
    tok.tokenizer.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    manifest = {
        "stage": "init_vlm",
        "sources": {"vit": source_record(vit, plan), "llm": source_record(llm, plan)},
        "parameter_groups": parameter_groups(plan, vit, llm),
        "parameters_per_module": module_parameters(plan, bool(config.tie_word_embeddings)),
        "projector": projector,
        "tokenizer": {"source": f"LLM source {llm.source}", "original_len": tok.original_len,
                      "added_tokens": tok.added, "token_ids": tok.token_ids, "vocab_rows": vocab["rows"],
                      "llm_vocab_rows": vocab["llm_rows"], "new_rows_init": "mean of existing token embeddings",
                      "chat_template": family.lf_template,
                      "processors": f"image and video from ViT source {vit.source}"},
        "config": _config_summary(config),
        "output_files_sha256": digests,
        **_family_record(family),
        "library_versions": library_versions(),
    }
    write_manifest(tmp, manifest)
    return manifest


def _family_record(family) -> dict:
    # Only for Qwen3-VL: a Qwen2.5-VL manifest stays byte for byte what it was before Qwen3-VL existed.
    if family.vit_model_type == "qwen2_5_vl":
        return {}
    return {"family": family.name, "projector_tensors_under": list(family.projector_prefixes)}


def _config_summary(config) -> dict:
    rope = config.text_config.rope_parameters
    out = {"dtype": str(config.dtype), "tie_word_embeddings": bool(config.tie_word_embeddings),
           "out_hidden_size": config.vision_config.out_hidden_size, "mrope_section": rope["mrope_section"]}
    if "mrope_interleaved" in rope:  # Qwen3-VL only: keeps Qwen2.5-VL manifests as they were
        out.update(mrope_interleaved=rope["mrope_interleaved"], head_dim=config.text_config.head_dim,
                   deepstack_visual_indexes=list(config.vision_config.deepstack_visual_indexes))
    return out


def _generation_config(llm, tokenizer):
    from transformers import GenerationConfig

    if (llm.folder / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(llm.folder)
    return GenerationConfig(bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
