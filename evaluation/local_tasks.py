"""Installed lmms-eval tasks run on local files: a thin task YAML that includes the real one.

    <stage>/tasks/<task>_local/<task>_local.yaml      include: <installed task YAML>; only the data
                                                     source (dataset_path / dataset_name / dataset_kwargs)
                                                     and the task name change
    <stage>/<hub path>/                              a local dataset folder for a hub dataset the task's
                                                     code loads by name (GQA's images), see below

The task's own doc hooks, prompts, generation settings, filters, metrics and aggregations stay
the installed ones. Nothing here imports torch or lmms_eval."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Mapping

from evaluation.benchmarks import (SCORING_FIXES, EvaluationError, check_local_columns, lmms_task_name, task_yaml,
                                   task_yaml_path)

LOCAL_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def write_thin_task(entry: Mapping, tasks_dir: Path) -> Path:
    """Write the thin YAML of one local entry, after checking its file has every column the task reads."""
    data = Path(entry["local_data"]).resolve()
    builder = LOCAL_BUILDERS.get(data.suffix)
    if builder is None:
        raise EvaluationError(f"task {entry['task']}: local data {data} is not one of {sorted(LOCAL_BUILDERS)}")
    check_local_columns({**entry, "local_data": data})
    split = (task_yaml(entry["task"]) or {}).get("test_split") or "test"
    path = _write_task_yaml(entry, tasks_dir, [f"dataset_path: {builder}", "dataset_name: null",
                                               f"dataset_kwargs: {json.dumps({'data_files': {split: str(data)}})}"])
    for hub in entry.get("local_hub") or []:
        write_hub_folder(entry["task"], hub, tasks_dir.parent)
    return path


def write_fixed_task(entry: Mapping, tasks_dir: Path) -> Path:
    """Write the thin copy of a hub task whose scoring the harness corrects (SCORING_FIXES): the
    installed YAML with only the corrected function replaced, the hub data unchanged."""
    return _write_task_yaml(entry, tasks_dir, [])


def _write_task_yaml(entry: Mapping, tasks_dir: Path, changes: list[str]) -> Path:
    """A fresh folder tasks_dir/<name>/ holding the task's YAML: the installed task under its own
    name with `changes`, and the corrected scoring function (its module beside it) when the task has one.
    JSON, not YAML, for the values: a path or split name is then never re-typed by the YAML reader."""
    name = lmms_task_name(entry)
    dest = tasks_dir / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    lines = [f"include: {json.dumps(str(task_yaml_path(entry['task'])))}", f"task: {json.dumps(name)}", *changes]
    fix = SCORING_FIXES.get(entry["task"])
    if fix is not None:
        module, key = fix
        shutil.copy(Path(__file__).parent / "lmms_tasks" / f"{module}.py", dest / f"{module}.py")
        lines.append(f"{key}: !function {module}.{key}")
    path = dest / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_hub_folder(task: str, hub: Mapping, stage_dir: Path) -> Path:
    """A local dataset folder <stage_dir>/<hub path> for a hub dataset a task's code loads by name.

    GQA's process_docs calls load_dataset("lmms-lab-encoder/GQA", "testdev_balanced_images") itself.
    `datasets` reads a path that is an existing folder as a local dataset, and lmms-eval runs with the
    stage folder as its working directory, so this folder stands in for the hub dataset in this stage
    only; the Hugging Face caches are never written."""
    data = Path(hub["data"])
    if not data.is_file():
        raise EvaluationError(f"task {task}: local data {data} for {hub['path']} [{hub['name']}] does not exist")
    folder = stage_dir / hub["path"]
    if folder.exists():
        shutil.rmtree(folder)
    (folder / hub["name"]).mkdir(parents=True)
    shutil.copyfile(data, folder / hub["name"] / f"{hub['split']}-00000{data.suffix}")
    card = {"configs": [{"config_name": hub["name"],
                         "data_files": [{"split": hub["split"], "path": f"{hub['name']}/{hub['split']}-*{data.suffix}"}]}]}
    (folder / "README.md").write_text("---\n" + json.dumps(card) + "\n---\n")
    return folder
