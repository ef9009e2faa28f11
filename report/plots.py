"""Figures: benchmark bars per caption source, and training-loss curves from LLaMA-Factory.

Figures are drawn on matplotlib's Agg canvas directly, without pyplot, so no global backend is
switched in the process that imports us (the harness, a notebook, a test run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from report.records import ReportError
from report.table import AVG, Table


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_benchmark_bars(table: Table, out_png: Path) -> Path:
    """One panel per backbone; per benchmark (and Avg) one bar per row, with its 95% interval as
    an error bar where there is one. n/a gets a label instead of a bar, so it cannot be read as a
    score of 0."""
    backbones = list(dict.fromkeys(r.backbone for r in table.rows))
    if not backbones:
        raise ReportError("no rows to plot")
    columns = [*table.benchmarks, AVG]
    names = list(dict.fromkeys(r.name for r in table.rows))
    colors = {s: f"C{i % 10}" for i, s in enumerate(names)}  # same colour for a row in every panel
    fig = _figure(max(6.0, 0.9 * len(columns) + 2), 3.2 * len(backbones))
    axes = fig.subplots(len(backbones), 1, squeeze=False)[:, 0]
    for ax, backbone in zip(axes, backbones):
        _bars(ax, [r for r in table.rows if r.backbone == backbone], columns, colors)
        ax.set_title(backbone)
    fig.savefig(out_png, dpi=100)
    return Path(out_png)


def _bars(ax, rows, columns, colors) -> None:
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        xs = [c + (i - (len(rows) - 1) / 2) * width for c in range(len(columns))]
        for x, col in zip(xs, columns):
            value = row.avg if col == AVG else row.cells.get(col)
            if value is not None:  # a partial Avg is hatched, as it is starred in the table
                hatch = "//" if col == AVG and row.partial else None
                ax.bar(x, value, width, color=colors[row.name], hatch=hatch, edgecolor="white",
                       yerr=_error_bar(row, col, value), capsize=3, error_kw={"elinewidth": 1})
            elif col in row.cells:
                ax.text(x, 1, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_ylabel("score")
    handles = [ax.bar(0, 0, 0, color=colors[r.name]) for r in rows]  # legend entries only
    ax.legend(handles, [r.name for r in rows], fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _error_bar(row, col: str, value: float):
    """[[below], [above]] the bar for its interval (matplotlib's asymmetric yerr), or None."""
    if col not in row.intervals:
        return None
    lo, hi = row.intervals[col]
    return [[max(0.0, value - lo)], [max(0.0, hi - value)]]


def read_loss_curve(trainer_state: Path) -> tuple[list[float], list[float]]:
    """(steps, losses) from a LLaMA-Factory / HF Trainer trainer_state.json; eval entries (which
    carry eval_loss, not loss) are skipped."""
    try:
        history = json.loads(Path(trainer_state).read_text(encoding="utf-8"))["log_history"]
        points = [(float(e["step"]), float(e["loss"])) for e in history if "loss" in e and "step" in e]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"{trainer_state}: not a readable trainer_state.json ({exc!r})") from None
    return [s for s, _ in points], [l for _, l in points]


def plot_loss_curves(curves: Mapping[str, Path], out_png: Path) -> Path:
    """One line per label; labels whose log has no loss entries are left out of the plot."""
    fig = _figure(7.0, 4.0)
    ax = fig.subplots()
    drawn = 0
    for label, path in curves.items():
        steps, losses = read_loss_curve(path)
        if steps:
            ax.plot(steps, losses, label=label, linewidth=1.2)
            drawn += 1
    if not drawn:
        raise ReportError(f"no loss entries in {', '.join(map(str, curves.values())) or 'no files'}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    fig.savefig(out_png, dpi=100)
    return Path(out_png)
