"""`python -m harness data check [--json] [overrides]`: are the images every source of a run reads
on disk, per source and per path prefix, before any work (data_prep/coverage.py does the check).

The harness part: compose the jobs (sweep values give several), point world:// paths at the built
embedded world, and add the partner of a Table-2 source (`layout.same_images_as`) so that the
pair is compared even when only one side is in the run. Exit 0: every source is covered; 1: a
source falls below its min_kept_fraction; 2: bad overrides or unreadable caption files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Mapping

USAGE = """usage: python -m harness data check [--json] [key=value ...]

Count, per caption/SFT source of the run and per image path prefix, the rows, the images they
name, those present on disk and those missing (with examples and the layout origin that should
provide them), without decoding any image. Refuses (exit 1) when a source's rows with all their
images fall below its min_kept_fraction. Sweep values (captions=a,b) check every job's sources;
a Table-2 source's partner (layout.same_images_as) is checked with it.

  --json     the report as JSON on stdout (for scripts)

examples:
  python -m harness data check experiment=caprl2m
  python -m harness data check experiment=caprl2m captions=sharegpt4v_1m,caprl_sharegpt4v_1m
  python -m harness data check                      # the embedded world (built by `run until=world`)
"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    if argv[0] != "check":
        print(f"unknown data command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    from data_prep.coverage import check_sources, render
    from data_prep.errors import DataPrepError
    from harness.config import BadOverride, job_overrides, validate_overrides

    rest = argv[1:]
    as_json = "--json" in rest
    overrides = [a for a in rest if a not in ("--json", "-m", "--multirun")]   # sweep values need no -m here
    try:
        configs = validate_overrides(overrides)
        sources = job_sources(job_overrides(overrides), configs)
        report = check_sources(sources, configs[0]["paths"]["data_root"], progress=not as_json)
    except (BadOverride, DataPrepError, WorldNotBuilt) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(report.as_json(), indent=1))
    else:
        render(report)
    return 1 if report.problems() else 0


class WorldNotBuilt(RuntimeError):
    pass


def job_sources(jobs: list[list[str]], configs: list[dict]) -> list[tuple[str, Mapping]]:
    """Every distinct (role, source) of the jobs, world:// resolved, plus the partners they name."""
    from data_prep.coverage import run_sources
    from data_prep.layout import parse_layout
    from harness.config import compose_job

    out: dict[str, tuple[str, Mapping]] = {}
    for job, cfg in zip(jobs, configs):
        for role, source in run_sources(with_world(cfg), built_by_chain=True):
            out.setdefault(source["name"], (role, source))
            partner = parse_layout(source).same_images_as
            if partner and partner not in out:
                group = role.split()[0]   # "captions (images re-captioned)" -> the captions group
                other = with_world(compose_job([*job, f"{group}={partner}"]))[group]
                out.setdefault(partner, (group, other))
    return list(out.values())


def with_world(cfg: dict) -> dict:
    """cfg with world:// pointing at the built embedded world (its folder in the store)."""
    from harness.chain import build_chain, resolve_world
    from harness.stage import chain_fingerprints
    from harness.store import Store

    chain = [s for s in build_chain({**cfg, "until": None}) if s.name == "world"]   # the stage world:// names
    if not chain:
        return cfg
    store = Store(Path(cfg["paths"]["store_dir"]))
    fp = chain_fingerprints(chain)["world"]
    folder = store.dir_for("world", fp)
    if not store.is_done(folder, fp):
        raise WorldNotBuilt(f"the embedded world is not built yet (store {store.root}): "
                            f"`python -m harness run until=world` builds it")
    return resolve_world(cfg, str(folder))
