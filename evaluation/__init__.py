"""Evaluation stage: lmms-eval (its CLI, as a subprocess) on one model folder.

    from evaluation import build_command, run_evaluation, prefetch, EvaluationError

    argv, env = build_command(model_dir, out_dir, benchmarks=..., pixels=..., eval_cfg=...)  # plan, ~ms
    run_evaluation(model_dir, out_dir, benchmarks=..., pixels=..., eval_cfg=..., meta=...)  # -> results.jsonl
    prefetch(benchmarks)                                                                    # online, once

Inputs
- model_dir: a complete model folder (weights + tokenizer + processor), or a hub id such as
  Qwen/Qwen2.5-VL-3B-Instruct for the stock calibration row (read from the HF cache offline).
- benchmarks: a set from configs/hydra/benchmarks/ (paper_table1, quick, embedded):
    {name, tasks: [{benchmark, task, metric, judge, [filter], [scale], [local_data], [prefetch]}]}
  benchmark: the paper's column name; task / metric / filter: lmms-eval's task name and the
  "<metric>,<filter>" key of its results JSON (filter defaults to "none"); scale: factor to the
  paper's 0-100 scale (default 100: lmms-eval means of 0/1 scores; 1 where lmms-eval already
  reports percent); judge: needs an LLM judge; local_data: absolute path of a local data file,
  for a task of ours (its YAML lives in evaluation/lmms_tasks/<task>/) or for an installed
  lmms-eval task, which then runs as <task>_local from a thin YAML that includes the installed one
  and changes only the data source (evaluation/local_tasks.py; the file must have every column
  the task's code reads); local_hub: [{path, name, split, data}], hub datasets the task's code
  loads by name (GQA's images) served from local files; prefetch: extra HF datasets the task's
  code loads, as [{path, name}] (load_dataset calls with literal names are also found in the code).
- pixels: {min_pixels, max_pixels}, the pixel budget shared with training (cfg.pixels).
- eval_cfg (configs/hydra/eval/):
    batch_size: 1          scores move with batch size, so 1 unless you know better
    limit: null            --limit (an int, or a fraction) for smoke runs
    model: qwen2_5_vl      lmms-eval model backend (the backbone's eval_model: qwen2_5_vl, qwen3_vl); "vllm" for vLLM
    device: cpu            cpu | cuda
    num_processes: 1       >1 on CUDA: `accelerate launch --num_processes N -m lmms_eval ...`;
                           with model=vllm: N data-parallel replicas, N x tensor_parallel_size
                           launched processes (eval=vllm, configs/hydra/eval/vllm.yaml)
    extra_model_args: {}   appended to --model_args (e.g. {attn_implementation: sdpa})
    offline: true          (optional) HF_HUB_OFFLINE / HF_DATASETS_OFFLINE / TRANSFORMERS_OFFLINE
- meta: {run, backbone, caption_source}, the paper's labels for the records.

Judge tasks (MathVista, MMBench, MMVet) are judged by the `judge` config (evaluation/judge.py:
base_url, served model, weights, api_key_env), which sets the variables lmms-eval reads per task;
with judge=none, by what the environment names (OPENAI_API_KEY, API_TYPE=local + LLM_JUDGE_URL,
...; without a key they are n/a, never 0). A judge that does not answer, before or after its task
ran, makes the task n/a with the reason. The key is only ever inherited from the environment;
secrets are masked in the log.

Outputs under out_dir: tasks/ (local lmms-eval tasks, checked up front), by_task/<task>/ (one
lmms-eval run per task: its tasks/, lmms_eval/ results JSON and per-sample logs, lmms_eval.log,
and score.json once it has a score), and results.jsonl with one record per benchmark:
    {run, backbone, caption_source, benchmark, task, metric, value (0-100 or null), n,
     status ("ok" | "n/a"), reason, lmms_eval_version, model_args, timestamp (ISO 8601 UTC),
     judge (null, or {name, model, weights, base_url} for a judged task), samples (per-sample log)}
Before lmms-eval starts, every task's code is checked for modules this environment lacks (one
failing import ends the whole lmms-eval run). lmms-eval exits 0 even when the model fails to load, so the stage fails (EvaluationError, with
the tail of lmms-eval's log) unless its results file has every requested task and metric.
"""

from evaluation.benchmarks import EvaluationError, prefetch
from evaluation.command import build_command
from evaluation.stage import run_evaluation

__all__ = ["EvaluationError", "build_command", "prefetch", "run_evaluation"]
