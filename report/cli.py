"""`python -m harness report PATH... [--paper CSV]... [--out DIR] [--title TEXT] [--baseline ROW]`

    python -m harness report results/sweeps/embedded
    python -m harness report results/sweeps/embedded --baseline Synthetic-Sparse
    python -m harness report results/runs/a results/runs/b --paper results/paper/paper_table1.csv

Collects every results.jsonl under the PATHs (with the lmms-eval per-sample logs beside them and
each job's config.yaml), writes table.md/.csv/.tex (and comparisons.csv/.tex when rows could be
compared question by question, the paper comparison, benchmarks.png, loss_curves.png when
trainer_state.json files are found) into DIR (default: the first PATH's folder + /report) and
prints the Markdown table."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Sequence

from report.records import ReportError, collect_records, find_files
from report.write import DEFAULT_TITLE, write_report

_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")
_STAGE_MODEL = re.compile(r"^(?:(.*)/)?stages/train\.([\w.-]+)/model$")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness report",
                                     description="Build the ablation table from run/sweep folders.")
    parser.add_argument("paths", nargs="+", type=Path, help="run or sweep folders (or results.jsonl files)")
    parser.add_argument("--paper", type=Path, action="append",
                        help="a paper CSV (results/paper/*.csv) to compare with; may be given more than once")
    parser.add_argument("--out", type=Path, help="output folder (default: FIRST_PATH/report)")
    parser.add_argument("--title", default=DEFAULT_TITLE)
    parser.add_argument("--baseline", metavar="ROW",
                        help="compare every row with the row of this name in its backbone (a caption "
                             "source, or 'source (settings)' as printed); default: vanilla")
    return parser


def main(argv: Sequence[str]) -> int:
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse exits on --help and on usage errors; we return instead
        return int(exc.code or 0)
    try:
        return _report(args)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _report(args: argparse.Namespace) -> int:
    written = report_paths(args.paths, out=args.out, paper_csv=args.paper, title=args.title,
                           baseline=args.baseline)
    print(written.pop("markdown_text"))
    print("report files:\n" + "\n".join(f"  {path}" for path in written.values()))
    return 0


def report_paths(paths: Sequence[Path], *, out: Path | None = None, paper_csv: Sequence[Path] | None = None,
                 title: str = DEFAULT_TITLE, baseline: str | None = None) -> dict:
    """The report of every results.jsonl under `paths` into `out` (default: the first path's
    folder + /report), with the loss curves of the training folders found there. Returns the
    written files by kind and "markdown_text"."""
    paths = [Path(p) for p in paths]
    records = collect_records(paths)
    if not records:
        raise ReportError(f"no results.jsonl records under {', '.join(map(str, paths))}")
    first = paths[0]
    out = Path(out) if out else (first if first.is_dir() else first.parent) / "report"
    written = write_report(records, out, paper_csv=paper_csv, title=title, baseline=baseline)
    curves = loss_curves(paths)
    if curves:
        from report.plots import plot_loss_curves

        try:
            written["loss_curves"] = plot_loss_curves(curves, out / "loss_curves.png")
        except ReportError as exc:  # a broken training log must not cost the table, already written
            print(f"warning: no loss plot: {exc}", file=sys.stderr)
    return written


def trainer_state(model_dir: Path) -> Path | None:
    """The trainer_state.json of one training output folder: its own, else its newest checkpoint's."""
    own = Path(model_dir) / "trainer_state.json"
    if own.exists():
        return own
    ckpts = sorted(Path(model_dir).glob("checkpoint-*/trainer_state.json"),
                   key=lambda p: int(_CHECKPOINT.match(p.parent.name)[1]) if _CHECKPOINT.match(p.parent.name) else -1)
    return ckpts[-1] if ckpts else None


def loss_curves(paths: Sequence[Path]) -> dict[str, Path]:
    """label -> trainer_state.json, labelled by the training folder relative to its PATH (prefixed
    by the PATH's name when there are several PATHs, so two runs' "train/stage1" stay apart).

    The HF Trainer also copies trainer_state.json into every checkpoint-N folder; a folder's own
    file wins, else its newest checkpoint's (a run that stopped early), so each run is one line.
    A training stage shared by several runs (a sweep's alignment) is one line, under the first."""
    chosen: dict[str, tuple[int, Path, Path, Path]] = {}  # real folder -> (rank, file, folder, its PATH)
    roots = [p for p in paths if p.is_dir()]
    for root in roots:
        for state in find_files([root], "trainer_state.json"):
            match = _CHECKPOINT.match(state.parent.name)
            owner, rank = (state.parent.parent, int(match[1])) if match else (state.parent, sys.maxsize)
            first = chosen.get(real := os.path.realpath(owner))
            if first is None:
                chosen[real] = (rank, state, owner, root)
            elif rank > first[0]:  # a newer file of the same folder, keeping its first label
                chosen[real] = (rank, state, first[2], first[3])
    return {_label(owner, root, len(roots) > 1): state for _, state, owner, root in chosen.values()}


def _label(folder: Path, root: Path, prefixed: bool) -> str:
    relative = folder.relative_to(root)
    if relative == Path("."):
        return root.name
    text = f"{root.name}/{relative.as_posix()}" if prefixed else relative.as_posix()
    # a run folder's link to a training stage: "<job>/stages/train.sft/model" -> "<job>: sft"
    match = _STAGE_MODEL.match(text)
    return f"{match[1]}: {match[2]}" if match and match[1] else match[2] if match else text
