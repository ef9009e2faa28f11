"""The built folder is used unchanged by the two tools downstream: LLaMA-Factory trains it, lmms-eval evaluates it.

Run: .venv/bin/python -m pytest tests/test_init_vlm_integration.py -q -m slow   (~1 min: two subprocesses)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedded.tiny_models import MAX_PIXELS, MIN_PIXELS, build_tiny_pair
from init_vlm import build_vlm
from train.recipe import LF_IMAGE_PIXELS

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vlm")
    vit, llm = build_tiny_pair(root / "src")
    out = root / "vlm"
    build_vlm(str(vit), str(llm), out, pixels={"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "red_square.png"
    img = Image.new("RGB", (84, 84), (255, 255, 255))
    img.paste((220, 20, 20), (20, 20, 64, 64))
    img.save(path)
    return path


def run(cmd: list[str], cwd: Path, timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "WANDB_DISABLED": "true", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_llamafactory_trains_the_built_model(model_dir, image, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sample = {"messages": [{"role": "user", "content": "<image>What is in the picture?"},
                           {"role": "assistant", "content": "A red square on a white background."}],
              "images": [str(image)]}  # absolute path, one <image> tag per image
    (data / "tiny.json").write_text(json.dumps([sample] * 4))
    (data / "dataset_info.json").write_text(json.dumps({"tiny": {
        "file_name": "tiny.json", "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}))
    out = tmp_path / "train_out"
    cfg = {"model_name_or_path": str(model_dir), "stage": "sft", "do_train": True, "finetuning_type": "full",
           "freeze_vision_tower": True, "freeze_multi_modal_projector": False, "freeze_language_model": True,
           "dataset": "tiny", "dataset_dir": str(data), "template": "qwen2_vl", "cutoff_len": 256,
           **LF_IMAGE_PIXELS, "preprocessing_num_workers": 1,
           "output_dir": str(out), "overwrite_output_dir": True, "per_device_train_batch_size": 1,
           "gradient_accumulation_steps": 1, "learning_rate": 1e-3, "max_steps": 2, "logging_steps": 1,
           "save_strategy": "no", "bf16": False, "report_to": "none", "seed": 0}
    (tmp_path / "cfg.yaml").write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in cfg.items()) + "\n")
    proc = run([str(BIN / "llamafactory-cli"), "train", str(tmp_path / "cfg.yaml")], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in log if "loss" in row]
    assert len(losses) == 2 and all(loss == loss and loss > 0 for loss in losses)
    assert "trainable params: 24,800" in proc.stdout + proc.stderr  # the projector only


TASK_YAML = """task: init_vlm_smoke
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 4
  temperature: 0
  until: ["<|im_end|>"]
process_results: !function utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""

TASK_UTILS = '''from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc):
    return doc["question"]


def process_results(doc, results):
    return {"exact_match": float(results[0].strip() == doc["answer"])}
'''


def test_lmms_eval_evaluates_the_built_model(model_dir, image, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tmp_path / "smoke.jsonl"
    data.write_text(json.dumps({"question": "What color is the square?", "answer": "red", "image": str(image)}) + "\n")
    (tasks / "init_vlm_smoke.yaml").write_text(TASK_YAML.format(data=data))
    (tasks / "utils.py").write_text(TASK_UTILS)
    model_args = f"pretrained={model_dir},device=cpu,device_map=cpu,max_pixels={MAX_PIXELS},min_pixels={MIN_PIXELS}"
    out = tmp_path / "eval_out"
    proc = run([str(BIN / "lmms-eval"), "eval", "--model", "qwen2_5_vl", "--model_args", model_args,
                "--tasks", "init_vlm_smoke", "--include_path", str(tasks), "--batch_size", "1",
                "--output_path", str(out), "--log_samples"], tmp_path, timeout=300)
    # lmms-eval exits 0 even when the model fails to load: the results file is the real signal.
    results = sorted(out.rglob("*_results.json"))
    assert proc.returncode == 0 and results, (proc.stdout + proc.stderr)[-3000:]
    scores = json.loads(results[0].read_text())["results"]["init_vlm_smoke"]
    assert "exact_match,none" in scores
    samples = [p for p in out.rglob("*init_vlm_smoke*.jsonl")]
    assert samples and json.loads(samples[0].read_text().splitlines()[0])["doc_id"] == 0
