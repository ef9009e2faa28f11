"""The keys of the eval, benchmarks and judge groups. `extra_model_args` passes through to lmms-eval's
model arguments, and each task entry is checked by evaluation/benchmarks.py."""

from evaluation.command import EVAL_DEFAULTS
from evaluation.judge import JUDGE_KEYS
from stagekit.schema import ANY, keys

SCHEMA = {"eval": keys(*EVAL_DEFAULTS, "reference_model", extra_model_args=ANY),
          "benchmarks": keys("name", "tasks"),
          "judge": keys(*JUDGE_KEYS)}
