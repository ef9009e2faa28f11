"""Checks of the training recipe on a resolved run config, before any work: what would otherwise
stop the train stage hours after data_prep. Pure (no files, no torch); the harness calls
`check_recipe` (through train/stage.py `problems`) for every job of a (multi)run, and `plan` shows the same problems."""

from __future__ import annotations

from typing import Mapping

from data_prep.stage import ROLES
from train.batch import batch_problem
from train.launch import world_size
from train.recipe import LF_IMAGE_PIXELS, STAGES, packs, runs_stage
from train.trainable import flag_problem


def check_recipe(cfg: Mapping) -> list[str]:
    """Every problem of the training stages this run would execute, each naming its config key;
    [] when the recipe can run."""
    problems = []
    common, world = cfg["train"]["common"], world_size(cfg["launcher"])
    problems += extra_problems(common.get("extra") or {})
    for name in STAGES:
        if not runs_stage(cfg, name):
            continue   # vanilla: the stage does not run
        spec = cfg["train"]["stages"][name]
        if spec["data"] not in ROLES:
            problems.append(f"train.stages.{name}.data={spec['data']!r}; choose one of {list(ROLES)}")
        batch = batch_problem(int(spec["global_batch_size"]), int(common["per_device_train_batch_size"]), world, name)
        problems += [p for p in (flag_problem(spec, name), batch, packing_problem(spec, common, name)) if p]
    return problems


def extra_problems(extra: Mapping) -> list[str]:
    """train.common.extra passes LLaMA-Factory keys through verbatim, except those the harness sets
    for a reason a user's value would undo: LLaMA-Factory's own pixel bounds would resize images a
    second time before the processor, so training would see other visual tokens than evaluation
    and data_prep's counts (train/recipe.py LF_IMAGE_PIXELS); the budget is the backbone's."""
    return [f"train.common.extra.{k}: set by the harness (LLaMA-Factory's own resize is kept off so that training "
            "and evaluation resize images alike); set the backbone's pixels.min_pixels / pixels.max_pixels instead"
            for k in sorted(set(extra) & set(LF_IMAGE_PIXELS))]


def packing_problem(spec: Mapping, common: Mapping, stage: str) -> str | None:
    """LLaMA-Factory's neat packing under flash attention (what a GPU run uses) takes one packed
    row per device batch and stops with an assertion otherwise, after tokenizing."""
    per_device = int(common["per_device_train_batch_size"])
    if not packs({"stage": spec, "common": common}) or per_device == 1:
        return None
    return (f"train.stages.{stage}: packing needs train.common.per_device_train_batch_size=1 (got {per_device}); "
            f"a packed row already holds up to cutoff_len tokens: raise cutoff_len for more tokens per row")
