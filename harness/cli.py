"""Command line: `python -m harness {run,plan,report,prefetch} [overrides]`.

    python -m harness run                                  # the embedded tiny offline experiment
    python -m harness run experiment=caprl2m               # the paper's recipe
    python -m harness run -m experiment=caprl2m captions=vanilla,sharegpt4v_1m,densefusion_1m,caprl_1m
    python -m harness plan experiment=caprl2m launcher=multinode
    python -m harness report results/sweeps/embedded
"""

from __future__ import annotations

import sys
from typing import Sequence

USAGE = """usage: python -m harness COMMAND [hydra overrides]

commands:
  run [-m] [key=value ...]   run the stage chain (-m: Hydra multirun sweep over a,b,c values)
  plan [key=value ...]       print the stage chain, each stage's state, outputs and exact commands
  report PATH... [--paper CSV] [--out DIR]
                             build the ablation table (Markdown, CSV, LaTeX, plots) from run/sweep folders
  prefetch [key=value ...]   download the checkpoints and benchmark datasets a config needs (online)

config groups (choose with group=option):
{groups}
examples:
  python -m harness run                                   # embedded tiny offline experiment (CPU, minutes)
  python -m harness run -m captions=vanilla,synthetic_sparse,synthetic_dense
  python -m harness plan experiment=caprl2m launcher=multinode
  python -m harness run experiment=caprl2m force=[train.sft]
"""


def usage() -> str:
    from harness.config import group_options, groups

    lines = "".join(f"  {g:<12} {', '.join(group_options(g))}\n" for g in groups())
    return USAGE.format(groups=lines)


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command == "report":
        from report.cli import main as report_main

        return report_main(rest)
    if command not in ("run", "plan", "prefetch"):
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") for a in rest):
        print(usage())
        return 0
    from harness.config import BadOverride, validate_overrides

    overrides = [a for a in rest if a not in ("-m", "--multirun")]
    try:
        validate_overrides(overrides)
    except BadOverride as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command == "plan":
        return _plan(overrides)
    if command == "prefetch":
        from harness.prefetch import prefetch

        return prefetch(overrides)
    from harness.job import launch

    return launch(rest)


def _plan(overrides: list[str]) -> int:
    from harness.config import compose_config, to_plain
    from harness.plan import render_plan

    print(render_plan(to_plain(compose_config(overrides))))
    return 0
