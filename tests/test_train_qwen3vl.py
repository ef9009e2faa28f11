"""Training a fresh Qwen3-VL: the projector-only alignment stage must train the merger *and* the
DeepStack mergers (LayerNorms included), which LLaMA-Factory files under the vision tower; the
harness runs such a stage through train/lf_train.py, which registers them as projector.

The fast tests count groups from safetensors headers; the slow ones run the real `llamafactory-cli train`
(template qwen3_vl) and the real `lmms-eval` (model qwen3_vl) on the tiny Qwen3-VL built by init_vlm.
Run the slow ones with: .venv/bin/python -m pytest tests/test_train_qwen3vl.py -q -m slow"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from embedded.tiny_models import QWEN3VL_MAX_PIXELS, QWEN3VL_MIN_PIXELS, build_tiny_pair
from init_vlm import build_vlm
from recaption.serve import free_port
from tests.test_init_vlm import weights
from tests.test_init_vlm_integration import BIN, TASK_UTILS, TASK_YAML, image, run  # noqa: F401 (fixture)
from train.launch import train_command
from train.recipe import LF_IMAGE_PIXELS
from train.trainable import expected_trainable, moves_projector_parts, param_groups

# Tiny Qwen3-VL (vision hidden 32, 2x2 merge -> 128, LLM hidden 64, two DeepStack mergers):
MERGER = 32 + 32 + 128 * 128 + 128 + 64 * 128 + 64            # LayerNorm(32) + fc1 + fc2 = 24,832
DEEPSTACK_LINEAR = 2 * (128 * 128 + 128 + 64 * 128 + 64)      # fc1 + fc2 of each = 49,536
DEEPSTACK_NORM = 2 * (128 + 128)                              # LayerNorm(128) of each = 512
PROJECTOR_SPEC = {"trainable": "projector", "freeze_vision_tower": True, "freeze_multi_modal_projector": False,
                  "freeze_language_model": True}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("q3vlm")
    vit, llm = build_tiny_pair(root / "src", family="qwen3_vl")
    budget = {"min_pixels": QWEN3VL_MIN_PIXELS, "max_pixels": QWEN3VL_MAX_PIXELS}
    build_vlm(str(vit), str(llm), root / "vlm", pixels=budget, log=lambda *_: None)
    return root / "vlm"


def test_the_projector_group_is_the_merger_and_the_deepstack_mergers(model_dir):
    groups = param_groups(model_dir)
    assert groups["projector"] == MERGER + DEEPSTACK_LINEAR + DEEPSTACK_NORM == 74880
    assert expected_trainable(model_dir, PROJECTOR_SPEC) == 74880


def test_qwen3vl_stages_launch_through_the_registering_entry_point(model_dir, tmp_path):
    assert moves_projector_parts(model_dir, "qwen3_vl_nothink")
    # Before init_vlm has built the folder (plan), the template says which family the stage trains.
    assert moves_projector_parts(tmp_path, "qwen3_vl_nothink") and not moves_projector_parts(tmp_path, "qwen2_vl")
    assert train_command(Path("s.yaml"), projector_parts=True) == ["python", "-m", "train.lf_train", "train", "s.yaml"]
    assert train_command(Path("s.yaml")) == ["llamafactory-cli", "train", "s.yaml"]


def _lf_modules():
    """LLaMA-Factory's view of a Qwen3-VL stage, in this process, before and after the registration."""
    from llamafactory.model.model_utils.visual import COMPOSITE_MODELS

    entry = COMPOSITE_MODELS["qwen3_vl"]
    return list(entry.projector_keys), list(entry.vision_model_keys)


