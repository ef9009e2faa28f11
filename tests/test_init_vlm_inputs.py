"""init_vlm's inputs and leftovers: malformed shards and indexes, other checkpoint layouts, sources in the
hub cache (offline), the vision-only download of the ViT source, and partial folders of killed builds.

Run: .venv/bin/python -m pytest tests/test_init_vlm_inputs.py -q"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from embedded.tiny_models import build_tiny_pair
from init_vlm import build_vlm, resolve_source
from init_vlm.safetensors_io import read_weight_map
from init_vlm.sources import VISION_PREFIXES, shards_holding
from tests.test_init_vlm import QUIET, copy_source, fails, weights

SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    return build_tiny_pair(tmp_path_factory.mktemp("src"))


def raw_shard(path: Path, header, data: bytes) -> None:
    """A safetensors file with exactly this header (any JSON), for headers safetensors itself never writes."""
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def reshard(folder: Path, first) -> dict[str, str]:
    """Split folder's model.safetensors into SHARDS (names for which `first(name)` holds go first) + an index."""
    tensors = load_file(folder / "model.safetensors")
    weight_map = {}
    for fname, part in zip(SHARDS, ({k: v for k, v in tensors.items() if first(k)},
                                    {k: v for k, v in tensors.items() if not first(k)})):
        save_file(part, folder / fname, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, fname))
    (folder / "model.safetensors").unlink()
    write_index(folder, weight_map)
    return weight_map


def write_index(folder: Path, weight_map) -> None:
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


# ---------------------------------------------------------------- malformed headers and indexes

_W = {"shape": [2], "data_offsets": [0, 8]}
MALFORMED_HEADERS = {
    "entry without dtype": ({"w": _W}, "header entry of tensor w has no dtype"),
    "header is a JSON list": ([{"dtype": "F32", **_W}], "header that is a JSON list, not an object"),
    "entry is a string": ({"w": "F32"}, "header entry of tensor w is a JSON str"),
    "dtype is a list": ({"w": {**_W, "dtype": ["F32"]}}, "has an unknown dtype ['F32']"),
    "shape is null": ({"w": {**_W, "dtype": "F32", "shape": None}}, "has shape None"),
    "offsets are strings": ({"w": {**_W, "dtype": "F32", "data_offsets": ["0", "8"]}},
                            "has data_offsets ['0', '8'], not [start, end]"),
    "offsets before the data": ({"w": {**_W, "dtype": "F32", "data_offsets": [-8, 0]}}, "has data_offsets [-8, 0]"),
    "offsets past the end": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                             "does not fit the file (offsets 0..16, data size 8)"),
    "one offset": ({"w": {**_W, "dtype": "F32", "data_offsets": [8]}}, "has data_offsets [8]"),
}


@pytest.mark.parametrize("case", MALFORMED_HEADERS)
def test_malformed_safetensors_header_is_one_line_naming_source_and_problem(sources, tmp_path, case):
    header, fragment = MALFORMED_HEADERS[case]
    llm = copy_source(sources[1], tmp_path / "llm_bad_header")
    raw_shard(llm / "model.safetensors", header, bytes(8))
    fails(sources[0], llm, tmp_path, f"LLM source {llm}: model.safetensors", fragment)


@pytest.mark.parametrize("weight_map, fragment", [
    (["model.norm.weight"], "weight_map is not tensor name -> shard file"),
    ({"model.norm.weight": 3}, "weight_map is not tensor name -> shard file"),
    (None, "weight_map is not tensor name -> shard file"),
])
def test_malformed_index_is_one_line_naming_source(sources, tmp_path, weight_map, fragment):
    llm = copy_source(sources[1], tmp_path / "llm_bad_index")
    write_index(llm, weight_map)
    fails(sources[0], llm, tmp_path, f"LLM source {llm}", "model.safetensors.index.json is not a valid index",
          fragment)


def test_index_mapping_a_tensor_to_the_wrong_shard(sources, tmp_path):
    llm = copy_source(sources[1], tmp_path / "llm_wrong_index")
    weight_map = reshard(llm, lambda name: "embed_tokens" in name)
    assert weight_map["model.norm.weight"] == SHARDS[1]
    write_index(llm, {**weight_map, "model.norm.weight": SHARDS[0]})
    fails(sources[0], llm, tmp_path, f"LLM source {llm}",
          f"maps model.norm.weight to {SHARDS[0]}, but it is in {SHARDS[1]}")
    write_index(llm, {**weight_map, "model.extra.weight": SHARDS[0]})
    fails(sources[0], llm, tmp_path, f"LLM source {llm}",
          f"maps model.extra.weight to {SHARDS[0]}, but that shard does not hold it")


# ---------------------------------------------------------------- other layouts


def test_vit_source_in_the_transformers_452_layout(sources, tmp_path):
    """transformers >= 4.52 may save a Qwen2.5-VL as model.visual.* / model.language_model.*."""
    vit = copy_source(sources[0], tmp_path / "vit_runtime_names")
    hub = load_file(vit / "model.safetensors")
    renamed = {("model." + k if k.startswith("visual.") else
                "model.language_model." + k[len("model."):] if k.startswith("model.") else k): v
               for k, v in hub.items()}
    assert any(k.startswith("model.visual.") for k in renamed) and not any(k.startswith("visual.") for k in renamed)
    save_file(renamed, vit / "model.safetensors", metadata={"format": "pt"})
    manifest = build_vlm(str(vit), str(sources[1]), tmp_path / "out", **QUIET)
    out = weights(tmp_path / "out")
    vision = [k for k in hub if k.startswith("visual.") and not k.startswith("visual.merger.")]
    assert vision and all(torch.equal(out[k], hub[k]) for k in vision)
    assert manifest["parameter_groups"]["vision"]["tensors"] == len(vision)


