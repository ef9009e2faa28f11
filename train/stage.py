"""The `train` stage kind: alignment, further pretraining (the caption source under test; not
for vanilla) and SFT, each through LLaMA-Factory.

    input model folder + prepared dataset -> llamafactory.yaml -> `llamafactory-cli train`
    -> <stage>/model, a complete model folder (weights, config, tokenizer, processor, template)

What decides a stage's weights: its recipe slice (data, LR, global batch, what trains), the
common training settings except RUN_ONLY_KEYS, DeepSpeed, the world size (not addresses or
ranks), pixels and seed. Run-only: logging and retention settings and the launcher's addresses
and ranks, so changing them after a crash resumes the stage instead of restarting a multi-day run.

A killed stage resumes from its last complete checkpoint (LLaMA-Factory itself, with
overwrite_output_dir false); incomplete checkpoints are set aside first, and the weights of the one
resumed are given the model's parameter names (train/resume_layout.py: transformers 5's Trainer
would otherwise resume a Qwen2.5-VL from the stage's input weights). `render` is the one
place the stage's files and command are made: `run` writes and launches them, `plan` prints them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import tracking
from stagekit import CommandFailed, StageRun, run_identity, run_logged
from train import checkpoints, resume_layout, tokenize_stage, trainable
from train.launch import LAUNCH_DEFAULTS, node_env, node_rank, node_timeout, train_command
from train.plan import describe, plan_total  # noqa: F401  (the kind's plan hooks)
from train.recipe import STAGES, runs_stage
from train.render import render_lf_config

KIND = "train"
# 2: a Qwen3-VL projector stage trains the DeepStack mergers whole, LayerNorms included (train/lf_train.py)
VERSION = 2
# Python-held defaults offered to the YAMLs: the nodes' time-outs (every launcher YAML) and what
# each `trainable` value freezes (the recipe's `- /trainable_freezes@freezes`).
CONFIG_DEFAULTS = {"launcher_defaults": dict(LAUNCH_DEFAULTS),
                   "trainable_freezes": {k: dict(zip(("vision_tower", "multi_modal_projector", "language_model"), v))
                                         for k, v in trainable.TRAINABLE.items()}}
# Settings of train.common that change neither the trained weights nor where checkpoints are
# (save_steps does: it is not here).
RUN_ONLY_KEYS = ("save_total_limit", "logging_steps", "preprocessing_num_workers", "dataloader_num_workers",
                 "pretokenize")
# Files that make a model folder loadable by lmms-eval and the next stage: LLaMA-Factory does not
# always save all of them, and a folder without its processor cannot be evaluated.
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "tokenizer.json",
                   "tokenizer_config.json", "chat_template.jinja", "chat_template.json", "processor_config.json",
                   "special_tokens_map.json", "generation_config.json")


# ---------------------------------------------------------------- the stages of a run

def stages(cfg: Mapping, upstream: list[dict]) -> list[dict]:
    out, prev = [], "init_vlm"
    common, launcher = cfg["train"]["common"], cfg["launcher"]
    for name in STAGES:
        if not runs_stage(cfg, name):
            continue
        spec = dict(cfg["train"]["stages"][name])
        config = {
            "name": name,
            "stage": spec,
            "common": {k: v for k, v in common.items() if k not in RUN_ONLY_KEYS and not _off_packing(k, v)},
            "deepspeed": cfg["deepspeed"],
            "world_size": {"nnodes": int(launcher["nnodes"]), "nproc_per_node": int(launcher["nproc_per_node"])},
            "pixels": dict(cfg["pixels"]),
            "seed": cfg["seed"],
        }
        settings = {"common": {k: common[k] for k in RUN_ONLY_KEYS if k in common}, "launcher": dict(launcher),
                    "dataset": cfg[spec["data"]]["name"], "tracker": dict(cfg.get("tracker") or {"name": "none"}),
                    "identity": run_identity(cfg)}
        inputs = {"model": prev, "data": f"data_prep.{spec['data']}"}
        if int(common.get("pretokenize") or 0) > 0:   # tokenized before any GPU job (train/tokenize_stage.py)
            inputs["tokenized"] = f"tokenize.{name}"
        out.append({"name": f"train.{name}", "config": config, "settings": settings, "resumable": True,
                    # the same rows, tokenized with the same keys (train/recipe.py data_keys), as
                    # LLaMA-Factory would make them itself: pretokenizing changes no trained weight
                    "inputs": inputs, "run_only_inputs": ("tokenized",), "every_node": True,   # every node runs its torchrun ranks
                    "summary": f"{cfg[spec['data']]['label']}, trains {spec['trainable']}, "
                               f"lr {spec['learning_rate']:g}, global batch {spec['global_batch_size']}"})
        prev = f"train.{name}"
    return out


def _off_packing(key: str, value) -> bool:
    # `packing: false` is how every stage trained before the switch existed: leaving it out of the
    # fingerprint keeps those stages done instead of retraining them for a no-op key
    return key == "packing" and not value


def problems(cfg: Mapping) -> list[str]:
    from train.validate import check_recipe

    return check_recipe(cfg)


# ---------------------------------------------------------------- render (run and plan)

@dataclass
class Rendered:
    lf: dict                     # the LLaMA-Factory YAML
    yaml_path: Path
    deepspeed_json: Path | None
    deepspeed: dict | None       # its content
    env: dict[str, str]          # this node's launch environment
    argv: list[str]


def render(job: StageRun, *, tokenized_path: Path | None, resolve_master: bool = True) -> Rendered:
    """The stage's files and command, computed, not written. resolve_master=False (plan, outside
    SLURM) leaves master_addr=auto as the shell expression the node evaluates."""
    cfg, out = job.config, job.out_dir
    config = {**cfg, "common": {**job.settings.get("common", {}), **cfg["common"]}}
    ds = cfg["deepspeed"]
    ds_json = out / f"deepspeed_{ds['name']}.json" if ds.get("config") is not None else None
    lf = render_lf_config(config=config, model_dir=job.inputs["model"] / "model", dataset_dir=job.inputs["data"],
                          dataset=job.settings["dataset"], output_dir=out / "model", tokenized_path=tokenized_path,
                          deepspeed_json=ds_json)
    tracker = job.settings.get("tracker") or {"name": "none"}
    lf.update(tracking.lf_keys(tracker, job.settings.get("identity"), job.name))
    launcher = job.settings["launcher"]
    env = node_env(launcher, deepspeed=ds_json is not None, resolve=resolve_master)
    if env:
        # Bounded waiting between ranks (joining, every collective): a lost node fails the stage
        # after this long instead of hanging the others (run-only: not in the fingerprint).
        lf["ddp_timeout"] = node_timeout(launcher)
    env = {**env, **tracking.tracker_env(tracker, job.settings.get("identity"), job.name)}
    yaml_path = out / "llamafactory.yaml"
    argv = train_command(yaml_path, projector_parts=trainable.moves_projector_parts(lf["model_name_or_path"],
                                                                                   lf.get("template", "")))
    return Rendered(lf, yaml_path, ds_json, ds.get("config"), env, argv)


def write_stage_files(r: Rendered) -> None:
    import yaml

    if r.deepspeed_json is not None:
        r.deepspeed_json.write_text(json.dumps(r.deepspeed, indent=2) + "\n")
    r.yaml_path.write_text(yaml.safe_dump(r.lf, sort_keys=False))


# ---------------------------------------------------------------- run

def tokenized_cache(cache_dir: Path, data_fingerprint: str, model_dir: Path, config: Mapping) -> Path:
    """The shared tokenized dataset of this data, model processor and settings (train/tokenized.py)."""
    from train.tokenized import cache_key

    processor = {name: (model_dir / name).read_bytes() for name in PROCESSOR_FILES if (model_dir / name).exists()}
    return cache_dir / cache_key(data_fingerprint, config, processor)


def tool_env(extra: dict[str, str]) -> dict[str, str]:
    # torchrun is started by name; make this interpreter's environment the one found first.
    bin_dir = str(Path(sys.executable).parent)
    return {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), **extra}


def run(job: StageRun) -> dict:
    from train.tokenized import TokenizedCache

    cfg = job.config
    trainable.check_flags(cfg["stage"], cfg["name"])
    model_dir = job.inputs["model"] / "model"
    pretokenized = "tokenized" in job.inputs
    tok = (tokenize_stage.dataset_dir(job.inputs["tokenized"]) if pretokenized
           else tokenized_cache(job.cache_dir, job.input_fingerprints["data"], model_dir, cfg))
    rendered = render(job, tokenized_path=tok)
    write_stage_files(rendered)
    out_model = job.out_dir / "model"
    out_model.mkdir(exist_ok=True)
    # Node rank > 0 trains too, but the shared folders (checkpoints, tokenized cache, model files)
    # are node 0's to change.
    lead = node_rank(job.settings["launcher"]) == 0
    if lead:
        checkpoints.set_aside_incomplete(out_model, log=job.log)
    resume = checkpoints.last_complete(out_model)
    job.log(f"resuming from {resume.name}" if resume else "starting from step 0")
    if resume and lead:
        resume_layout.to_model_layout(resume, job.log)   # else the Trainer resumes the input weights
    count = trainable.CountCheck(trainable.expected_trainable(model_dir, cfg["stage"]), cfg["name"],
                                 cfg["stage"]["trainable"])
    cache = TokenizedCache(tok, job.log) if lead and not pretokenized else None
    with cache or contextlib.nullcontext():
        def on_line(line: str) -> None:
            count.on_line(line)
            if cache:
                cache.on_line(line)

        launch_nodes(job, rendered, on_line)
        if cache:
            cache.mark_complete()   # in case the "saved" line was not logged (LLAMAFACTORY_VERBOSITY)
    count.finish()
    if lead:
        copy_processor_files(model_dir, out_model, job.log)
    return {"trainable_params": count.expected, "resumed_from": resume.name if resume else None,
            **train_metrics(out_model)}


def launch_nodes(job: StageRun, rendered: Rendered, on_line) -> None:
    """Run this node's torchrun; in a multi-node job, beat a heartbeat meanwhile and, when it
    fails, say which node was lost (train/nodes.py)."""
    from train.nodes import Heartbeat, lost_message, lost_nodes

    launcher = job.settings["launcher"]
    nnodes, me = int(launcher["nnodes"]), node_rank(launcher)
    argv, env = rendered.argv, tool_env(rendered.env)
    if nnodes == 1:
        run_logged(argv, env=env, log_path=job.log.path, on_line=on_line, echo=job.log.echo)
        return
    interval = float(launcher["heartbeat_s"])
    beat = Heartbeat(job.out_dir, me, interval)
    try:
        with beat:
            run_logged(argv, env=env, log_path=job.log.path, on_line=on_line, echo=job.log.echo)
    except CommandFailed as exc:
        lost = lost_nodes(job.out_dir, me, nnodes, since=beat.started, interval=interval)
        if not lost:
            raise
        message = lost_message(lost, nnodes, node_timeout(launcher))
        job.log(message)
        raise CommandFailed(f"{message}\n{exc}") from exc


def copy_processor_files(src: Path, dst: Path, log) -> None:
    """Copy any processor file LLaMA-Factory did not save, so the folder is always complete."""
    for name in PROCESSOR_FILES:
        if (src / name).exists() and not (dst / name).exists():
            shutil.copy2(src / name, dst / name)
            log(f"copied missing {name} from the input model")


def train_metrics(out_model: Path) -> dict:
    path = out_model / "train_results.json"
    return json.loads(path.read_text()) if path.exists() else {}


# ---------------------------------------------------------------- progress (console, status, plan)

def progress(out_dir: Path, config: Mapping) -> dict | None:
    """How far a training stage is, from the trainer log LLaMA-Factory appends at every logging
    step (<output_dir>/trainer_log.jsonl): step, total, loss, samples/s and its own ETA. Readable
    from any process, so `status` sees a run going on in another terminal or node."""
    path = Path(out_dir) / "model" / "trainer_log.jsonl"
    try:
        lines = path.read_text().splitlines()
        last = json.loads(lines[-1])
    except (FileNotFoundError, IndexError, json.JSONDecodeError):
        return None
    step, total = int(last.get("current_steps", 0)), int(last.get("total_steps", 0))
    elapsed = _seconds(last.get("elapsed_time"))
    batch = int(config["stage"]["global_batch_size"])
    return {"step": step, "total": total, "loss": last.get("loss"), "eta": last.get("remaining_time"),
            "samples_per_s": round(step * batch / elapsed, 2) if elapsed else None,
            "text": f"step {step}/{total}" + (f", loss {last['loss']:.4g}" if last.get("loss") is not None else "")
                    + (f", {step * batch / elapsed:.1f} samples/s" if elapsed else "")
                    + (f", ETA {last['remaining_time']}" if last.get("remaining_time") else "")}


def _seconds(hms: str | None) -> float:
    """'1 day, 2:03:04' or '0:00:59' (Python's timedelta text) -> seconds."""
    if not hms:
        return 0.0
    days = 0
    if "day" in hms:
        head, hms = hms.split(",", 1)
        days = int(head.split()[0])
    parts = [float(p) for p in hms.strip().split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return days * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
