"""Checks on a composed run config that Hydra cannot make: the values that would otherwise fail
hours into a run (a `force=` that names no stage, an `until=` typo, a source key misspelt with
`+`, a training recipe whose freeze flags or global batch do not work). Each kind checks its own
slice (harness/kinds.py `problems`); this adds the run-level keys. Called for every job of a
(multi)run before any work, and by `plan`. Pure: no torch, no files."""

from __future__ import annotations

from typing import Any, Mapping

from stagekit.schema import keys, merge, undeclared_keys


# The run-level keys (configs/hydra/config.yaml, configs/hydra/paths/); every other slice's keys are
# declared by the package that owns it, in its `schema.py` (`schema_problems`). `job` is written by
# the harness itself into a job's saved config.
TOP_SCHEMA = keys("experiment_name", "pipeline", "seed", "cpu_threads", "force", "until", "job",
                  paths=keys("results_dir", "store_dir", "data_root"),
                  pixels=keys("min_pixels", "max_pixels"),
                  cost=keys("gpu", "peak_tflops", "mfu"))
# Packages that own a config slice without being a stage kind.
SCHEMA_PACKAGES = ("tracking",)


def config_schema() -> dict:
    """The schema of the whole run config: the run-level keys and each package's `schema.SCHEMA`
    (every stage kind's package, and SCHEMA_PACKAGES)."""
    import importlib
    import importlib.util

    from harness.kinds import CHAIN_ORDER

    packages = dict.fromkeys([k.__name__.rpartition(".")[0] for k in CHAIN_ORDER] + list(SCHEMA_PACKAGES))
    declared = [importlib.import_module(f"{p}.schema").SCHEMA for p in packages
                if importlib.util.find_spec(f"{p}.schema") is not None]
    return merge(TOP_SCHEMA, *declared)


def schema_problems(cfg: Mapping) -> list[str]:
    """Every key of the run config that no schema declares, with its full path and the nearest
    valid name: a key nobody reads would be fingerprinted and do nothing."""
    return undeclared_keys(cfg, config_schema())


def force_list(value: Any) -> list[str]:
    """`force=train.sft` (a string) and `force=[train.sft,init_vlm]` (a list) mean the same."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value]


def pipeline_names() -> list[str]:
    """Every pipeline some kind takes part in (each kind's PIPELINES, harness/kinds.py)."""
    from harness.kinds import CHAIN_ORDER

    return list(dict.fromkeys(p for k in CHAIN_ORDER for p in getattr(k, "PIPELINES", ("pretrain",))))


def run_problems(cfg: Mapping) -> list[str]:
    """Every problem of one job's resolved config, each naming its key; [] when it can run."""
    from harness.chain import active_kinds, build_chain

    unknown = schema_problems(cfg)
    if unknown:
        return unknown
    pipelines = pipeline_names()
    if cfg.get("pipeline", "pretrain") not in pipelines:
        return [f"pipeline: {cfg.get('pipeline')!r}; choose one of {', '.join(pipelines)}"]
    import tracking

    problems = [p for kind in active_kinds(cfg) if hasattr(kind, "problems") for p in kind.problems(cfg)]
    problems += tracking.problems(cfg.get("tracker") or {"name": "none"})   # every pipeline reports to it
    threads = cfg.get("cpu_threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        problems.append(f"cpu_threads: {threads!r}; give a number of threads per process (1 or more), "
                        "or null for the machine's default")
    if problems:
        return problems
    try:
        stages = build_chain({**cfg, "until": None})
    except (KeyError, ValueError, TypeError) as exc:
        return [f"the config does not make a stage chain: {exc}"]
    names = [s.name for s in stages]
    kinds = sorted({s.kind for s in stages})
    problems = [f"force: {f!r} is neither a stage of this run ({', '.join(names)}) nor a stage kind "
                f"({', '.join(kinds)})" for f in force_list(cfg.get("force")) if f not in names and f not in kinds]
    until = cfg.get("until")
    if until is not None and until not in names:
        problems.append(f"until: {until!r} is not a stage of this run; stages: {', '.join(names)}")
    return problems


def preflight_problems(cfg: Mapping) -> list[str]:
    """What one job will read that is not there (datasets, a judge server): each kind's optional
    `preflight(cfg)`, checked by `run` and `plan` before stage 1 so a missing file or a dead server
    fails in seconds, not after the training stages. Unlike run_problems, this touches files and
    the network."""
    from harness.chain import active_kinds

    return [p for kind in active_kinds(cfg) if hasattr(kind, "preflight") for p in kind.preflight(cfg)]
