"""The ablation table as data: rows (backbone, caption source), benchmark columns, Avg, the change
against vanilla and the best value per column. Rendering lives in report/render.py.

A cell is a float (a score), None (the benchmark reported n/a) or absent (never run): the two
kinds of "no number" stay apart and neither is ever counted as 0."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from statistics import fmean

from report.paper import VANILLA, order_benchmarks, order_caption_sources
from report.records import latest_records

AVG = "Avg"


@dataclass
class Row:
    backbone: str
    caption_source: str
    cells: dict[str, float | None]             # benchmark -> score, None = n/a, absent = not run
    avg: float | None = None
    missing: list[str] = field(default_factory=list)  # columns left out of avg (partial if any)
    delta_avg: float | None = None             # against the vanilla row of the same backbone
    delta_partial: bool = False                # either side of delta_avg is a partial Avg
    deltas: dict[str, float] = field(default_factory=dict)
    best: set[str] = field(default_factory=set)  # columns (and "Avg") where this row is best
    label: str = ""                            # "measured" / "paper" / "Δ" in a paper comparison
    signed: bool = False                       # cells are differences: print with a sign

    @property
    def partial(self) -> bool:
        return bool(self.missing)


@dataclass
class Table:
    benchmarks: list[str]
    rows: list[Row]
    show_delta: bool = True                    # the "Δ vs vanilla" column (not in comparisons)


def round1(x: float) -> Decimal:
    """One decimal, half up, like a person rounds; round(x, 9) first drops float noise so that
    82.65 (stored as 82.6499999...) becomes 82.7, not 82.6."""
    return Decimal(repr(round(x, 9))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def build_table(records, *, benchmarks: list[str] | None = None) -> Table:
    latest = latest_records(records)
    columns = list(benchmarks) if benchmarks is not None else order_benchmarks(r["benchmark"] for r in latest)
    rows = _make_rows(latest, columns)
    valued = [b for b in columns if any(r.cells.get(b) is not None for r in rows)]
    for row in rows:
        _set_avg(row, valued)
    _set_deltas(rows, columns)
    _mark_best(rows, columns)
    return Table(columns, rows)


def _make_rows(records: list[dict], columns: list[str]) -> list[Row]:
    backbones: dict[str, dict[str, Row]] = {}  # insertion order = first-seen backbone order
    for rec in records:
        if rec["benchmark"] not in columns:
            continue
        group = backbones.setdefault(rec["backbone"], {})
        row = group.setdefault(rec["caption_source"], Row(rec["backbone"], rec["caption_source"], {}))
        row.cells[rec["benchmark"]] = rec["value"] if rec["status"] == "ok" else None
    return [group[s] for group in backbones.values() for s in order_caption_sources(group)]


def _set_avg(row: Row, valued: list[str]) -> None:
    # Only columns where some row has a number count: a benchmark n/a everywhere (no judge key)
    # leaves every row comparable; one missing in this row only makes its Avg partial.
    present = [row.cells[b] for b in valued if row.cells.get(b) is not None]
    row.avg = fmean(present) if present else None
    row.missing = [b for b in valued if row.cells.get(b) is None]


def _set_deltas(rows: list[Row], columns: list[str]) -> None:
    vanilla = {r.backbone: r for r in rows if r.caption_source == VANILLA}
    for row in rows:
        ref = vanilla.get(row.backbone)
        if ref is None or ref is row:
            continue
        row.deltas = {b: row.cells[b] - ref.cells[b] for b in columns
                      if row.cells.get(b) is not None and ref.cells.get(b) is not None}
        if row.avg is not None and ref.avg is not None:
            row.delta_avg = row.avg - ref.avg
            row.delta_partial = row.partial or ref.partial


def _mark_best(rows: list[Row], columns: list[str]) -> None:
    """Best per column within each backbone, as the paper bolds: caption sources compete, backbones
    do not. Compared on the printed (rounded) value so equal-looking numbers are marked alike;
    a partial Avg never wins, and a column with a single number marks nothing."""
    for backbone in dict.fromkeys(r.backbone for r in rows):
        group = [r for r in rows if r.backbone == backbone]
        for col in [*columns, AVG]:
            scored = [(round1(v), r) for r in group if (v := _score(r, col)) is not None]
            if len(scored) < 2:
                continue
            top = max(v for v, _ in scored)
            for v, r in scored:
                if v == top:
                    r.best.add(col)


def _score(row: Row, col: str) -> float | None:
    if col == AVG:
        return None if row.partial else row.avg
    return row.cells.get(col)


def compare_with_paper(table: Table, paper_records) -> Table:
    """For each measured row the paper also has: measured, paper and their difference, over the
    benchmarks both report. Both Avgs use the same benchmark set, so they are comparable."""
    paper = build_table(paper_records)
    paper_rows = {(r.backbone, r.caption_source): r for r in paper.rows}
    columns = [b for b in table.benchmarks if b in paper.benchmarks
               and any(r.cells.get(b) is not None for r in table.rows)]
    rows: list[Row] = []
    for mine in table.rows:
        theirs = paper_rows.get((mine.backbone, mine.caption_source))
        if theirs is not None:
            rows.extend(_comparison_rows(mine, theirs, columns))
    return Table(columns, rows, show_delta=False)


def _comparison_rows(mine: Row, theirs: Row, columns: list[str]) -> list[Row]:
    shared = [b for b in columns if mine.cells.get(b) is not None and theirs.cells.get(b) is not None]
    missing = [b for b in columns if b not in shared]
    out = []
    for label, cells in (("measured", mine.cells), ("paper", theirs.cells)):
        kept = {b: cells[b] for b in columns if b in cells}
        avg = fmean(cells[b] for b in shared) if shared else None
        out.append(Row(mine.backbone, mine.caption_source, kept, avg, missing, label=label))
    diff = {b: mine.cells[b] - theirs.cells[b] for b in shared}
    avg_diff = out[0].avg - out[1].avg if shared else None
    out.append(Row(mine.backbone, mine.caption_source, diff, avg_diff, missing, label="Δ", signed=True))
    return out
