"""train.stage.run around a stand-in for `llamafactory-cli train` (a script that prints what
LLaMA-Factory prints and writes what it writes): the tokenized cache, the trainable-parameter
check and the multi-node follower, without launching LLaMA-Factory. The two lines the stand-in
prints are checked against the installed LLaMA-Factory's own source below, so the stand-in
cannot drift from the real tool; the slow tests run the real one."""

from __future__ import annotations

import json
import struct
import sys
import textwrap
from pathlib import Path

import pytest

import train.stage as stage
from harness.chain import build_chain
from harness.config import compose_config, to_plain
from stagekit import CommandFailed, StageLog, StageRun
from train.tokenized import COMPLETE, SAVED
from train.trainable import TrainableMismatch, parse_lf_count

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


class Logged(StageLog):
    """The stage log, also kept as a list of messages for the assertions."""

    def __init__(self, path: Path):
        super().__init__("train.alignment", path, echo=False)
        self.lines: list[str] = []

    def __call__(self, msg: str) -> None:
        self.lines.append(msg)
        super().__call__(msg)


@pytest.fixture
def job(tmp_path, results_dir, monkeypatch):
    """A train.alignment run on fake inputs; the trainer is FAKE_LF."""
    cfg = to_plain(compose_config([]))
    spec = next(s for s in build_chain(cfg) if s.name == "train.alignment")
    store = tmp_path / "store"
    model, data, out = store / "init_vlm" / "m", store / "data_prep" / "d", store / "train" / "t"
    for folder in (model / "model", data, out):
        folder.mkdir(parents=True)
    write_safetensors(model / "model" / "model.safetensors")
    (model / "model" / "tokenizer.json").write_text("{}")
    (data / "dataset_info.json").write_text(json.dumps({"embedded_llava": {"file_name": str(data)}}))
    script = tmp_path / "fake_lf.py"
    script.write_text(FAKE_LF)
    monkeypatch.setattr(stage, "train_command", lambda yaml_path, **_: [sys.executable, str(script), str(yaml_path)])
    return StageRun(name=spec.name, out_dir=out, inputs={"model": model, "data": data}, config=spec.config,
                    log=Logged(tmp_path / "train.log"), settings=spec.settings,
                    input_fingerprints={"model": "model-fp", "data": "data-fp"}, cache_dir=store / "cache" / "train")


def fake_lf(monkeypatch, **steps):
    monkeypatch.setenv("FAKE_LF", json.dumps(steps))


def cache_dir(job) -> Path:
    return stage.tokenized_cache(job.cache_dir, "data-fp", job.inputs["model"] / "model", job.config)


def test_the_stand_in_prints_what_the_installed_llamafactory_prints():
    """The cache is marked complete on LLaMA-Factory's "saved" line and the trainable count is
    read from its parameter line: both formats come from its source, which we read here."""
    import importlib.util

    root = Path(importlib.util.find_spec("llamafactory").origin).parent
    loader = (root / "data" / "loader.py").read_text()
    assert 'f"Tokenized dataset is saved at {data_args.tokenized_path}."' in loader
    assert SAVED == "Tokenized dataset is saved at"
    model_loader = (root / "model" / "loader.py").read_text()
    assert 'f"trainable params: {trainable_params:,} || "' in model_loader
    assert parse_lf_count("trainable params: 16 || all params: 47 || trainable%: 34.0426") == 16


def test_cache_is_complete_once_saved_even_when_training_then_fails(job, monkeypatch):
    fake_lf(monkeypatch, save=True, count=PROJECTOR, fail=True)
    with pytest.raises(CommandFailed, match="illegal memory access"):
        stage.run(job)
    assert (cache_dir(job) / COMPLETE).exists()
    fake_lf(monkeypatch, save=True, count=PROJECTOR)   # the resumed run keeps and reuses it
    info = stage.run(job)
    assert info["trainable_params"] == PROJECTOR and info["train_loss"] == 1.5
    assert f"reusing tokenized dataset {cache_dir(job)}" in job.log.lines
    assert "Tokenized dataset is saved" not in job.log.path.read_text().split("$ ")[-1]   # not rebuilt


def test_a_run_without_the_trainable_count_line_is_refused(job, monkeypatch):
    fake_lf(monkeypatch, save=True)
    with pytest.raises(TrainableMismatch, match=r"check could not be made.*expected 16 \(projector\)"):
        stage.run(job)


def test_a_wrong_trainable_count_stops_with_both_numbers(job, monkeypatch):
    fake_lf(monkeypatch, save=True, count=47)
    with pytest.raises(TrainableMismatch, match="should train 16 parameters .* reports 47 trainable"):
        stage.run(job)


def test_a_follower_node_leaves_the_shared_folders_to_node_0(job, monkeypatch):
    """Node 0 may be writing the cache and checkpoints that look incomplete to a follower."""
    job.settings = {**job.settings, "launcher": {**job.settings["launcher"], "nnodes": 2, "node_rank": 1}}
    job.config = {**job.config, "world_size": {"nnodes": 2, "nproc_per_node": 1}}
    job.config["stage"] = {**job.config["stage"], "global_batch_size": 8}
    cache = cache_dir(job)
    cache.mkdir(parents=True)
    (cache / "data-00000-of-00001.arrow").write_text("node 0 is writing this")
    saving = job.out_dir / "model" / "checkpoint-4"
    saving.mkdir(parents=True)
    fake_lf(monkeypatch, count=PROJECTOR)
    stage.run(job)
    assert (cache / "data-00000-of-00001.arrow").exists() and not (cache / COMPLETE).exists()
    assert saving.exists()
