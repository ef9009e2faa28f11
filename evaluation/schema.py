"""The keys of the eval and benchmarks groups. `extra_model_args` passes through to lmms-eval's
model arguments, and each task entry is checked by evaluation/benchmarks.py."""

from evaluation.command import EVAL_DEFAULTS
from stagekit.schema import ANY, keys

SCHEMA = {"eval": keys(*EVAL_DEFAULTS, "reference_model", extra_model_args=ANY),
          "benchmarks": keys("name", "tasks")}
