"""The implementation behind each stage kind: thin adapters from a stage's config and input
folders to the packages that do the work. Imports are lazy so `plan` never loads torch."""

from __future__ import annotations

import json
from pathlib import Path

from harness.runner import StageContext


def world(ctx: StageContext) -> dict:
    from embedded.world import build_world

    return build_world(ctx.out_dir, ctx.config, log=ctx.log)


def init_vlm(ctx: StageContext) -> dict:
    from init_vlm import build_vlm

    c = ctx.config
    manifest = build_vlm(c["vit_source"], c["llm_source"], ctx.out_dir / "model", projector_init=c["projector_init"],
                         seed=c["seed"], dtype=c["dtype"], vit_revision=c["vit_revision"],
                         llm_revision=c["llm_revision"], log=ctx.log)
    return {"params": manifest["parameters_per_module"]}


def data_prep(ctx: StageContext) -> dict:
    from data_prep import prepare_dataset

    c = ctx.config
    role = ctx.stage.name.removeprefix("data_prep.")
    manifest = prepare_dataset(c["source"], ctx.out_dir, dataset_name=c["source"]["name"], pixels=c["pixels"],
                               cutoff_len=c["cutoff_len"], tokenizer_dir=ctx.inputs["model"] / "model",
                               seed=c["source"].get("seed", 0), workers=ctx.run_cfg[role].get("workers"),
                               log=ctx.log)
    keys = ("rows_read", "rows_kept", "rejected", "total_text_tokens", "total_visual_tokens")
    return {k: manifest.get(k) for k in keys}


def train(ctx: StageContext) -> dict:
    from train.stage import run

    return run(ctx)


def evaluate(ctx: StageContext) -> dict:
    from evaluation import run_evaluation

    c = ctx.config
    # A trained model comes from the upstream stage; a reference model is named in the config.
    model = c["model"] if "model" in c else ctx.inputs["model"] / "model"
    results = run_evaluation(model, ctx.out_dir, benchmarks=c["benchmarks"],
                             pixels=c["pixels"], eval_cfg=c["eval"], meta=c["meta"], log=ctx.log)
    records = [json.loads(line) for line in Path(results).read_text().splitlines() if line.strip()]
    return {"scores": {r["benchmark"]: r["value"] for r in records}}


def report(ctx: StageContext) -> dict:
    from harness.sweep import PAPER_TABLES
    from report import collect_records, plot_loss_curves, write_report
    from report.cli import trainer_state

    scores = [path for role, path in ctx.inputs.items() if not role.startswith("train.")]
    paths = write_report(collect_records(scores), ctx.out_dir, paper_csv=[p for p in PAPER_TABLES if p.exists()],
                         title=f"Results of {ctx.config['run']}")
    ctx.log("\n" + str(paths["markdown_text"]))
    curves = {role.removeprefix("train."): state for role, path in ctx.inputs.items()
              if role.startswith("train.") and (state := trainer_state(path / "model")) is not None}
    if curves:
        plot_loss_curves(curves, ctx.out_dir / "loss_curves.png")
    return {"table": str(ctx.out_dir / "table.md")}


STEPS = {"world": world, "init_vlm": init_vlm, "data_prep": data_prep, "train": train,
         "evaluate": evaluate, "report": report}
