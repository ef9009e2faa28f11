"""The `init_vlm` stage kind: a fresh VLM from the backbone's ViT source and LLM source.

What decides the output: the two sources and their revisions, the projector's init and dtype,
the run's seed (the projector's random init) and the run's pixel budget (`pixels`, the backbone's
unless overridden), which the built image processor gets as its resize bounds, so that it alone
resizes images in training as in evaluation. The backbone's other keys (labels, template,
parameter counts for `plan`) change nothing here."""

from __future__ import annotations

from typing import Mapping

from stagekit import StageRun, unknown_keys

KIND = "init_vlm"
VERSION = 1
OUTPUT_KEYS = ("vit_source", "llm_source", "vit_revision", "llm_revision", "projector_init", "dtype")
BACKBONE_KEYS = ("name", "label", *OUTPUT_KEYS, "template", "eval_model", "params",
                 "patch_size", "system_prompt", "pixels")   # the model's view, read by training and evaluation
DTYPES = (None, "bfloat16", "float16", "float32")


def stages(cfg: Mapping, upstream: list[dict]) -> list[dict]:
    bb = cfg["backbone"]
    config = {k: bb[k] for k in OUTPUT_KEYS} | {"seed": cfg["seed"], "pixels": dict(cfg["pixels"])}
    return [{"name": "init_vlm", "config": config,
             "summary": f"ViT of {bb['vit_source']} + LLM {bb['llm_source']} + new projector ({bb['projector_init']})"}]


def problems(cfg: Mapping) -> list[str]:
    from init_vlm.projector import PROJECTOR_INITS

    bb = cfg["backbone"]
    out = unknown_keys("backbone", bb, BACKBONE_KEYS)
    if bb.get("projector_init") not in PROJECTOR_INITS:
        out.append(f"backbone.projector_init={bb.get('projector_init')!r}; choose one of {', '.join(PROJECTOR_INITS)}")
    if bb.get("dtype") not in DTYPES:
        out.append(f"backbone.dtype={bb.get('dtype')!r}; choose one of {', '.join(map(str, DTYPES))}")
    lo, hi = cfg["pixels"].get("min_pixels"), cfg["pixels"].get("max_pixels")
    if not (type(lo) is int and type(hi) is int and 0 < lo <= hi):
        # the built image processor's resize bounds: nothing later refuses a reversed or empty range
        out.append(f"pixels: min_pixels={lo!r} and max_pixels={hi!r}; give whole numbers of pixels with "
                   "0 < min_pixels <= max_pixels")
    return out


def run(job: StageRun) -> dict:
    from init_vlm import build_vlm

    c = job.config
    manifest = build_vlm(c["vit_source"], c["llm_source"], job.out_dir / "model", projector_init=c["projector_init"],
                         seed=c["seed"], dtype=c["dtype"], vit_revision=c["vit_revision"],
                         llm_revision=c["llm_revision"], pixels=c["pixels"], log=job.log)
    return {"params": manifest["parameters_per_module"]}
