"""The lmms-eval command line and its environment, built without running or importing anything heavy."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Mapping

from evaluation.benchmarks import EvaluationError, lmms_task_name, split_judge, task_entries

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
    return cfg


def model_location(model_dir: Path | str) -> str:
    """An absolute local folder, or a hub id (e.g. Qwen/Qwen2.5-VL-3B-Instruct for the calibration row)."""
    p = Path(model_dir)
    if not p.exists() and not p.is_absolute() and _HUB_ID.match(str(model_dir)):
        return str(model_dir)
    return str(p.resolve())


def model_args(model_dir: Path | str, pixels: Mapping, cfg: Mapping) -> str:
    """lmms-eval's --model_args: the one pixel budget shared with training, plus extra_model_args."""
    where = model_location(model_dir)
    if "," in where:
        raise EvaluationError(f"model path {where} contains a comma, which lmms-eval's --model_args cannot carry")
    if cfg["model"] == "vllm":
        # vLLM spreads data-parallel replicas itself; its min_image_pixels means something else.
        args = {"model": where, "data_parallel_size": int(cfg["num_processes"]),
                "max_pixels": int(pixels["max_pixels"])}
    else:
        device = str(cfg["device"])
        args = {"pretrained": where, "device": device, "device_map": device,
                "min_pixels": int(pixels["min_pixels"]), "max_pixels": int(pixels["max_pixels"])}
    args.update(dict(cfg.get("extra_model_args") or {}))
    return ",".join(f"{k}={v}" for k, v in args.items())


def build_command(model_dir: Path, out_dir: Path, *, benchmarks: Mapping, pixels: Mapping,
                  eval_cfg: Mapping) -> tuple[list[str], dict]:
    """The exact lmms-eval argv and the extra environment; judge tasks without a key are left out.

    An empty argv means there is nothing to run (every task is a judge task without a key)."""
    cfg = eval_settings(eval_cfg)
    runnable, _ = split_judge(task_entries(benchmarks))
    env = {**BASE_ENV, **(OFFLINE_ENV if cfg["offline"] else {})}
    if not runnable:
        return [], env
    out_dir = Path(out_dir).resolve()
    lmms = ["-m", "lmms_eval", "eval",
            "--model", str(cfg["model"]),
            "--model_args", model_args(model_dir, pixels, cfg),
            "--tasks", ",".join(lmms_task_name(e) for e in runnable),
            "--batch_size", str(cfg["batch_size"]),
            "--output_path", str(out_dir / "lmms_eval"),
            "--log_samples"]
    if any(e.get("local_data") for e in runnable):
        lmms += ["--include_path", str(out_dir / "tasks")]
    if cfg["limit"] is not None:
        lmms += ["--limit", str(cfg["limit"])]
    n = int(cfg["num_processes"])
    if n > 1 and cfg["model"] != "vllm":
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n), *lmms], env
    return [sys.executable, *lmms], env
