"""Experiment tracking through the libraries research teams already watch runs in.

Training reaches the tracker through LLaMA-Factory's own `report_to` (the Hugging Face Trainer's
callbacks); this module only says which one, under which run name, and with which grouping and
tags, as LLaMA-Factory YAML keys plus the environment variables each library reads itself
(WANDB_PROJECT, WANDB_RUN_GROUP, WANDB_TAGS, MLFLOW_EXPERIMENT_NAME, MLFLOW_TAGS, ...).
Evaluation scores are logged to the same tracker under `<experiment>/<job>/evaluate`.

Credentials are never configured here: each library reads its own from the environment
(WANDB_API_KEY, MLFLOW_TRACKING_PASSWORD, ...), so they reach neither the rendered YAML nor the
saved config; the one subprocess runner masks them in every log line.

    tracker: {name: none | tensorboard | wandb | mlflow, ...}   (configs/hydra/tracker/)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

TRACKERS = ("none", "tensorboard", "wandb", "mlflow")


class TrackerError(ValueError):
    pass


def run_name(identity: Mapping, stage: str) -> str:
    """`<experiment>/<job>/<stage>`: one name per stage of a job, grouped by sweep."""
    return f"{identity['experiment']}/{identity['job']}/{stage}"


def problems(tracker: Mapping) -> list[str]:
    import importlib.util

    name = tracker.get("name")
    if name not in TRACKERS:
        return [f"tracker.name={name!r}; choose one of {', '.join(TRACKERS)}"]
    module = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}.get(name)
    if module and importlib.util.find_spec(module) is None:
        return [f"tracker={name} needs the {module} package, which is not installed in this environment"]
    return []


def lf_keys(tracker: Mapping, identity: Mapping, stage: str) -> dict:
    """LLaMA-Factory YAML keys: report_to and run_name."""
    name = tracker.get("name", "none")
    if name == "none":
        return {"report_to": "none"}
    return {"report_to": name, "run_name": run_name(identity, stage)}


def tracker_env(tracker: Mapping, identity: Mapping, stage: str | None = None) -> dict[str, str]:
    """What each library reads from the environment: project, group (the sweep), tags (the
    caption source and backbone under test), folders. TensorBoard's folder is per stage and an
    environment variable: transformers 5.6 ignores the `logging_dir` argument (deprecated)."""
    name = tracker.get("name", "none")
    if name == "tensorboard":
        return {"TENSORBOARD_LOGGING_DIR": str(Path(tracker["dir"]) / run_name(identity, stage))} if stage else {}
    tags = [f"captions:{identity['caption_source']}", f"backbone:{identity['backbone']}"]
    if name == "wandb":
        env = {"WANDB_PROJECT": str(tracker["project"]), "WANDB_RUN_GROUP": str(identity["group"]),
               "WANDB_TAGS": ",".join(tags), "WANDB_DIR": str(tracker["dir"])}
        if tracker.get("entity"):
            env["WANDB_ENTITY"] = str(tracker["entity"])
        if tracker.get("mode"):
            env["WANDB_MODE"] = str(tracker["mode"])
        return env
    if name == "mlflow":
        env = {"MLFLOW_EXPERIMENT_NAME": str(tracker["experiment"]),
               "MLFLOW_TAGS": json.dumps({"group": identity["group"], "caption_source": identity["caption_source"],
                                          "backbone": identity["backbone"]})}
        if tracker.get("tracking_uri"):
            env["MLFLOW_TRACKING_URI"] = str(tracker["tracking_uri"])
        return env
    return {}


def log_scores(tracker: Mapping, identity: Mapping, scores: Mapping[str, float | None], log=print) -> None:
    """The evaluation's scores (0-100; n/a left out, never logged as 0) to the run's tracker."""
    name = tracker.get("name", "none")
    values = {f"eval/{k}": float(v) for k, v in scores.items() if v is not None}
    if name == "none" or not values:
        return
    stage = run_name(identity, "evaluate")
    if name == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(Path(tracker["dir"]) / stage)) as writer:
            for key, value in values.items():
                writer.add_scalar(key, value, global_step=0)
    elif name == "wandb":
        _log_wandb(tracker, identity, stage, values)
    elif name == "mlflow":
        _log_mlflow(tracker, identity, stage, values)
    log(f"scores logged to {name} as {stage}")


def _log_wandb(tracker: Mapping, identity: Mapping, stage: str, values: dict) -> None:
    import os

    import wandb

    env = tracker_env(tracker, identity)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)   # the same project, group, tags and mode as the training runs
    try:
        run = wandb.init(name=stage, reinit="finish_previous")
        run.log(values)
        run.finish()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _log_mlflow(tracker: Mapping, identity: Mapping, stage: str, values: dict) -> None:
    import mlflow

    if tracker.get("tracking_uri"):
        mlflow.set_tracking_uri(tracker["tracking_uri"])
    mlflow.set_experiment(tracker["experiment"])
    with mlflow.start_run(run_name=stage, tags=json.loads(tracker_env(tracker, identity)["MLFLOW_TAGS"])):
        mlflow.log_metrics({k.replace("/", "_"): v for k, v in values.items()})
