"""Where the two inputs come from: a local folder or a hub id, and what their weight files hold.

A `Checkpoint` knows every tensor's shard and byte range (from the safetensors headers) without
loading any data, so later steps can check names and shapes first and stream bytes afterwards."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from init_vlm.errors import InitVLMError
from init_vlm.safetensors_io import TensorEntry, read_header

# What a hub download fetches: configs, tokenizer, processor and safetensors weights, never *.bin/*.pth.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "*.tiktoken"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_source(source: str, revision: str | None = None) -> Path:
    """A local folder as is; otherwise a hub id fetched with huggingface_hub (the cache serves it offline)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise InitVLMError(f"source {source}: is a file, expected a model folder or a hub id")
    if not _HUB_ID.match(source):
        raise InitVLMError(f"source {source}: no such folder, and not a hub id of the form owner/name")
    return _download(source, revision)


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    is_offline = hub_offline()
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS,
                                      local_files_only=is_offline))
    except LocalEntryNotFoundError:
        # Raised when offline (or unreachable) and the id is not in the local hub cache.
        if is_offline:
            raise InitVLMError(f"source {repo_id}: not a local folder and not in the hub cache, and "
                               f"HF_HUB_OFFLINE=1 forbids downloading; download it first or unset HF_HUB_OFFLINE") \
                from None
        raise InitVLMError(f"source {repo_id}: not a local folder, not in the hub cache, and the hub is "
                           f"unreachable (set HF_HUB_OFFLINE=1 to work from the cache only)") from None
    except Exception as err:  # repo not found, gated, bad revision: the hub's own message says which
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise InitVLMError(f"source {repo_id}: hub download failed: {first}") from None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it only once, at import)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return flag in ("1", "true", "yes", "on") or (not flag and bool(constants.HF_HUB_OFFLINE))


def hub_revision(folder: Path) -> str | None:
    """The commit of a hub-cache snapshot (…/snapshots/<sha>/), None for a plain folder."""
    parts = folder.parts
    if len(parts) >= 2 and parts[-2] == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", parts[-1]):
        return parts[-1]
    return None


@dataclass
class Checkpoint:
    """One input checkpoint: its role ('ViT' or 'LLM'), how the user named it, and its tensors."""

    role: str
    source: str
    folder: Path
    revision: str | None
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


def open_checkpoint(role: str, source: str, revision: str | None) -> Checkpoint:
    folder = resolve_source(source, revision)
    ckpt = Checkpoint(role, source, folder, revision or hub_revision(folder))
    try:
        ckpt.tensors = _index_tensors(ckpt)
    except (ValueError, OSError) as err:  # corrupt or unreadable shard: name the source
        raise ckpt.fail(str(err)) from None
    return ckpt


def _index_tensors(ckpt: Checkpoint) -> dict[str, TensorEntry]:
    shards = _shard_files(ckpt)
    tensors: dict[str, TensorEntry] = {}
    for shard in shards:
        for name, entry in read_header(shard).items():
            if name in tensors:
                raise ckpt.fail(f"tensor {name} appears in both {tensors[name].file.name} and {shard.name}")
            tensors[name] = entry
    _check_index_agrees(ckpt, tensors)
    return tensors


def _shard_files(ckpt: Checkpoint) -> list[Path]:
    index = ckpt.folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _weight_map(ckpt, index)
        shards = sorted({ckpt.folder / f for f in weight_map.values()})
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
    raise ckpt.fail("no model.safetensors or model.safetensors.index.json")


def _weight_map(ckpt: Checkpoint, index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ckpt.fail(f"{index.name} is not a valid index (no weight_map)") from None
    return weight_map


def _check_index_agrees(ckpt: Checkpoint, tensors: dict[str, TensorEntry]) -> None:
    index = ckpt.folder / "model.safetensors.index.json"
    if not index.is_file():
        return
    for name, shard in _weight_map(ckpt, index).items():
        if name not in tensors:
            raise ckpt.fail(f"{index.name} maps {name} to {shard}, but that shard does not hold it")
        if tensors[name].file.name != Path(shard).name:
            raise ckpt.fail(f"{index.name} maps {name} to {shard}, but it is in {tensors[name].file.name}")