@pytest.mark.slow   # imports LLaMA-Factory in a fresh process
def test_registration_moves_only_the_deepstack_mergers(tmp_path):
    code = ("import json; from train.lf_train import register_projector_parts as r; "
            "from tests.test_train_qwen3vl import _lf_modules as m; b = m(); r(); r(); print(json.dumps([b, m()]))")
    proc = run([str(BIN / "python"), "-c", code], Path(__file__).resolve().parents[1], timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = json.loads(proc.stdout.strip().splitlines()[-1])
    assert before == [["visual.merger"],
                      ["visual.pos_embed", "visual.patch_embed", "visual.blocks", "visual.deepstack_merger_list"]]
    assert after == [["visual.merger", "visual.deepstack_merger_list"],   # twice is the same as once
                     ["visual.pos_embed", "visual.patch_embed", "visual.blocks"]]


def _dataset(tmp_path: Path, image: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    sample = {"messages": [{"role": "user", "content": "<image>What is in the picture?"},
                           {"role": "assistant", "content": "A red square on a white background."}],
              "images": [str(image)]}
    (data / "tiny.json").write_text(json.dumps([sample] * 4))
    (data / "dataset_info.json").write_text(json.dumps({"tiny": {
        "file_name": "tiny.json", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}))
    return data


@pytest.mark.slow
@pytest.mark.parametrize("torchrun", [False, True], ids=["one-process", "torchrun"])
def test_alignment_changes_exactly_the_merger_and_deepstack_merger_tensors(model_dir, image, tmp_path, torchrun):
    """The harness's command for the stage, in one process and as a torchrun worker (LLaMA-Factory
    starts those from a file of its own choosing: the registration must reach them too)."""
    out = tmp_path / "train_out"
    cfg = {"model_name_or_path": str(model_dir), "stage": "sft", "do_train": True, "finetuning_type": "full",
           **{k: v for k, v in PROJECTOR_SPEC.items() if k != "trainable"},
           "dataset": "tiny", "dataset_dir": str(_dataset(tmp_path, image)), "template": "qwen3_vl_nothink",
           "cutoff_len": 256, **LF_IMAGE_PIXELS, "preprocessing_num_workers": 1, "output_dir": str(out),
           "overwrite_output_dir": True, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1,
           "learning_rate": 1e-2, "max_steps": 2, "logging_steps": 1, "save_strategy": "no", "bf16": False, "report_to": "none", "seed": 0}
    (tmp_path / "cfg.yaml").write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in cfg.items()) + "\n")
    argv = train_command(tmp_path / "cfg.yaml", projector_parts=True)
    env = {"FORCE_TORCHRUN": "1", "NNODES": "1", "NODE_RANK": "0", "NPROC_PER_NODE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())} if torchrun else {}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"   # `python` and `torchrun` of this venv
    proc = run([str(BIN / argv[0]), *argv[1:]], Path(__file__).resolve().parents[1], timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out_text = proc.stdout + proc.stderr
    assert "trainable params: 74,880" in out_text   # == expected_trainable, the harness's check
    assert ("Initializing 1 distributed tasks" in out_text) == torchrun
    before, after = weights(model_dir), weights(out)
    assert set(before) == set(after)
    changed = sorted(n for n in before if not torch.equal(before[n], after[n]))
    expected = sorted([f"model.visual.merger.{m}.{p}" for m in ("norm", "linear_fc1", "linear_fc2")
                       for p in ("weight", "bias")]
                      + [f"model.visual.deepstack_merger_list.{i}.{m}.{p}" for i in (0, 1)
                         for m in ("norm", "linear_fc1", "linear_fc2") for p in ("weight", "bias")])
    assert changed == expected, changed


@pytest.mark.slow
def test_lmms_eval_qwen3_vl_evaluates_the_built_model(model_dir, image, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tmp_path / "smoke.jsonl"
    data.write_text(json.dumps({"question": "What color is the square?", "answer": "red", "image": str(image)}) + "\n")
    (tasks / "init_vlm_smoke.yaml").write_text(TASK_YAML.format(data=data))
    (tasks / "utils.py").write_text(TASK_UTILS)
    args = (f"pretrained={model_dir},device=cpu,device_map=cpu,max_pixels={QWEN3VL_MAX_PIXELS},"
            f"min_pixels={QWEN3VL_MIN_PIXELS}")
    out = tmp_path / "eval_out"
    proc = run([str(BIN / "lmms-eval"), "eval", "--model", "qwen3_vl", "--model_args", args, "--tasks",
                "init_vlm_smoke", "--include_path", str(tasks), "--batch_size", "1", "--output_path", str(out),
                "--log_samples"], tmp_path, timeout=400)
    results = sorted(out.rglob("*_results.json"))  # lmms-eval exits 0 even when the model fails to load
    assert proc.returncode == 0 and results, (proc.stdout + proc.stderr)[-3000:]
    assert "exact_match,none" in json.loads(results[0].read_text())["results"]["init_vlm_smoke"]
