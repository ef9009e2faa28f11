"""The `tokenize` stage kind: each training stage's data tokenized on CPUs before any GPU job
(train/pretokenize.py), when train.common.pretokenize > 0 (processes; 0: LLaMA-Factory tokenizes
inside the training job, on node 0, while the other GPUs wait).

    init_vlm/model (tokenizer, processor) + data_prep.<role> -> tokenize.<stage>/dataset
    -> train.<stage> loads it through tokenized_path

What decides the output is what decides LLaMA-Factory's preprocessing: the data, the tokenizer and
processor (init_vlm's: training does not change them), template, cutoff_len, pixels, packing,
pass-through `extra` keys and the LLaMA-Factory version. The process count and where the parts
run (`tokenize` config group: local processes, a SLURM job array of CPU tasks, or the nodes of a
multi-node run) are run-only: every count and every place gives the same rows
(tests/test_pretokenize.py, tests/test_pretokenize_slurm.py). Resumable: the parts a failed attempt finished are kept, and
the next attempt computes only the missing ones."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from stagekit import StageRun, unknown_keys

KIND = "tokenize"
VERSION = 1
WHERE = {"local": ("name",), "nodes": ("name",),
         "slurm": ("name", "partition", "cpus_per_task", "mem_gb", "timeout_min", "max_parallel")}


def parts(cfg: Mapping) -> int:
    return int(cfg["train"]["common"].get("pretokenize") or 0)


def where(cfg: Mapping) -> dict:
    """The `tokenize` slice: where the parts run, and with what (tokenize=slurm's sbatch keys)."""
    return dict(cfg.get("tokenize") or {"name": "local"})


def problems(cfg: Mapping) -> list[str]:
    on = where(cfg)
    if on.get("name") not in WHERE:
        return [f"tokenize.name: {on.get('name')!r}; choose one of {', '.join(WHERE)} (config group tokenize)"]
    bad = unknown_keys("tokenize", on, WHERE[on["name"]])
    for key in ("cpus_per_task", "mem_gb", "timeout_min") if on["name"] == "slurm" else ():
        if not isinstance(on[key], (int, float)) or on[key] <= 0:
            bad.append(f"tokenize.{key}: {on[key]!r}; a number above 0")
    if on["name"] == "slurm" and on.get("max_parallel") is not None and not int(on["max_parallel"]) > 0:
        bad.append(f"tokenize.max_parallel: {on['max_parallel']!r}; null (all tasks at once) or a number above 0")
    return bad


def stages(cfg: Mapping, upstream: list[dict]) -> list[dict]:
    from train.recipe import STAGES, packs, runs_stage
    from train.tokenized import lf_version

    n = parts(cfg)
    if n <= 0:
        return []
    common = cfg["train"]["common"]
    on = where(cfg)
    how = {"slurm": f"{n} SLURM array tasks", "nodes": f"{n} parts over {cfg['launcher']['nnodes']} nodes"}.get(
        on["name"], f"{n} processes")
    out = []
    for name in STAGES:
        if not runs_stage(cfg, name):
            continue
        spec = dict(cfg["train"]["stages"][name])
        config = {"name": name, "template": common["template"], "cutoff_len": common["cutoff_len"],
                  "pixels": dict(cfg["pixels"]), "packing": packs({"stage": spec, "common": common}),
                  "extra": dict(common.get("extra") or {}), "llamafactory": lf_version()}
        out.append({"name": f"tokenize.{name}", "config": config, "resumable": True,
                    "settings": {"parts": n, "dataset": cfg[spec["data"]]["name"], "where": on,
                                 "launcher": dict(cfg["launcher"])},
                    "every_node": on["name"] == "nodes",   # each node its share of the parts
                    "inputs": {"model": "init_vlm", "data": f"data_prep.{spec['data']}"},
                    "summary": f"{cfg[spec['data']]['label']} for train.{name}, {how}"
                               + (", packed" if config["packing"] else "")})
    return out


def lf_yaml(job: StageRun) -> dict:
    """The data-deciding keys of the training stage's YAML, as train/render.py writes them."""
    from train.recipe import data_keys

    c, data = job.config, job.inputs["data"]
    return {**data_keys(model_dir=str(job.inputs["model"] / "model"), dataset_dir=str(data),
                        dataset=job.settings["dataset"], template=c["template"],
                        cutoff_len=c["cutoff_len"], packing=c["packing"]), **c["extra"]}


def run(job: StageRun) -> dict:
    from train.pretokenize import tokenize, tokenize_args

    args = tokenize_args(lf_yaml(job), job.out_dir / "work")
    on = dict(job.settings.get("where") or {"name": "local"})
    if on["name"] == "nodes":
        return _on_nodes(job, args)
    run_parts = None   # processes on this machine
    if on["name"] == "slurm":
        from train.pretokenize_slurm import on_slurm

        run_parts = on_slurm(job.out_dir / "slurm", on, job.log)
    summary = tokenize(args, dataset_dir(job.out_dir), int(job.settings["parts"]), run_parts)
    job.log(f"tokenized {summary['rows_in']} rows into {summary['rows_out']} in {summary['parts']} parts "
            f"({on['name']}; {summary['reused']} kept from an earlier attempt)")
    return summary


def _on_nodes(job: StageRun, args: dict) -> dict:
    """Node r of R computes the missing parts p with p % R == r, in processes; node 0 then waits
    for the others' parts (as long as the ranks wait for each other in training) and joins."""
    from train.launch import node_rank, node_timeout
    from train.pretokenize import missing_parts, run_forked, shards_dir, tokenize, wait_for_parts

    n, launcher, out = int(job.settings["parts"]), job.settings["launcher"], dataset_dir(job.out_dir)
    me, nodes = node_rank(launcher), int(launcher["nnodes"])
    shards = shards_dir(out)
    mine = [p for p in missing_parts(shards, n) if p % nodes == me]
    job.log(f"node {me} of {nodes}: parts {mine} of {n}, one process each")
    if mine:
        shards.mkdir(parents=True, exist_ok=True)
        run_forked(args, shards, mine, n)
    if me > 0:   # node 0 joins and marks the stage done
        return {"parts": mine}
    wait_for_parts(shards, n, node_timeout(launcher), nodes, job.log)
    summary = tokenize(args, out, n)   # every part is there: this only joins
    job.log(f"tokenized {summary['rows_in']} rows into {summary['rows_out']} in {n} parts over {nodes} nodes")
    return summary


def dataset_dir(out_dir: Path) -> Path:
    """Where the stage writes the dataset LLaMA-Factory loads (train/stage.py reads it here)."""
    return Path(out_dir) / "dataset"
