"""One training stage (alignment, further pretraining or SFT) as a harness stage.

    input model folder + prepared dataset -> llamafactory.yaml -> `llamafactory-cli train`
    -> <stage>/model, a complete model folder (weights, config, tokenizer, processor, template)

A killed stage is resumed from its last complete checkpoint by LLaMA-Factory itself
(overwrite_output_dir is false); incomplete checkpoints are set aside first."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

from harness.proc import run_logged
from harness.runner import node_rank
from train import checkpoints, trainable
from train.deepspeed_config import write_deepspeed_json
from train.launch import node_env, train_command
from train.render import render_lf_config, with_run_settings
from train.tokenized import TokenizedCache, cache_key

# Files that make a model folder loadable by lmms-eval and the next stage (pain point 11).
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "tokenizer.json",
                   "tokenizer_config.json", "chat_template.jinja", "chat_template.json", "processor_config.json",
                   "special_tokens_map.json", "generation_config.json")


def dataset_name(data_dir: Path) -> str:
    names = list(json.loads((data_dir / "dataset_info.json").read_text()))
    if len(names) != 1:
        raise ValueError(f"{data_dir / 'dataset_info.json'}: expected one dataset, found {names}")
    return names[0]


def tokenized_cache(store_root: Path, data_dir: Path, model_dir: Path, config: dict) -> Path:
    """The shared tokenized dataset of this data, model processor and settings (train/tokenized.py)."""
    data_fp = json.loads((data_dir / ".done.json").read_text())["fingerprint"]
    processor = {name: (model_dir / name).read_bytes() for name in PROCESSOR_FILES if (model_dir / name).exists()}
    return store_root / "tokenized" / cache_key(data_fp, config, processor)


def tool_env(extra: dict[str, str]) -> dict[str, str]:
    # torchrun is started by name; make this interpreter's environment the one found first.
    bin_dir = str(Path(sys.executable).parent)
    return {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), **extra}


def write_stage_files(ctx) -> tuple[Path, dict, dict]:
    """Render DeepSpeed JSON + LLaMA-Factory YAML into the stage folder; return (yaml, cfg, env)."""
    cfg, out = with_run_settings(ctx.config, ctx.run_cfg.get("train", {}).get("common", {})), ctx.out_dir
    model_dir, data_dir = ctx.inputs["model"] / "model", ctx.inputs["data"]
    trainable.check_flags(cfg["stage"], cfg["name"])
    ds_json = write_deepspeed_json(cfg["deepspeed"], out)
    tok = tokenized_cache(out.parent.parent, data_dir, model_dir, cfg)
    lf = render_lf_config(config=cfg, model_dir=model_dir, dataset_dir=data_dir, dataset=dataset_name(data_dir),
                          output_dir=out / "model", tokenized_path=tok, deepspeed_json=ds_json)
    yaml_path = out / "llamafactory.yaml"
    import yaml as pyyaml

    yaml_path.write_text(pyyaml.safe_dump(lf, sort_keys=False))
    env = node_env(ctx.run_cfg["launcher"], deepspeed=ds_json is not None)
    return yaml_path, lf, env


def run(ctx) -> dict:
    cfg = ctx.config
    yaml_path, lf, env = write_stage_files(ctx)
    out_model, model_dir = Path(lf["output_dir"]), Path(lf["model_name_or_path"])
    out_model.mkdir(exist_ok=True)
    # Node rank > 0 trains too, but the shared folders (checkpoints, tokenized cache, model files)
    # are node 0's to change.
    lead = node_rank(ctx.run_cfg) == 0
    if lead:
        checkpoints.set_aside_incomplete(out_model, log=ctx.log)
    resume = checkpoints.last_complete(out_model)
    ctx.log(f"resuming from {resume.name}" if resume else "starting from step 0")
    count = trainable.CountCheck(trainable.expected_trainable(model_dir, cfg["stage"]), cfg["name"],
                                 cfg["stage"]["trainable"])
    cache = TokenizedCache(Path(lf["tokenized_path"]), ctx.log) if lead else None
    with cache or contextlib.nullcontext():
        def on_line(line: str) -> None:
            count.on_line(line)
            if cache:
                cache.on_line(line)

        run_logged(train_command(yaml_path), env=tool_env(env), log_path=ctx.log_path, on_line=on_line)
        if cache:
            cache.mark_complete()   # in case the "saved" line was not logged (LLAMAFACTORY_VERBOSITY)
    count.finish()
    if lead:
        copy_processor_files(model_dir, out_model, ctx.log)
    return {"trainable_params": count.expected, "resumed_from": resume.name if resume else None,
            **train_metrics(out_model)}


def copy_processor_files(src: Path, dst: Path, log) -> None:
    """LLaMA-Factory saves tokenizer and processor; copy any that are missing so the folder is
    always complete for lmms-eval and the next stage."""
    for name in PROCESSOR_FILES:
        if (src / name).exists() and not (dst / name).exists():
            shutil.copy2(src / name, dst / name)
            log(f"copied missing {name} from the input model")


def train_metrics(out_model: Path) -> dict:
    path = out_model / "train_results.json"
    return json.loads(path.read_text()) if path.exists() else {}
