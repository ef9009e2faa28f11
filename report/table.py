"""The ablation table as data: one row per job (backbone, caption source and any other setting that
tells jobs apart; seeds of one recipe averaged), benchmark columns, Avg, the change against the
baseline row (vanilla by default) and the best value per column. Intervals and paired tests
come from report/confidence.py; rendering lives in report/render.py.

A cell is a float (a score), None (the benchmark reported n/a) or absent (never run): the two
kinds of "no number" stay apart and neither is ever counted as 0."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from statistics import fmean

from report.paper import VANILLA, order_benchmarks, order_caption_sources
from report.records import ReportError, latest_records
from report.stats import mean_and_std

AVG = "Avg"


@dataclass
class Row:
    backbone: str
    caption_source: str
    cells: dict[str, float | None]             # benchmark -> score, None = n/a, absent = not run
    avg: float | None = None
    missing: list[str] = field(default_factory=list)  # columns n/a in this row only: left out of its avg
    na_everywhere: list[str] = field(default_factory=list)  # columns no row has a score in: out of every avg
    delta_avg: float | None = None             # against the vanilla row of the same backbone
    delta_partial: bool = False                # either side of delta_avg is a partial Avg
    deltas: dict[str, float] = field(default_factory=dict)
    best: set[str] = field(default_factory=set)  # columns (and "Avg") where this row is best
    label: str = ""                            # "measured" / "paper" / "Δ" in a paper comparison
    signed: bool = False                       # cells are differences: print with a sign
    job: str | None = None                     # the settings that tell this job apart, if any
    seeds: list = field(default_factory=list)  # seeds averaged in this row ([None] = unknown)
    spread: dict[str, float] = field(default_factory=dict)  # std over seeds, per benchmark
    runs: dict[str, list[dict]] = field(default_factory=dict)  # benchmark -> its records, one a seed
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95% interval per cell
    comparisons: dict = field(default_factory=dict)  # benchmark -> confidence.Comparison vs baseline
    delta_interval: tuple[float, float] | None = None  # of delta_avg
    baseline: str | None = None                # name of the row the deltas are against

    @property
    def partial(self) -> bool:
        """The Avg is over fewer benchmarks than the table has: always marked, even when every row
        lacks the same ones (then the rows still compare with each other, but not with an Avg
        over all the columns, such as the paper's)."""
        return bool(self.missing or self.na_everywhere)

    @property
    def name(self) -> str:
        """The caption source, with the job's settings when a sweep varied more than that."""
        return f"{self.caption_source} ({self.job})" if self.job else self.caption_source

    @property
    def significant(self) -> set[str]:
        return {b for b, c in self.comparisons.items() if c.significant}


@dataclass
class Table:
    benchmarks: list[str]
    rows: list[Row]
    show_delta: bool = True                    # the "Δ vs vanilla" column (not in comparisons)
    baseline: str = VANILLA                    # what Δ is against: vanilla, or a chosen row name
    notes: list[str] = field(default_factory=list)  # why some cells have no interval or test
    methods: set[str] = field(default_factory=set)  # interval and test methods used, for the legend
    avg_over: list[str] | None = None          # the columns Avg counts (None: every column)
    legend: str | None = None                  # replaces the standard legend (a Prism table's own)
    lmms_eval_notes: bool = True               # its scores come from lmms-eval (Prism's do not)

    @property
    def has_seeds(self) -> bool:
        return any(len(r.seeds) > 1 for r in self.rows)

    @property
    def has_jobs(self) -> bool:
        return any(r.job for r in self.rows)


def round1(x: float) -> Decimal:
    """One decimal, half up, like a person rounds; round(x, 9) first drops float noise so that
    82.65 (stored as 82.6499999...) becomes 82.7, not 82.6."""
    return Decimal(repr(round(x, 9))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def build_table(records, *, benchmarks: list[str] | None = None, baseline: str | None = None,
                statistics: bool = True, avg_over: list[str] | None = None) -> Table:
    """The table of `records`; Δ against the row named `baseline` in each backbone (default: the
    vanilla row of the same settings). `statistics` adds intervals and paired tests from the
    per-sample logs the records point to. `avg_over`: the columns Avg counts, when a table shows
    more than its Avg is over (Table 3's VisuLogic)."""
    latest = latest_records(records)
    columns = list(benchmarks) if benchmarks is not None else order_benchmarks(r["benchmark"] for r in latest)
    rows = _make_rows(latest, columns)
    counted = [b for b in columns if avg_over is None or b in avg_over]
    valued = [b for b in counted if any(r.cells.get(b) is not None for r in rows)]
    for row in rows:
        _set_avg(row, valued, counted)
    pairs = baseline_pairs(rows, baseline)
    _set_deltas(pairs, columns)
    _mark_best(rows, columns)
    table = Table(columns, rows, baseline=baseline or VANILLA, notes=_seed_notes(rows) + judge_notes(rows),
                  avg_over=None if avg_over is None else counted)
    if statistics:
        from report.confidence import add_statistics

        add_statistics(table, pairs)
    return table


def _make_rows(records: list[dict], columns: list[str]) -> list[Row]:
    """One row per (backbone, caption source, job): its seeds' records side by side per benchmark."""
    backbones: dict[str, dict[tuple, Row]] = {}  # insertion order = first-seen backbone order
    for rec in records:
        if rec["benchmark"] not in columns:
            continue
        group = backbones.setdefault(rec["backbone"], {})
        key = (rec["caption_source"], rec.get("job") or "")
        row = group.setdefault(key, Row(rec["backbone"], rec["caption_source"], {}, job=rec.get("job")))
        row.runs.setdefault(rec["benchmark"], []).append(rec)
    rows = [row for group in backbones.values() for row in _in_paper_order(group)]
    for row in rows:
        _fill_cells(row)
    return rows


def judge_notes(rows: list[Row]) -> list[str]:
    """Who judged the judge-scored cells; when rows were scored by different judges, say that
    their judge columns (and so their Avg) do not compare."""
    judges: dict[str, set[str]] = {}
    for row in rows:
        for bench, recs in row.runs.items():
            for rec in recs:
                if rec.get("judge"):
                    j = rec["judge"]
                    who = f"{j['name']}: {j['model']} (weights {j['weights']}) at {j['base_url']}"
                    judges.setdefault(who, set()).add(bench)
    notes = [f"Judged by {who}: {', '.join(sorted(benches))}" for who, benches in judges.items()]
    if len(judges) > 1:
        notes.append("Rows were scored by different judges: their judge columns and Avg do not compare")
    return notes


def _seed_notes(rows: list[Row]) -> list[str]:
    """A benchmark that some of a row's seeds lack is averaged over fewer seeds: say so."""
    notes = []
    for row in rows:
        for bench, recs in row.runs.items():
            seeds = [rec.get("seed") for rec in recs]
            if len(row.seeds) > 1 and len(seeds) < len(row.seeds):
                shown = ", ".join("?" if s is None else str(s) for s in seeds)
                notes.append(f"{row.backbone} / {row.name} / {bench}: only seed(s) {shown} of this row")
    return notes


def _in_paper_order(group: dict[tuple, Row]) -> list[Row]:
    """Caption sources in the paper's order; jobs of one source by their settings."""
    return [group[key] for source in order_caption_sources(k[0] for k in group)
            for key in sorted(k for k in group if k[0] == source)]


def _fill_cells(row: Row) -> None:
    """Mean over seeds per benchmark, and the std when there are several; a benchmark n/a in any
    seed is n/a for the row, since averaging the others would hide a failed run."""
    row.seeds = sorted({rec.get("seed") for recs in row.runs.values() for rec in recs},
                       key=lambda s: (s is None, s if s is not None else 0))
    for bench, recs in row.runs.items():
        recs.sort(key=lambda rec: (rec.get("seed") is None, rec.get("seed") or 0))
        if any(rec["status"] != "ok" for rec in recs):
            row.cells[bench] = None
            continue
        mean, std = mean_and_std([rec["value"] for rec in recs])
        row.cells[bench] = mean
        if std is not None:
            row.spread[bench] = std


def _set_avg(row: Row, valued: list[str], columns: list[str]) -> None:
    # Only columns where some row has a number count: a benchmark n/a everywhere (no judge) leaves
    # every row comparable with the others, though still partial; one missing in this row only
    # makes its Avg incomparable too.
    present = [row.cells[b] for b in valued if row.cells.get(b) is not None]
    row.avg = fmean(present) if present else None
    row.missing = [b for b in valued if row.cells.get(b) is None]
    row.na_everywhere = [b for b in columns if b not in valued]


def baseline_pairs(rows: list[Row], baseline: str | None) -> list[tuple[Row, Row]]:
    """(row, its baseline row) for every row that has one, within the same backbone. The baseline
    is the row named `baseline` (default: vanilla), as printed ("source (settings)") or by its
    caption source alone: then the one with the same settings, else the only one."""
    target = baseline or VANILLA
    if baseline is not None and not any(target in (r.name, r.caption_source) for r in rows):
        names = ", ".join(dict.fromkeys(r.name for r in rows))
        raise ReportError(f"--baseline {baseline!r} names no row; the rows are: {names}")
    pairs = []
    for row in rows:
        ref = _baseline_of(row, [r for r in rows if r.backbone == row.backbone], target)
        if ref is not None and ref is not row:
            pairs.append((row, ref))
    return pairs


def _baseline_of(row: Row, same_backbone: list[Row], target: str) -> Row | None:
    named = [r for r in same_backbone if r.name == target]
    if len(named) == 1:
        return named[0]
    sources = [r for r in same_backbone if r.caption_source == target]
    matching = [r for r in sources if r.job == row.job]
    return matching[0] if matching else sources[0] if len(sources) == 1 else None


def _set_deltas(pairs: list[tuple[Row, Row]], columns: list[str]) -> None:
    for row, ref in pairs:
        row.baseline = ref.name
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
    if col == AVG:   # an Avg without a column the other rows have never wins
        return None if row.missing else row.avg
    return row.cells.get(col)


def compare_with_paper(table: Table, paper_records, printed_avg: dict | None = None) -> Table:
    """For each measured row the paper also has: measured, paper and their difference, over the
    benchmarks both report. Both Avgs use the same benchmark set, so they are comparable.
    `printed_avg`: (backbone, caption source) -> the Avg the paper prints, shown as the paper's
    when the row has every column of its Avg (recomputing it from rounded cells can miss by 0.1)."""
    paper = build_table(paper_records, statistics=False)
    paper_rows = {(r.backbone, r.caption_source): r for r in paper.rows}
    columns = [b for b in table.benchmarks if b in paper.benchmarks
               and any(r.cells.get(b) is not None for r in table.rows)]
    rows: list[Row] = []
    for mine in table.rows:
        key = (mine.backbone, mine.caption_source)
        if key in paper_rows:
            printed = (printed_avg or {}).get(key)
            rows.extend(_comparison_rows(mine, paper_rows[key], columns, printed, paper.benchmarks))
    return Table(columns, rows, show_delta=False)


def _comparison_rows(mine: Row, theirs: Row, columns: list[str], printed: float | None = None,
                     paper_columns: list[str] = ()) -> list[Row]:
    shared = [b for b in columns if mine.cells.get(b) is not None and theirs.cells.get(b) is not None]
    missing = [b for b in columns if b not in shared]
    whole = printed is not None and set(shared) == set(paper_columns)
    out = []
    for label, cells in (("measured", mine.cells), ("paper", theirs.cells)):
        kept = {b: cells[b] for b in columns if b in cells}
        avg = fmean(cells[b] for b in shared) if shared else None
        if label == "paper" and whole:
            avg = printed
        out.append(Row(mine.backbone, mine.caption_source, kept, avg, missing, label=label, job=mine.job))
    diff = {b: mine.cells[b] - theirs.cells[b] for b in shared}
    avg_diff = out[0].avg - out[1].avg if shared else None
    out.append(Row(mine.backbone, mine.caption_source, diff, avg_diff, missing, label="Δ", signed=True, job=mine.job))
    return out
