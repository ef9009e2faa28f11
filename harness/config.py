"""Composing the Hydra config outside of a run (for `plan`, validation and tests), and turning
Hydra's composition errors into one message that names the key and the valid choices."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs" / "hydra"
PATH_KEYS = ("results_dir", "store_dir", "data_root")


class BadOverride(ValueError):
    pass


@contextmanager
def hydra_context() -> Iterator[None]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    with hydra_context():
        return compose(config_name="config", overrides=list(overrides))


def group_options(group: str) -> list[str]:
    folder = CONFIG_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def groups() -> list[str]:
    return sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir())


def to_plain(cfg: DictConfig) -> dict:
    """Resolved plain dict with absolute paths (the run never depends on the cwd afterwards)."""
    cfg = cfg.copy()
    for key in PATH_KEYS:  # before resolving, so every ${paths.x} use gets the absolute path
        absolute = str(Path(str(cfg.paths[key])).expanduser().absolute())
        OmegaConf.update(cfg, f"paths.{key}", absolute, force_add=True)
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return plain


def _single_overrides(overrides: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Split into plain overrides and, per sweep override, its single-valued alternatives."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    fixed, sweeps = [], []
    for ov in parsed:
        if ov.is_sweep_override():
            key = ov.get_key_element()
            sweeps.append([f"{key}={v}" for v in ov.sweep_string_iterator()])
        else:
            fixed.append(ov.input_line)
    return fixed, sweeps


def job_overrides(overrides: Sequence[str]) -> list[list[str]]:
    """The overrides of every job of a (multi)run: the cartesian product of the sweep values."""
    import itertools

    fixed, sweeps = _single_overrides(overrides)
    return [fixed + list(combo) for combo in itertools.product(*sweeps)]


def validate_overrides(overrides: Sequence[str]) -> None:
    """Compose every value a (multi)run will use; raise BadOverride naming key and choices."""
    try:
        fixed, sweeps = _single_overrides(overrides)
    except HydraException as exc:
        raise BadOverride(f"cannot parse overrides {list(overrides)}: {exc}") from None
    candidates = [fixed] + [fixed + [alt] for alts in sweeps for alt in alts]
    for cand in candidates:
        try:
            cfg = compose_config(cand)
            OmegaConf.to_container(cfg, resolve=True)  # interpolation errors surface here
            missing = OmegaConf.missing_keys(cfg)
            if missing:
                raise BadOverride(f"missing value for {', '.join(sorted(missing))} (set it with key=value)")
        except BadOverride:
            raise
        except Exception as exc:  # noqa: BLE001 - Hydra/OmegaConf raise several types
            raise BadOverride(explain(exc, cand)) from None
        check_values(cfg, cand)


def check_values(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """What composes can still be unusable (harness/validate.py); say so before any work."""
    from harness.validate import run_problems

    problems = run_problems(to_plain(cfg))
    if problems:
        where = f" (with {' '.join(overrides)})" if overrides else ""
        raise BadOverride("; ".join(problems) + where)


def explain(exc: Exception, overrides: Sequence[str]) -> str:
    msg = str(exc)
    for ov in overrides:
        key, _, value = ov.lstrip("+~").partition("=")
        if key in groups() and f"'{key}/{value}'" in msg:
            return f"unknown option {value!r} for config group {key!r}; valid choices: {', '.join(group_options(key))}"
        if f"'{key}'" in msg or f"'{key.split('.')[-1]}'" in msg:
            return f"unknown config key {key!r}; valid keys at {_parent(key) or 'top level'}: {', '.join(_siblings(key))}"
    return f"bad override ({' '.join(overrides)}): {msg.splitlines()[0]}"


def _parent(key: str) -> str:
    return key.rpartition(".")[0]


def _siblings(key: str) -> list[str]:
    node = compose_config([])
    parent = _parent(key)
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, DictConfig) else None
        if node is None:
            return [f"(no such section {parent!r}); top level: " + ", ".join(sorted(compose_config([]).keys()))]
    return sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
