"""The one way from command-line overrides to composed configs: `run`, `plan`, `prefetch`, the
up-front checks and the tests all compose through `hydra_app()`, Hydra's own application object
(the same one `@hydra.main` builds), so what is checked and planned is what runs.

Before any work, every job of a (multi)run is composed and checked against every kind's schema
(harness/kinds.py `problems`); errors name the job, the key and the valid choices."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs" / "hydra"
CONFIG_NAME = "config"
PATH_KEYS = ("results_dir", "store_dir", "data_root")


class BadOverride(ValueError):
    pass


# A sweep job's folder is named by its overrides (Hydra's override_dirname, e.g.
# "captions=vanilla,seed=1"); a sweep over many keys makes that longer than a file name may be
# (255 bytes on ext4 and xfs), and the job would fail as it starts. Past this length the name keeps
# its readable head and ends with a hash of the whole, so it stays unique per job.
MAX_JOB_DIRNAME = 200


def job_dirname(overrides: str) -> str:
    if len(overrides.encode()) <= MAX_JOB_DIRNAME:
        return overrides
    import hashlib

    digest = hashlib.sha256(overrides.encode()).hexdigest()[:12]
    head = overrides.encode()[:MAX_JOB_DIRNAME - 14].decode(errors="ignore")
    return f"{head}..{digest}"


# At import, not in hydra_app(): a SLURM worker resolves its job folder after unpickling the job,
# which imports this module but never calls hydra_app().
if not OmegaConf.has_resolver("job_dirname"):
    OmegaConf.register_new_resolver("job_dirname", job_dirname)


def register_defaults() -> None:
    """Defaults that live in Python, offered to the YAMLs as base configs so no value is written
    twice (e.g. every source YAML: `- /source_defaults@_here_`). Each kind declares its own in
    CONFIG_DEFAULTS (harness/kinds.py); the harness only stores them."""
    from hydra.core.config_store import ConfigStore

    from harness.kinds import CHAIN_ORDER

    store = ConfigStore.instance()
    for kind in CHAIN_ORDER:
        for name, node in getattr(kind, "CONFIG_DEFAULTS", {}).items():
            store.store(name=name, node=node)


def hydra_app():
    """Hydra's application object over configs/hydra. This is what `@hydra.main` builds
    internally; building it here lets run, plan and the checks share one composition and get
    the jobs' results back as values (hydra-core is pinned in the lock: these are its 1.3 APIs)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    register_defaults()
    return Hydra.create_main_hydra2(task_name="harness", config_search_path=create_config_search_path(str(CONFIG_DIR)))


def compose_config(overrides: Sequence[str] = (), multirun: bool = False) -> DictConfig:
    mode = RunMode.MULTIRUN if multirun else RunMode.RUN
    return hydra_app().compose_config(CONFIG_NAME, list(overrides), run_mode=mode)


def group_options(group: str) -> list[str]:
    folder = CONFIG_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def groups() -> list[str]:
    return sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir())


def without_hydra(cfg: DictConfig) -> DictConfig:
    """A copy without Hydra's own node: it resolves only inside a running job, and the run's
    config needs none of it."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def to_plain(cfg: DictConfig) -> dict:
    """Resolved plain dict with absolute paths (the run never depends on the cwd afterwards)."""
    cfg = without_hydra(cfg)
    for key in PATH_KEYS:  # before resolving, so every ${paths.x} use gets the absolute path
        absolute = str(Path(str(cfg.paths[key])).expanduser().absolute())
        OmegaConf.update(cfg, f"paths.{key}", absolute, force_add=True)
    return OmegaConf.to_container(cfg, resolve=True)


def job_overrides(overrides: Sequence[str]) -> list[list[str]]:
    """The overrides of every job of a (multi)run: the cartesian product of the sweep values."""
    # Expanded by Hydra's basic sweeper's own function, so the jobs checked are the jobs it runs;
    # the parser gets a config loader, so glob() sees the config group's options. An interval has
    # no values to list: refused here, before any work.
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = OverridesParser.create(config_loader=_config_loader()).parse_overrides(list(overrides))
    for ov in parsed:
        if ov.is_sweep_override() and not ov.is_discrete_sweep():
            raise BadOverride(f"{ov.input_line}: an interval sweep lists no values to run (use choice, range or glob)")
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for job in jobs]


def _config_loader():
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    return ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONFIG_DIR)))


def compose_job(job: Sequence[str]) -> dict:
    """One job's resolved config, checked against every kind's schema; BadOverride otherwise."""
    try:
        cfg = without_hydra(compose_config(job))
        plain = to_plain(cfg)   # interpolation errors surface here
        missing = OmegaConf.missing_keys(cfg)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise BadOverride(explain(exc)) from None
    if missing:
        raise BadOverride(f"missing value for {', '.join(sorted(missing))} (set it with key=value)")
    from harness.validate import run_problems

    problems = run_problems(plain)
    if problems:
        raise BadOverride("; ".join(problems))
    return plain


def validate_overrides(overrides: Sequence[str]) -> list[dict]:
    """Compose and check every job of a (multi)run before any work; their configs, or BadOverride
    naming the job (its overrides) and the key."""
    try:
        jobs = job_overrides(overrides)
    except HydraException as exc:
        raise BadOverride(f"cannot parse overrides {list(overrides)}: {exc}") from None
    configs = []
    for job in jobs:
        try:
            configs.append(compose_job(job))
        except BadOverride as exc:
            where = f" (job: {' '.join(job)})" if len(jobs) > 1 else ""
            raise BadOverride(str(exc) + where) from None
    return configs


def explain(exc: Exception) -> str:
    """One line from Hydra's and OmegaConf's structured errors: the group and its options, or the
    key and the keys valid beside it."""
    cause = exc
    while cause is not None and not isinstance(cause, (MissingConfigException, OmegaConfBaseException)):
        cause = cause.__cause__
    if isinstance(cause, MissingConfigException) and cause.missing_cfg_file:
        group, _, option = str(cause.missing_cfg_file).rpartition("/")
        if group in groups():
            return (f"unknown option {option!r} for config group {group!r}; "
                    f"valid choices: {', '.join(group_options(group))}")
    key = getattr(cause, "full_key", None)
    if isinstance(cause, OmegaConfBaseException) and key:
        return f"unknown config key {key!r}; valid keys at {_parent(key) or 'top level'}: {', '.join(_siblings(key))}"
    return str(exc).splitlines()[0]


def _parent(key: str) -> str:
    return key.rpartition(".")[0]


def _siblings(key: str) -> list[str]:
    node = compose_config([])
    parent = _parent(key)
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, DictConfig) else None
        if node is None:
            return [f"(no such section {parent!r}); top level: " + ", ".join(sorted(compose_config([]).keys()))]
    return sorted(str(k) for k in node.keys() if k != "hydra") if isinstance(node, DictConfig) else []


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
