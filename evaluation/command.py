"""The lmms-eval command line and its environment, built without running or importing anything heavy."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Mapping

from evaluation.benchmarks import EvaluationError, lmms_task_name, split_judge, task_entries
from stagekit.threads import thread_env, threads_per_process

# Offline by default (compute nodes often have no network, and a silent download mid-run is
# not reproducible): tasks read the HF caches or local files only.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
BASE_ENV = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
EVAL_DEFAULTS = {"batch_size": 1, "limit": None, "model": "qwen2_5_vl", "device": "cpu", "num_processes": 1,
                 "extra_model_args": {}, "offline": True}

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def eval_settings(eval_cfg: Mapping) -> dict:
    cfg = {**EVAL_DEFAULTS, **dict(eval_cfg or {})}
    if not (cfg["device"] == "cpu" or str(cfg["device"]).startswith("cuda")):
        raise EvaluationError(f"eval.device={cfg['device']!r}; choose cpu, cuda or cuda:N (lmms-eval's models "
                              "run on these)")
    if int(cfg["num_processes"]) > 1 and not str(cfg["device"]).startswith("cuda") and cfg["model"] != "vllm":
        raise EvaluationError(f"eval.num_processes={cfg['num_processes']} needs device cuda: lmms-eval's "
                              f"{cfg['model']} runs one process on CPU")
    if cfg["model"] == "vllm" and not str(cfg["device"]).startswith("cuda"):
        raise EvaluationError("eval.model=vllm needs eval.device=cuda: vLLM is the GPU backend here; "
                              "the HF backend (eval.model=qwen2_5_vl) is the CPU path")
    return cfg


def tensor_parallel(cfg: Mapping) -> int:
    """GPUs per vLLM replica (extra_model_args.tensor_parallel_size, lmms-eval's own argument)."""
    return int((cfg.get("extra_model_args") or {}).get("tensor_parallel_size", 1))


def processes(cfg: Mapping) -> int:
    """Processes to launch. vLLM in lmms-eval 0.7.3: data parallelism needs one launched process
    per GPU (tensor x data parallel, its external_launcher mode); tensor parallelism alone runs
    in one process that starts its own workers."""
    n = int(cfg["num_processes"])
    return n * tensor_parallel(cfg) if cfg["model"] == "vllm" and n > 1 else n


def model_location(model_dir: Path | str) -> str:
    """An absolute local folder, or a hub id (e.g. Qwen/Qwen2.5-VL-3B-Instruct for the calibration row)."""
    p = Path(model_dir)
    if not p.exists() and not p.is_absolute() and _HUB_ID.match(str(model_dir)):
        return str(model_dir)
    return str(p.resolve())


def model_args(model_dir: Path | str, pixels: Mapping, cfg: Mapping, system_prompt: str | None = None) -> str:
    """lmms-eval's --model_args: the backbone's pixel budget and system prompt, shared with training,
    plus extra_model_args. system_prompt None leaves lmms-eval's default ("You are a helpful assistant.")."""
    where = model_location(model_dir)
    if "," in where:
        raise EvaluationError(f"model path {where} contains a comma, which lmms-eval's --model_args cannot carry")
    if cfg["model"] == "vllm":
        # Images are resized by vLLM's own Qwen2.5-VL processor: the pixel budget goes to it as
        # mm_processor_kwargs (lmms-eval parses a {...} value as JSON); lmms-eval's max_pixels is
        # for video frames, its min_image_pixels a minimum side in pixels, not an area.
        budget = {"min_pixels": int(pixels["min_pixels"]), "max_pixels": int(pixels["max_pixels"])}
        args = {"model": where, "tensor_parallel_size": tensor_parallel(cfg),
                "data_parallel_size": int(cfg["num_processes"]), "max_pixels": int(pixels["max_pixels"]),
                "mm_processor_kwargs": json.dumps(budget, separators=(",", ":"))}
    else:
        device = str(cfg["device"])
        args = {"pretrained": where, "device": device, "device_map": device,
                "min_pixels": int(pixels["min_pixels"]), "max_pixels": int(pixels["max_pixels"])}
        if system_prompt is not None:
            # lmms-eval's qwen2_5_vl/qwen3_vl put this in a system turn before every question: it must
            # be the training template's (an empty one renders as none with the model's chat template).
            if "," in system_prompt:
                raise EvaluationError(f"backbone.system_prompt {system_prompt!r} contains a comma, which "
                                      "lmms-eval's --model_args cannot carry")
            args["system_prompt"] = system_prompt
    args.update(dict(cfg.get("extra_model_args") or {}))
    return ",".join(f"{k}={v}" for k, v in args.items())


def build_command(model_dir: Path, out_dir: Path, *, benchmarks: Mapping, pixels: Mapping,
                  eval_cfg: Mapping, system_prompt: str | None = None,
                  environ: Mapping[str, str] | None = None) -> tuple[list[str], dict]:
    """The exact lmms-eval argv and the extra environment; judge tasks without a key are left out.

    An empty argv means there is nothing to run (every task is a judge task without a key)."""
    cfg = eval_settings(eval_cfg)
    runnable, _ = split_judge(task_entries(benchmarks), env=environ)
    # Each launched process gets its share of the cores (stagekit/threads.py): N processes with a
    # machine-wide pool each would take turns on the same cores.
    env = {**BASE_ENV, **(OFFLINE_ENV if cfg["offline"] else {}), **thread_env(threads_per_process(processes(cfg)))}
    if not runnable:
        return [], env
    out_dir = Path(out_dir).resolve()
    lmms = ["-m", "lmms_eval", "eval",
            "--model", str(cfg["model"]),
            "--model_args", model_args(model_dir, pixels, cfg, system_prompt),
            "--tasks", ",".join(lmms_task_name(e) for e in runnable),
            "--batch_size", str(cfg["batch_size"]),
            "--output_path", str(out_dir / "lmms_eval"),
            "--log_samples"]
    if cfg["model"] != "vllm":
        # lmms-eval 0.7.3 runs qwen2_5_vl/qwen3_vl as their "chat" classes unless told otherwise, and
        # those resize every image into qwen_vl_utils' defaults (4..16384 visual tokens), not into
        # min_pixels/max_pixels, and ignore system_prompt for Qwen2.5-VL; the simple classes apply
        # both to each image and prompt, so evaluation sees the budget and prompt training saw
        # (tests/test_train_eval_parity.py).
        lmms += ["--force_simple"]
    if any(e.get("local_data") for e in runnable):
        lmms += ["--include_path", str(out_dir / "tasks")]
    if cfg["limit"] is not None:
        lmms += ["--limit", str(cfg["limit"])]
    n = processes(cfg)
    if n > 1:
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n), *lmms], env
    return [sys.executable, *lmms], env
