"""The provenance manifest written next to the weights: enough to tell, later, exactly what this model is.

No timestamps or host names: the same inputs give the same manifest, so two folders can be compared
by their manifests alone."""

from __future__ import annotations

import json
import platform
from collections import defaultdict
from pathlib import Path

from init_vlm.safetensors_io import file_sha256
from init_vlm.sources import Checkpoint
from init_vlm.weights import OutTensor

MANIFEST_NAME = "init_vlm_manifest.json"
_LIBRARIES = ("torch", "transformers", "safetensors", "tokenizers", "huggingface_hub")


def source_record(ckpt: Checkpoint, plan: list[OutTensor]) -> dict:
    used = [t for t in plan if t.role == ckpt.role and t.src is not None]
    files = sorted({t.src.file for t in used})
    return {"source": ckpt.source, "path": str(ckpt.folder), "revision": ckpt.revision,
            "files_sha256": {f.name: file_sha256(f) for f in files}}


def parameter_groups(plan: list[OutTensor], vit: Checkpoint, llm: Checkpoint) -> dict:
    groups: dict[str, dict] = {}
    for t in plan:
        g = groups.setdefault(t.group, {"source": _group_source(t, vit, llm), "files": set(), "tensors": 0,
                                        "parameters": 0})
        g["tensors"] += 1
        g["parameters"] += _numel(t.shape)
        if t.src is not None:
            g["files"].add(t.src.file.name)  # sha256 of each is under sources.<vit|llm>.files_sha256
    return {name: dict(g, files=sorted(g["files"])) for name, g in sorted(groups.items())}


def module_parameters(plan: list[OutTensor], tied: bool) -> dict[str, int]:
    """Parameter counts per module (two name levels deep: visual.blocks, model.layers, ...)."""
    counts: dict[str, int] = defaultdict(int)
    for t in plan:
        # Runtime-layout names (Qwen3-VL) carry one more level: model.visual.blocks, model.language_model.layers.
        depth = 3 if t.name.startswith(("model.visual.", "model.language_model.")) else 2
        counts[".".join(t.name.split(".")[:depth])] += _numel(t.shape)
    counts["total"] = sum(_numel(t.shape) for t in plan)
    if tied:
        counts["lm_head (tied to model.embed_tokens)"] = 0
    return dict(sorted(counts.items()))


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def _group_source(t: OutTensor, vit: Checkpoint, llm: Checkpoint) -> str:
    if t.role is None:
        return "new (this stage)"
    ckpt = vit if t.role == "ViT" else llm
    note = " (rows added for new tokens)" if t.data is not None else ""
    return f"{t.role} source {ckpt.source}" + (f"@{ckpt.revision}" if ckpt.revision else "") + note


def _numel(shape) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n
