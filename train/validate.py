"""Checks of the training recipe on a resolved run config, before any work: what would otherwise
stop the train stage hours after data_prep. Pure (no files, no torch); harness validation calls
`check_recipe` for every job of a (multi)run, and `plan` shows the same problems."""

from __future__ import annotations

from typing import Mapping

from harness.chain import DATA_ROLES, TRAIN_STAGES, has_further_pretraining
from train.batch import batch_problem
from train.launch import world_size
from train.trainable import flag_problem


def check_recipe(cfg: Mapping) -> list[str]:
    """Every problem of the training stages this run would execute, each naming its config key;
    [] when the recipe can run."""
    problems = []
    common, world = cfg["train"]["common"], world_size(cfg["launcher"])
    for name in TRAIN_STAGES:
        if name == "further_pretrain" and not has_further_pretraining(cfg):
            continue   # vanilla: the stage does not run
        spec = cfg["train"]["stages"][name]
        if spec["data"] not in DATA_ROLES:
            problems.append(f"train.stages.{name}.data={spec['data']!r}; choose one of {list(DATA_ROLES)}")
        batch = batch_problem(int(spec["global_batch_size"]), int(common["per_device_train_batch_size"]), world, name)
        problems += [p for p in (flag_problem(spec, name), batch) if p]
    return problems
