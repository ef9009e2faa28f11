"""What `plan` prints for a training stage (the train kind's `describe` and `plan_total` hooks):
the freeze flags, batch arithmetic and exact launch command per node, from train/stage.py's own
`render` (a dry run), and the cost estimate (train/cost.py). Imports nothing heavy at load."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Sequence

from init_vlm.view import view_line
from stagekit import shell_line
from stagekit.plan import PlanView
from train.cost import cost_line, stage_cost, total_line


def describe(view: PlanView) -> list[str]:
    est = stage_cost(view.name, view.config, view.inputs["data"], view.run_cfg)
    cost = [cost_line(est, view.run_cfg["cost"]), *efficiency_lines(est, view.config),
            *measured_lines(view.out_dir, view.config, view.redo)]
    return [view_line(view.run_cfg), *details(view, cost)]


def plan_total(views: Sequence[PlanView]) -> list[str]:
    """The bill of all training stages of the run, on the run's GPUs."""
    from train.launch import world_size

    cfg = views[0].run_cfg
    costs = [stage_cost(v.name, v.config, v.inputs["data"], cfg) for v in views]
    return [total_line(costs, cfg["cost"], world_size(cfg["launcher"]))]


def measured_lines(folder: Path, config: dict, reason: str | None) -> list[str]:
    """For a stage in progress (or killed part-way), what it measured beats what the cost model
    assumes: its own samples/s and ETA from LLaMA-Factory's trainer log."""
    from train.stage import progress

    info = progress(folder, config) if reason is not None else None
    if not info:
        return []
    rate = f"{info['samples_per_s']} samples/s measured" if info.get("samples_per_s") else "no rate yet"
    return [f"in progress: step {info['step']}/{info['total']}, {rate}, ETA {info.get('eta') or 'unknown'}"]


def efficiency_lines(est, config: dict) -> list[str]:
    """Padding and packing, per sample, from the data's length histogram (train/efficiency.py)."""
    eff = est.tokens.efficiency if est.tokens is not None else None
    if eff is None:
        return []
    from train.efficiency import summary

    return [summary(eff, int(config["common"]["per_device_train_batch_size"]))]


def details(view: PlanView, cost: list[str]) -> list[str]:
    """What the run would write and launch, from train/stage.py's own `render` (a dry run)."""
    from stagekit import StageLog, StageRun
    from train.batch import BatchError
    from train.launch import SLURM_MASTER_EXPR, all_node_envs, world_size
    from train.render import FREEZE_KEYS, packs
    from train.stage import render

    config, spec = view.config, view.config["stage"]
    flags = (f"dataset: {view.settings['dataset']}  trainable: {spec['trainable']}  "
             + "  ".join(f"{k}={spec[k]}" for k in FREEZE_KEYS)
             + f"  packing: {'neat' if packs(config) else 'off'}")
    job = StageRun(name=view.name, out_dir=view.out_dir, inputs=dict(view.inputs), config=config,
                   log=StageLog(view.name, Path("/dev/null"), echo=False), settings=view.settings)
    try:
        r = render(job, tokenized_path=None, resolve_master=False)
    except BatchError as exc:   # shown, not raised: the rest of the plan is still worth reading
        return [flags, f"cannot render llamafactory.yaml: {exc}", *cost]
    world = world_size(config["world_size"])
    lines = [
        flags,
        f"learning_rate: {r.lf['learning_rate']:g}  global batch: {spec['global_batch_size']} = "
        f"{r.lf['per_device_train_batch_size']} per device x {world} processes x {r.lf['gradient_accumulation_steps']} "
        f"accumulation  deepspeed: {config['deepspeed']['name']}",
        *cost,
    ]
    # master_addr=auto is resolved by SLURM on the node; plan shows the expression the node evaluates.
    envs = all_node_envs(view.settings["launcher"], deepspeed=r.deepspeed_json is not None, resolve=False)
    for rank, env in enumerate(envs):
        prefix = f"node {rank}: " if len(envs) > 1 else "command: "
        line = shell_line(r.argv, env)
        lines.append(prefix + line.replace(shlex.quote(SLURM_MASTER_EXPR), f'"{SLURM_MASTER_EXPR}"'))
    return lines
