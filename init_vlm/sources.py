"""Where the two inputs come from: a local folder or a hub id, and what their weight files hold.

A `Checkpoint` knows every tensor's shard and byte range (from the safetensors headers) without
loading any data, so later steps can check names and shapes first and stream bytes afterwards.
The ViT source is read (and downloaded) only as far as its vision tower: of a 72B Qwen2.5-VL
checkpoint that is one shard of ~1.3 GB, not all ~146 GB."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from init_vlm.errors import InitVLMError
from init_vlm.hub import hub_revision, snapshot
from init_vlm.safetensors_io import TensorEntry, read_header, read_weight_map

INDEX_NAME = "model.safetensors.index.json"
# Where a Qwen2.5-VL checkpoint keeps its vision tower: the hub layout, then transformers >= 4.52's.
VISION_PREFIXES = ("visual.", "model.visual.")
# What a hub download fetches: configs, tokenizer, processor and safetensors weights, never *.bin/*.pth.
FILE_PATTERNS = ["*.json", "*.txt", "*.jinja", "*.model", "*.tiktoken"]
HUB_PATTERNS = FILE_PATTERNS + ["*.safetensors"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_source(source: str, revision: str | None = None, *,
                   only_prefixes: tuple[str, ...] | None = None) -> Path:
    """A local folder as is; otherwise a hub id fetched with huggingface_hub (the cache serves it offline).

    only_prefixes: download only the weight shards holding tensors with these name prefixes."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise InitVLMError(f"source {source}: is a file, expected a model folder or a hub id")
    if not _HUB_ID.match(source):
        raise InitVLMError(f"source {source}: no such folder, and not a hub id of the form owner/name")
    if only_prefixes is None:
        return snapshot(source, revision, HUB_PATTERNS)
    # Small files first; the index then says which shards hold the wanted tensors.
    folder = snapshot(source, revision, FILE_PATTERNS)
    if not (folder / INDEX_NAME).is_file():
        return snapshot(source, hub_revision(folder) or revision, HUB_PATTERNS)  # one unsharded file
    try:
        shards = shards_holding(read_weight_map(folder / INDEX_NAME), only_prefixes)
    except ValueError as err:
        raise InitVLMError(f"source {source}: {err}") from None
    if not shards:  # an empty pattern list would mean "everything"; opening the checkpoint reports the lack
        return folder
    # Pinned to the commit just resolved, so a branch that moves in between cannot mix two commits.
    return snapshot(source, hub_revision(folder) or revision, shards)


def shards_holding(weight_map: dict[str, str], prefixes: tuple[str, ...] | None) -> list[str]:
    """The shard files (sorted) holding any tensor whose name starts with one of `prefixes` (None: all)."""
    return sorted({shard for name, shard in weight_map.items() if prefixes is None or name.startswith(prefixes)})


@dataclass
class Checkpoint:
    """One input checkpoint: its role ('ViT' or 'LLM'), how the user named it, and its tensors."""

    role: str
    source: str
    folder: Path
    revision: str | None
    only_prefixes: tuple[str, ...] | None = None  # read only shards holding these tensors (None: all)
    tensors: dict[str, TensorEntry] = field(default_factory=dict)

    def fail(self, what: str) -> InitVLMError:
        return InitVLMError(f"{self.role} source {self.source}: {what}")

    def read_config(self) -> dict:
        path = self.folder / "config.json"
        if not path.is_file():
            raise self.fail("no config.json")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise self.fail(f"config.json is not valid JSON ({err.msg} at line {err.lineno})") from None


def open_checkpoint(role: str, source: str, revision: str | None, *,
                    only_prefixes: tuple[str, ...] | None = None) -> Checkpoint:
    folder = resolve_source(source, revision, only_prefixes=only_prefixes)
    # A hub snapshot's folder names its commit: record that, not a branch name like "main".
    ckpt = Checkpoint(role, source, folder, hub_revision(folder) or revision, only_prefixes)
    try:
        ckpt.tensors = _index_tensors(ckpt)
    except (ValueError, OSError) as err:  # corrupt or unreadable shard: name the source
        raise ckpt.fail(str(err)) from None
    return ckpt


def _index_tensors(ckpt: Checkpoint) -> dict[str, TensorEntry]:
    tensors: dict[str, TensorEntry] = {}
    for shard in _shard_files(ckpt):
        for name, entry in read_header(shard).items():
            if name in tensors:
                raise ckpt.fail(f"tensor {name} appears in both {tensors[name].file.name} and {shard.name}")
            tensors[name] = entry
    _check_index_agrees(ckpt, tensors)
    return tensors


def _shard_files(ckpt: Checkpoint) -> list[Path]:
    index = ckpt.folder / INDEX_NAME
    if index.is_file():
        shards = [ckpt.folder / f for f in shards_holding(read_weight_map(index), ckpt.only_prefixes)]
        missing = [p.name for p in shards if not p.is_file()]
        if missing:
            raise ckpt.fail(f"{index.name} lists {len(missing)} missing shard(s): {', '.join(missing[:3])}")
        return shards
    single = ckpt.folder / "model.safetensors"
    if single.is_file():
        return [single]
    others = sorted(p.name for p in ckpt.folder.glob("*.bin")) + sorted(p.name for p in ckpt.folder.glob("*.pth"))
    if others:
        raise ckpt.fail(f"has only non-safetensors weights ({others[0]}...); convert them to safetensors first")
    raise ckpt.fail(f"no model.safetensors or {INDEX_NAME}")


def _check_index_agrees(ckpt: Checkpoint, tensors: dict[str, TensorEntry]) -> None:
    index = ckpt.folder / INDEX_NAME
    if not index.is_file():
        return
    read = {entry.file.name for entry in tensors.values()}
    for name, shard in read_weight_map(index).items():
        if name in tensors and tensors[name].file.name != Path(shard).name:
            raise ckpt.fail(f"{index.name} maps {name} to {shard}, but it is in {tensors[name].file.name}")
        if name not in tensors and Path(shard).name in read:
            raise ckpt.fail(f"{index.name} maps {name} to {shard}, but that shard does not hold it")
