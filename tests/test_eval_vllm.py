"""lmms-eval's vLLM backend as an evaluation option (eval=vllm): the command it renders, with the
run's pixel budget and tensor x data parallelism, shown by `plan`. No vLLM here (no GPU): the
model arguments are checked against lmms-eval 0.7.3's own argument parser and vLLM model class
signature, which is what a GPU run would call.
Run: .venv/bin/python -m pytest tests/test_eval_vllm.py -q"""

from __future__ import annotations

import inspect
import sys

import pytest

from evaluation import EvaluationError, build_command
from harness.config import compose_config, to_plain
from tests.test_evaluate import CPU, PIXELS, load_set

VLLM = {**CPU, "model": "vllm", "device": "cuda", "extra_model_args": {"tensor_parallel_size": 2}}


def model_args_of(argv: list[str]) -> dict:
    from lmms_eval.utils import simple_parse_args_string

    return simple_parse_args_string(argv[argv.index("--model_args") + 1])


def test_vllm_gets_the_pixel_budget_and_parallelism(tmp_path):
    argv, _ = build_command(tmp_path / "m", tmp_path, benchmarks=load_set("quick"), pixels=PIXELS,
                            eval_cfg={**VLLM, "num_processes": 4})
    # 4 replicas x 2 GPUs each: lmms-eval's vLLM wants one launched process per GPU for data parallelism
    assert argv[:5] == [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "8"]
    args = model_args_of(argv)
    assert args["model"] == str((tmp_path / "m").resolve())
    assert (args["tensor_parallel_size"], args["data_parallel_size"]) == (2, 4)
    assert args["mm_processor_kwargs"] == '{"min_pixels":3136,"max_pixels":12544}'   # JSON, parsed by the model


def test_tensor_parallel_alone_is_one_process(tmp_path):
    argv, _ = build_command(tmp_path, tmp_path, benchmarks=load_set("quick"), pixels=PIXELS, eval_cfg=VLLM)
    assert argv[:3] == [sys.executable, "-m", "lmms_eval"]


def test_vllm_model_class_takes_every_argument(tmp_path):
    from lmms_eval.models.simple.vllm import VLLM as SimpleVLLM

    argv, _ = build_command(tmp_path, tmp_path, benchmarks=load_set("quick"), pixels=PIXELS, eval_cfg=VLLM)
    named = set(inspect.signature(SimpleVLLM.__init__).parameters) | {"max_pixels"}   # chat class adds max_pixels
    # what the class does not name goes to vllm.LLM(**kwargs): mm_processor_kwargs is an LLM argument
    assert set(model_args_of(argv)) - named == {"mm_processor_kwargs"}


def test_vllm_on_cpu_is_refused_with_the_cpu_path_named(tmp_path):
    with pytest.raises(EvaluationError, match="qwen2_5_vl"):
        build_command(tmp_path, tmp_path, benchmarks=load_set("quick"), pixels=PIXELS,
                      eval_cfg={**VLLM, "device": "cpu"})


def test_plan_shows_the_vllm_command(results_dir):
    from harness.plan import render_plan

    text = render_plan(to_plain(compose_config(["experiment=caprl2m", "eval=vllm"])))
    line = next(x for x in text.splitlines() if "lmms_eval" in x)
    assert "--model vllm" in line and "mm_processor_kwargs" in line and "--num_processes 8" in line
