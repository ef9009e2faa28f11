"""`python -m harness plan`: the chain a run would execute, without executing it.

For every stage: whether it is already done (by fingerprint, in the store), where its output
lives, what it reads, its key settings, and the exact external commands (per node for
multi-node training). Imports nothing heavy (no torch), so it answers in about a second."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Mapping

from harness.chain import build_chain, resolve_world, run_label
from harness.cost import cost_line, stage_cost, total_line
from harness.runner import why_redo
from harness.stage import Stage, chain_fingerprints
from harness.store import Store
from stagekit import shell_line


def render_plan(cfg: Mapping) -> str:
    chain = build_chain(cfg)
    fps = chain_fingerprints(chain)
    store = Store(Path(cfg["paths"]["store_dir"]))
    dirs = {s.name: store.dir_for(s.kind, fps[s.name]) for s in chain}
    world = str(dirs["world"]) if "world" in dirs else None
    lines = [f"run {run_label(cfg)}  (store: {store.root})", ""]
    costs = []
    for i, stage in enumerate(chain, 1):
        reason = why_redo(store, stage, fps, dirs)
        state = "done" if reason is None else "to do" if reason == "not done" else f"to redo: {reason}"
        lines.append(f"{i}. {stage.name} [{state}]  {stage.summary}")
        lines.append(f"   output: {dirs[stage.name]}")
        if stage.inputs:
            lines.append("   inputs: " + ", ".join(f"{r} <- {n}" for r, n in stage.inputs.items()))
        config = resolve_world(dict(stage.config), world)
        cost = None
        if stage.kind == "train":
            costs.append(stage_cost(stage.name, config, dirs[stage.inputs["data"]], cfg))
            cost = [cost_line(costs[-1], cfg["cost"]), *efficiency_lines(costs[-1], config),
                    *measured_lines(dirs[stage.name], config, reason)]
        lines += [f"   {line}" for line in _details(stage, config, dirs, cfg, cost)]
        lines.append("")
    if costs:
        from train.launch import world_size

        lines.append(total_line(costs, cfg["cost"], world_size(cfg["launcher"])))
    return "\n".join(lines)


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


def _details(stage: Stage, config: dict, dirs: dict[str, Path], cfg: Mapping, cost: list[str] | None) -> list[str]:
    if stage.kind == "data_prep":
        src = config["source"]
        return [f"reads: {', '.join(map(str, src['paths']))} (images under {src['image_root']})",
                f"subset: {src.get('subset_size') or 'all rows'}; cutoff_len {config['cutoff_len']}"]
    if stage.kind == "train":
        return [view_line(cfg), *_train_details(stage, config, dirs, cfg, cost)]
    if stage.kind in ("recaption", "prism"):
        from recaption.cost import describe_cost

        return describe_cost(stage, config, dirs, cfg)
    if stage.kind == "evaluate":
        model = config["model"] if "model" in config else dirs[stage.inputs["model"]] / "model"
        return [view_line(cfg), *_eval_details(config, dirs[stage.name], model)]
    return []


def view_line(cfg: Mapping) -> str:
    """How the model sees an image and a prompt, the backbone's (shared by training and evaluation):
    the template, the patch size and the pixel budget, also in visual tokens (2x2 patches each)."""
    bb, px = cfg["backbone"], cfg["pixels"]
    unit = int(bb["patch_size"]) * 2
    lo, hi = int(px["min_pixels"]), int(px["max_pixels"])
    system = bb.get("system_prompt")
    return (f"view: template {bb['template']} / lmms-eval {bb['eval_model']}, patch {bb['patch_size']} px "
            f"({unit} px per visual token), pixels {lo}..{hi} = {-(-lo // unit**2)}..{hi // unit**2} visual tokens, "
            f"system prompt {system!r}" + (" (no system turn)" if system == "" else ""))


def _train_details(stage: Stage, config: dict, dirs: dict[str, Path], cfg: Mapping, cost: list[str]) -> list[str]:
    """What the run would write and launch, from train/stage.py's own `render` (a dry run)."""
    from stagekit import StageLog, StageRun
    from train.batch import BatchError
    from train.launch import SLURM_MASTER_EXPR, all_node_envs, world_size
    from train.render import FREEZE_KEYS, packs
    from train.stage import render

    out, spec = dirs[stage.name], config["stage"]
    flags = (f"dataset: {stage.settings['dataset']}  trainable: {spec['trainable']}  "
             + "  ".join(f"{k}={spec[k]}" for k in FREEZE_KEYS)
             + f"  packing: {'neat' if packs(config) else 'off'}")
    job = StageRun(name=stage.name, out_dir=out, inputs={r: dirs[n] for r, n in stage.inputs.items()},
                   config=config, log=StageLog(stage.name, Path("/dev/null"), echo=False), settings=stage.settings)
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
    envs = all_node_envs(stage.settings["launcher"], deepspeed=r.deepspeed_json is not None, resolve=False)
    for rank, env in enumerate(envs):
        prefix = f"node {rank}: " if len(envs) > 1 else "command: "
        line = shell_line(r.argv, env)
        lines.append(prefix + line.replace(shlex.quote(SLURM_MASTER_EXPR), f'"{SLURM_MASTER_EXPR}"'))
    return lines


def _eval_details(config: dict, out: Path, model) -> list[str]:
    from evaluation import build_command

    argv, env = build_command(model, out, benchmarks=config["benchmarks"],
                              pixels=config["pixels"], eval_cfg=config["eval"],
                              system_prompt=config.get("system_prompt"))
    return [f"command: {shell_line(argv, env)}"]
