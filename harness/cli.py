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
  run [-m] [-v] [key=value ...]
                             run the stage chain (-m: Hydra multirun sweep over a,b,c values;
                             -v: stream every tool's output, not only the chain's progress)
  status [RUN_OR_SWEEP_DIR]  what is done, running (progress, ETA), interrupted or failed
  plan [key=value ...]       print the stage chain, each stage's state, outputs and exact commands
  report PATH... [--paper CSV] [--out DIR] [--baseline ROW]
                             build the ablation table (Markdown, CSV, LaTeX, plots) from run/sweep folders
  prefetch [key=value ...]   download the checkpoints and benchmark datasets a config needs (online),
                             and fetch and unpack each source's images (its `layout`)
  data check [--json] [key=value ...]
                             per source and path prefix: rows, images referenced, present, missing

config groups (choose with group=option):
{groups}
examples:
  python -m harness run                                   # embedded tiny offline experiment (CPU, minutes)
  python -m harness run -m captions=vanilla,synthetic_sparse,synthetic_dense
  python -m harness plan experiment=caprl2m launcher=multinode
  python -m harness run experiment=caprl2m force=[train.sft]
  python -m harness run experiment=prism captioner=caprl_3b prism=caprl_files   # score a captioner (Table 3)
  python -m harness run captions=recaptioned_synthetic    # re-caption with the captioner, then pretrain (Table 2)
"""


COMMAND_HELP = {
    "run": """usage: python -m harness run [-m] [-v] [key=value ...]

Run the stage chain of one job (or, with -m, of every job of a Hydra sweep over a,b,c values).
Stages already done with the same fingerprint are skipped; a killed run resumes where it stopped.

  experiment=NAME        embedded (default: tiny offline, CPU) or caprl2m (the paper's recipe)
  group=option           swap one part (see `python -m harness --help` for groups and options)
  key.sub=value          set one value, e.g. train.common.max_steps=10 seed=1
  force=[stage,...]      redo these stages (a stage name such as train.sft, or a kind such as
                         train) and everything that reads them, even though they are done
  until=stage            stop after this stage, e.g. until=data_prep.captions
  -v, --verbose          stream stage messages and every tool's output (LLaMA-Factory, lmms-eval)
                         to the terminal; without it they go only to logs/<stage>.log
  -m                     multirun: one job per combination of comma-separated values; shared
                         stages run once; failures do not stop the other jobs; a summary and
                         the ablation report come at the end

outputs: results/runs/<experiment>/<backbone>-<captions>/ (one run) or
         results/sweeps/<experiment>/<swept key=value,...>/ (a sweep), stage outputs in results/store/
examples:
  python -m harness run
  python -m harness run -m captions=vanilla,synthetic_sparse,synthetic_dense
  python -m harness run experiment=caprl2m force=[train.sft]
""",
    "plan": """usage: python -m harness plan [key=value ...]

Print the chain a run would execute, without running anything: each stage's state (done / to
do), output folder, inputs, datasets, freeze flags, learning rate, global batch, a cost estimate,
and the exact commands (per node for multi-node training). Takes the same overrides as `run`;
with sweep values (a,b) it prints the plan of every job.

examples:
  python -m harness plan experiment=caprl2m
  python -m harness plan experiment=caprl2m launcher=multinode
""",
    "prefetch": """usage: python -m harness prefetch [key=value ...]

Download, while online, what a config needs later offline: the backbone's ViT and LLM sources,
the caption/SFT datasets that name a hub repo, their images (each source's `layout`: archives
downloaded, unpacked resumably, shared folders linked, a manifest per source under
<data_root>/.manifests), and the benchmark datasets of `benchmarks=`; ends with the image
coverage table (`python -m harness data check`). Takes the same overrides as `run`.

example:
  python -m harness prefetch experiment=caprl2m benchmarks=paper_table1
""",
}


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
    if command == "status":
        from harness.watch import main as status_main

        return status_main(rest)
    if command == "data":
        from harness.data import main as data_main

        return data_main(rest)
    if command not in ("run", "plan", "prefetch"):
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") for a in rest):
        print(COMMAND_HELP[command])
        return 0
    from harness.config import BadOverride, job_overrides, validate_overrides

    multirun = any(a in ("-m", "--multirun") for a in rest)
    if any(a in ("-v", "--verbose") for a in rest):
        import os

        from harness.job import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"
    overrides = [a for a in rest if a not in ("-m", "--multirun", "-v", "--verbose")]
    try:
        configs = validate_overrides(overrides)   # every job of a sweep, before any work
    except BadOverride as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command in ("run", "plan"):
        from harness.validate import preflight_problems

        jobs = job_overrides(overrides)
        missing = [(job, p) for job, cfg in zip(jobs, configs) for p in preflight_problems(cfg)]
        for job, p in missing:   # before stage 1 of any job
            where = f" (job: {' '.join(job)})" if len(jobs) > 1 else ""
            print(f"error: {p}{where}", file=sys.stderr)
        if command == "plan":   # the plan is still shown: it says what to fetch and start
            rc = _plan(jobs, configs)
            return rc or (1 if missing else 0)
        if missing:
            return 2
    if command == "prefetch":
        from harness.prefetch import prefetch

        return prefetch(configs[0])
    from harness.job import launch

    return launch(overrides, multirun)


def _plan(jobs: list[list[str]], configs: list[dict]) -> int:
    from harness.plan import render_plan

    for i, (job, cfg) in enumerate(zip(jobs, configs)):
        if len(jobs) > 1:
            print(f"{'=' * 20} job {i + 1} of {len(jobs)}: {' '.join(job)}\n")
        print(render_plan(cfg))
    return 0
