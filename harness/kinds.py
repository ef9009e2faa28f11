"""The stage kinds, in the order the chain runs them. Each is one module of its own package that
owns its slice of the run config:

    KIND, VERSION                   its name; bump VERSION when its code changes what it writes
    stages(cfg, upstream) -> [..]   its stages in this run: name, config (what decides the output,
                                    fingerprinted), settings (run-only), inputs, resumable, summary,
                                    every_node (multi-node: nodes > 0 run it too, for their share)
    problems(cfg) -> [str]          (optional) what in the run config it cannot run, key named
    preflight(cfg) -> [str]         (optional) what it will read that is not there (files, servers),
                                    checked by `run` and `plan` before stage 1, each naming the fix
    run(StageRun) -> dict           does the work in explicit folders (stagekit.StageRun)
    describe(PlanView) -> [str]     (optional) what `plan` prints for one of its stages (settings,
                                    exact commands, cost); stagekit.plan.PlanView
    plan_total([PlanView]) -> [str] (optional) `plan`'s closing lines over its stages (training's bill)
    progress(folder, config)        (optional) a running stage's progress, for the console and status
    CONFIG_DEFAULTS                 (optional) {name: node}: Python-held defaults the YAMLs use as
                                    base configs (`- /name@_here_`), so no value is written twice
    PIPELINES                       (optional) the pipelines it runs in; default ("pretrain",)

Adding a stage kind: one module, one config group, one line here; the harness calls the hooks and
branches on no kind (tests/test_kind_hooks.py). Importing these modules loads
nothing heavy (no torch): `plan` and validation import them all."""

from __future__ import annotations

from data_prep import stage as data_prep
from embedded import stage as world
from evaluation import stage as evaluate
from init_vlm import stage as init_vlm
from prism import stage as prism
from recaption import stage as recaption
from report import stage as report
from train import stage as train
from train import tokenize_stage as tokenize

CHAIN_ORDER = (world, init_vlm, data_prep, recaption, tokenize, train, evaluate, prism, report)
KINDS = {k.KIND: k for k in CHAIN_ORDER}
