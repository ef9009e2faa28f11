"""The `data_prep` stage kind: one stage per data role (alignment data, the caption source under
test, SFT data) turning a source into a validated LLaMA-Factory dataset.

What decides the output: the source (minus its run-only keys), the pixel budget and the training
cutoff (rows too long after the pixel resize are dropped or truncated), and the model's tokenizer
(the `model` input). Run-only: `workers` (any count writes the same bytes), `expected_rows` (what
`plan` estimates before the data exists), `hub` and `layout` (where `prefetch` downloads from and
the images unpack to: the coverage check reads it, the rows do not), so changing
them redoes nothing."""

from __future__ import annotations

from typing import Mapping

from data_prep.source import SOURCE_DEFAULTS
from stagekit import StageRun

KIND = "data_prep"
VERSION = 4   # 3: visual tokens in the model processor's own units and bounds (Qwen3-VL: 32 px);
#               4: counted with one resize from the image's own size (LLaMA-Factory's pre-shrink is off)
ROLES = ("align_data", "captions", "sft_data")
RUN_ONLY = ("workers", "expected_rows", "hub", "layout")
# A recaptioned caption source (recaption/stage.py) reads the recaption stage's output through
# this prefix; its `recaption` block decides that stage's output, which reaches this one's
# fingerprint as the `recaption` input.
RECAPTION_PREFIX = "recaption://"
RECAPTION_IMAGES = "data_prep.recaption_images"
# Python-held defaults offered to the YAMLs: a source's optional keys (every source YAML starts
# with `- /source_defaults@_here_`).
CONFIG_DEFAULTS = {"source_defaults": dict(SOURCE_DEFAULTS)}


def has_data(source: Mapping) -> bool:
    """`vanilla` (the paper's Table 1 baseline) has no caption data: reader null."""
    return source.get("reader") is not None


def stages(cfg: Mapping, upstream: list[dict]) -> list[dict]:
    out = []
    for role in ROLES:
        source = cfg[role]
        if not has_data(source):
            continue
        recaption = source.get("recaption")
        if recaption and isinstance(recaption.get("images"), Mapping):
            out.append(_stage(RECAPTION_IMAGES, recaption["images"], cfg, {"model": "init_vlm"}))
        inputs = {"model": "init_vlm", **({"recaption": "recaption"} if recaption else {})}
        out.append(_stage(f"data_prep.{role}", source, cfg, inputs))
    return out


def _stage(name: str, source: Mapping, cfg: Mapping, inputs: dict) -> dict:
    config = {"source": {k: v for k, v in source.items() if k not in (*RUN_ONLY, "recaption")},
              "pixels": dict(cfg["pixels"]),
              "cutoff_len": cfg["train"]["common"]["cutoff_len"]}
    return {"name": name, "config": config, "inputs": inputs, "settings": {"workers": source.get("workers")},
            "summary": f"{source['label']} ({source['reader']}) -> LLaMA-Factory sharegpt shards"}


def with_recaption_paths(source: Mapping, recaption_dir) -> dict:
    """recaption://x -> <the recaption stage's folder>/x."""
    paths = source["paths"]
    paths = [paths] if isinstance(paths, str) else list(paths)
    return {**source, "paths": [f"{recaption_dir}/{p[len(RECAPTION_PREFIX):]}" if p.startswith(RECAPTION_PREFIX) else p
                                for p in paths]}


def problems(cfg: Mapping) -> list[str]:
    from data_prep.errors import DataPrepError
    from data_prep.layout import parse_layout
    from data_prep.source import parse_source

    out = []
    for role in ROLES:
        if has_data(cfg[role]):
            try:
                parse_source(cfg[role])
                parse_layout(cfg[role])
                if isinstance((cfg[role].get("recaption") or {}).get("images"), Mapping):
                    parse_source(cfg[role]["recaption"]["images"])
                    parse_layout(cfg[role]["recaption"]["images"])
            except DataPrepError as exc:
                out.append(f"{role}: {exc}")
    return out


def preflight(cfg: Mapping) -> list[str]:
    """Before stage 1: a source whose images are on disk for fewer rows than its min_kept_fraction
    (or whose caption files are not there) is refused now, with the prefix and what fills it,
    not hours later in its data_prep stage. Files only: the rows' image fields and the folders'
    listings (data_prep/coverage.py); sources in the embedded world are built by the chain itself."""
    from data_prep.coverage import coverage_problems

    return coverage_problems(cfg)


def describe(view) -> list[str]:
    """plan's lines: what the stage reads and how much of it."""
    src = view.config["source"]
    return [f"reads: {', '.join(map(str, src['paths']))} (images under {src['image_root']})",
            f"subset: {src.get('subset_size') or 'all rows'}; cutoff_len {view.config['cutoff_len']}"]


def run(job: StageRun) -> dict:
    from data_prep import prepare_dataset

    c = job.config
    source = with_recaption_paths(c["source"], job.inputs["recaption"]) if "recaption" in job.inputs else c["source"]
    manifest = prepare_dataset(source, job.out_dir, dataset_name=c["source"]["name"], pixels=c["pixels"],
                               cutoff_len=c["cutoff_len"], tokenizer_dir=job.inputs["model"] / "model",
                               seed=c["source"].get("seed", 0), workers=job.settings.get("workers"), log=job.log)
    keys = ("rows_read", "rows_kept", "rejected", "total_text_tokens", "total_visual_tokens")
    return {k: manifest.get(k) for k in keys}
