"""The `report` stage kind: the run's own table (beside the paper's numbers where the labels
match) and the loss curves of its training stages. It reads the evaluate stage(s) and, for the
loss plot, each training stage's trainer state."""

from __future__ import annotations

from typing import Mapping

from stagekit import StageRun, run_label

KIND = "report"
VERSION = 1
PIPELINES = ("pretrain", "prism")


def stages(cfg: Mapping, upstream: list[dict]) -> list[dict]:
    names = [s["name"] for s in upstream]
    results = "prism" if "prism" in names else "evaluate"
    inputs = {"results": results, **{s["name"]: s["name"] for s in upstream if s["kind"] == "train"}}
    if "evaluate.reference" in names:
        inputs["reference"] = "evaluate.reference"
    return [{"name": "report", "config": {"run": run_label(cfg)}, "inputs": inputs,
             "summary": "ablation table of this run"}]


def run(job: StageRun) -> dict:
    from report.cli import trainer_state
    from report.paper import PAPER_TABLES, PRISM_BACKBONE, PRISM_TABLE
    from report.plots import plot_loss_curves
    from report.records import collect_records
    from report.write import write_report

    scores = [path for role, path in job.inputs.items() if not role.startswith("train.")]
    records = collect_records(scores)
    # Prism records (captioners, Table 3) are compared with Table 3; model records with Tables 1-2
    tables = (PRISM_TABLE,) if any(r["backbone"] == PRISM_BACKBONE for r in records) else PAPER_TABLES
    paths = write_report(records, job.out_dir, paper_csv=[p for p in tables if p.exists()],
                         title=f"Results of {job.config['run']}")
    job.log("\n" + str(paths["markdown_text"]))
    curves = {role.removeprefix("train."): state for role, path in job.inputs.items()
              if role.startswith("train.") and (state := trainer_state(path / "model")) is not None}
    if curves:
        plot_loss_curves(curves, job.out_dir / "loss_curves.png")
    return {"table": str(job.out_dir / "table.md")}
