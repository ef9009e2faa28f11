"""train.stage.run around a stand-in for `llamafactory-cli train` (a script that prints what
LLaMA-Factory prints and writes what it writes): the tokenized cache, the trainable-parameter
check and the multi-node follower, without launching LLaMA-Factory."""

from __future__ import annotations

import json
import struct
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

import train.stage as stage
from harness.chain import build_chain
from harness.config import compose_config, to_plain
from harness.proc import CommandFailed
from train.tokenized import COMPLETE
from train.trainable import TrainableMismatch

# A fake model: projector 16 parameters, vision 6, language 25.
TENSORS = {"model.visual.merger.mlp.0.weight": [4, 4], "model.visual.blocks.0.attn.weight": [2, 3],
           "model.language_model.layers.0.mlp.weight": [5, 5]}
PROJECTOR = 16

FAKE_LF = textwrap.dedent('''
    import json, os, sys, yaml
    cfg = yaml.safe_load(open(sys.argv[1]))
    steps = json.loads(os.environ["FAKE_LF"])
    tok = cfg["tokenized_path"]
    if "save" in steps and not (os.path.isdir(tok) and os.listdir(tok)):
        os.makedirs(tok)
        open(os.path.join(tok, "dataset_dict.json"), "w").write('{"splits": ["train"]}')
        print(f"[INFO|loader.py:333] >> Tokenized dataset is saved at {tok}.", flush=True)
    if "count" in steps:
        print(f"[INFO|loader.py:229] >> trainable params: {steps['count']:,} || all params: 47 || "
              "trainable%: 34.0426", flush=True)
    if steps.get("fail"):
        print("RuntimeError: CUDA error: an illegal memory access", flush=True)
        sys.exit(1)
    os.makedirs(cfg["output_dir"], exist_ok=True)
    open(os.path.join(cfg["output_dir"], "train_results.json"), "w").write('{"train_loss": 1.5}')
''')


def write_safetensors(path: Path) -> None:
    header, offset = {}, 0
    for name, shape in TENSORS.items():
        size = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


@pytest.fixture
def ctx(tmp_path, results_dir, monkeypatch):
    """A train.alignment context on fake inputs; the trainer is FAKE_LF."""
    cfg = to_plain(compose_config([]))
    config = next(s.config for s in build_chain(cfg) if s.name == "train.alignment")
    store = tmp_path / "store"
    model, data, out = store / "init_vlm" / "m", store / "data_prep" / "d", store / "train" / "t"
    for folder in (model / "model", data, out):
        folder.mkdir(parents=True)
    write_safetensors(model / "model" / "model.safetensors")
    (model / "model" / "tokenizer.json").write_text("{}")
    (data / ".done.json").write_text(json.dumps({"fingerprint": "data-fp"}))
    (data / "dataset_info.json").write_text(json.dumps({"embedded_llava": {"file_name": str(data)}}))
    script = tmp_path / "fake_lf.py"
    script.write_text(FAKE_LF)
    monkeypatch.setattr(stage, "train_command", lambda yaml_path: [sys.executable, str(script), str(yaml_path)])
    logs = []
    return SimpleNamespace(config=config, out_dir=out, inputs={"model": model, "data": data},
                           log_path=tmp_path / "train.log", run_cfg=cfg, log=logs.append, logs=logs)


def fake_lf(monkeypatch, **steps):
    monkeypatch.setenv("FAKE_LF", json.dumps(steps))


def cache_dir(ctx) -> Path:
    return Path(stage.write_stage_files(ctx)[1]["tokenized_path"])


def test_cache_is_complete_once_saved_even_when_training_then_fails(ctx, monkeypatch):
    fake_lf(monkeypatch, save=True, count=PROJECTOR, fail=True)
    with pytest.raises(CommandFailed, match="illegal memory access"):
        stage.run(ctx)
    assert (cache_dir(ctx) / COMPLETE).exists()
    fake_lf(monkeypatch, save=True, count=PROJECTOR)   # the resumed run keeps and reuses it
    info = stage.run(ctx)
    assert info["trainable_params"] == PROJECTOR and info["train_loss"] == 1.5
    assert f"reusing tokenized dataset {cache_dir(ctx)}" in ctx.logs
    assert "Tokenized dataset is saved" not in ctx.log_path.read_text().split("$ ")[-1]   # not rebuilt


def test_a_run_without_the_trainable_count_line_is_refused(ctx, monkeypatch):
    fake_lf(monkeypatch, save=True)
    with pytest.raises(TrainableMismatch, match=r"check could not be made.*expected 16 \(projector\)"):
        stage.run(ctx)


def test_a_wrong_trainable_count_stops_with_both_numbers(ctx, monkeypatch):
    fake_lf(monkeypatch, save=True, count=47)
    with pytest.raises(TrainableMismatch, match="should train 16 parameters .* reports 47 trainable"):
        stage.run(ctx)


def test_a_follower_node_leaves_the_shared_folders_to_node_0(ctx, monkeypatch):
    """Node 0 may be writing the cache and checkpoints that look incomplete to a follower."""
    ctx.run_cfg = {**ctx.run_cfg, "launcher": {**ctx.run_cfg["launcher"], "nnodes": 2, "node_rank": 1}}
    ctx.config = {**ctx.config, "world_size": {"nnodes": 2, "nproc_per_node": 1}}
    ctx.config["stage"] = {**ctx.config["stage"], "global_batch_size": 4}
    cache = cache_dir(ctx)
    cache.mkdir(parents=True)
    (cache / "data-00000-of-00001.arrow").write_text("node 0 is writing this")
    saving = ctx.out_dir / "model" / "checkpoint-4"
    saving.mkdir(parents=True)
    fake_lf(monkeypatch, count=PROJECTOR)
    stage.run(ctx)
    assert (cache / "data-00000-of-00001.arrow").exists() and not (cache / COMPLETE).exists()
    assert saving.exists()