def test_vision_shards_are_found_from_a_local_index(tmp_path):
    """A 72B-like index: the vision tower sits in one of 38 shards; only that one is needed."""
    shards = [f"model-{i:05d}-of-00038.safetensors" for i in range(1, 39)]
    weight_map = {f"model.layers.{i}.mlp.up_proj.weight": shards[i // 2] for i in range(76)}
    weight_map.update({"visual.blocks.0.attn.qkv.weight": shards[0], "visual.merger.mlp.0.weight": shards[0],
                       "lm_head.weight": shards[-1]})
    write_index(tmp_path, weight_map)
    index = read_weight_map(tmp_path / "model.safetensors.index.json")
    assert shards_holding(index, VISION_PREFIXES) == [shards[0]]
    assert shards_holding(index, None) == shards
    runtime = {("model." + k if k.startswith("visual.") else k): v for k, v in weight_map.items()}
    runtime["model.visual.blocks.31.mlp.down_proj.weight"] = shards[1]
    assert shards_holding(runtime, VISION_PREFIXES) == shards[:2]


# ---------------------------------------------------------------- hub cache (offline)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """Puts a folder into an offline hub cache laid out as huggingface_hub does:
    models--<org>--<name>/refs/main holding the commit, and snapshots/<commit>/ holding the files."""
    from huggingface_hub import constants

    root = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def add(repo_id: str, folder: Path, skip: tuple[str, ...] = ()) -> Path:
        repo = root / f"models--{repo_id.replace('/', '--')}"
        snap = repo / "snapshots" / COMMIT
        shutil.copytree(folder, snap, ignore=shutil.ignore_patterns(*skip))
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(COMMIT)
        return snap

    return add


def test_sources_in_the_hub_cache_resolve_offline_with_their_revision(sources, tmp_path, hub_cache):
    snap = hub_cache("caprl-test/tiny-llm", sources[1])
    assert resolve_source("caprl-test/tiny-llm") == snap
    manifest = build_vlm(str(sources[0]), "caprl-test/tiny-llm", tmp_path / "out", verify=False, **QUIET)
    assert manifest["sources"]["llm"]["revision"] == COMMIT
    assert manifest["sources"]["llm"]["source"] == "caprl-test/tiny-llm"


def test_branch_revision_is_recorded_as_its_commit(sources, tmp_path, hub_cache):
    hub_cache("caprl-test/tiny-llm", sources[1])
    manifest = build_vlm(str(sources[0]), "caprl-test/tiny-llm", tmp_path / "out", llm_revision="main",
                         verify=False, **QUIET)
    assert manifest["sources"]["llm"]["revision"] == COMMIT
    assert manifest["parameter_groups"]["layers"]["source"] == f"LLM source caprl-test/tiny-llm@{COMMIT}"


def test_hub_vit_source_fetches_only_its_vision_shards(sources, tmp_path, hub_cache, monkeypatch):
    import huggingface_hub

    vit = copy_source(sources[0], tmp_path / "vit_sharded")
    reshard(vit, lambda name: name.startswith("visual."))
    # The text shard is not in the cache at all: any attempt to use it would fail offline.
    hub_cache("caprl-test/tiny-vl", vit, skip=(SHARDS[1],))
    requested, real = [], huggingface_hub.snapshot_download

    def recording(repo_id, **kwargs):
        requested.append(kwargs["allow_patterns"])
        return real(repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", recording)
    manifest = build_vlm("caprl-test/tiny-vl", str(sources[1]), tmp_path / "out", vit_revision="main", **QUIET)
    patterns = [p for call in requested for p in call]
    assert "*.safetensors" not in patterns
    assert requested[-1] == [SHARDS[0]]
    assert list(manifest["sources"]["vit"]["files_sha256"]) == [SHARDS[0]]
    assert manifest["sources"]["vit"]["revision"] == COMMIT


# ---------------------------------------------------------------- leftovers of killed builds


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: the pid no longer names a process (until the kernel reuses it)
    return proc.pid


def test_partial_folders_of_dead_builds_are_removed(sources, tmp_path):
    host, dead, live = socket.gethostname(), dead_pid(), os.getppid()
    partial = {
        "dead": f".out.init_vlm-partial-{host}-{dead}",
        "dead, written before the host was in the name": f".out.init_vlm-partial-{dead}",
        "live (maybe a concurrent build)": f".out.init_vlm-partial-{host}-{live}",
        "another host's": f".out.init_vlm-partial-other-node-{dead}",
        "another output's": f".out-b.init_vlm-partial-{host}-{dead}",
    }
    for name in partial.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "model-00001-of-00009.safetensors").write_bytes(b"half written")
    kept = {partial["live (maybe a concurrent build)"], partial["another host's"], partial["another output's"]}
    # Removed at the start, even when the build then stops on bad input (here: the LLM given as ViT).
    fails(sources[1], sources[1], tmp_path, "ViT source")
    assert {p.name for p in tmp_path.iterdir()} == kept
    build_vlm(str(sources[0]), str(sources[1]), tmp_path / "out", verify=False, **QUIET)
    assert {p.name for p in tmp_path.iterdir()} == kept | {"out"}
