"""The Prism report in the shape of the paper's Table 3: its columns in its order, its Avg over
its benchmarks only (a benchmark the Prism files score but Table 3 does not show, VisuLogic, is
shown outside Avg), the paper's printed Avg beside ours, and which scoring mode (prism.scoring)
produced each row, so that rows scored differently are never compared silently."""

from __future__ import annotations

import csv
from pathlib import Path

from report.paper import PRISM_BACKBONE, PRISM_TABLE, paper_benchmarks
from report.table import Table, build_table

TITLE = "Caption quality with Prism (the paper's Table 3)"
REFERENCE = "reference"
UNRECORDED = "unrecorded"


def is_prism(records: list[dict]) -> bool:
    return bool(records) and all(r["backbone"] == PRISM_BACKBONE for r in records)


def table3_columns(names) -> tuple[list[str], list[str]]:
    """(columns, the columns Avg is over): Table 3's in its order, then any other benchmark. With
    none of Table 3's benchmarks (the embedded world's own) Avg is over all of them."""
    table3 = paper_benchmarks(PRISM_TABLE)
    names = set(names)
    shown = [b for b in table3 if b in names]
    others = sorted(names.difference(table3), key=str.casefold)
    return shown + others, shown or others


def printed_avgs(csv_path: Path) -> dict[tuple[str, str], float]:
    """(Prism, captioner) -> the Avg a Table-3 CSV prints."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        return {(PRISM_BACKBONE, row["captioner"]): float(row["Avg"])
                for row in csv.DictReader(fh) if "captioner" in row and (row.get("Avg") or "").strip()}


def prism_table(records: list[dict]) -> Table:
    columns, avg_over = table3_columns(r["benchmark"] for r in records)
    # no intervals: Prism keeps its per-question scores in details.jsonl, not lmms-eval's sample logs
    table = build_table(records, benchmarks=columns, avg_over=avg_over, statistics=False)
    table.show_delta = False   # captioners are compared with each other and the paper, not a baseline
    table.lmms_eval_notes = False
    outside = [b for b in columns if b not in avg_over]
    over = (f"Table 3's {len(avg_over)} benchmark{'s' if len(avg_over) > 1 else ''} shown"
            if set(avg_over) <= set(paper_benchmarks(PRISM_TABLE)) else "every benchmark shown")
    table.legend = (f"**Bold**: best in its column. Each score: the Mean over the N captions of each image "
                    f"(prism_mean). Avg: over {over}. n/a: no score (never counted as 0). —: not run. "
                    f"*: partial Avg, over fewer benchmarks than that.")
    if outside:
        table.notes.append(f"{', '.join(outside)}: scored from the Prism files but not a Table 3 column; shown, "
                           "outside Avg, as in the paper.")
    table.notes.extend(scoring_notes(table))
    return table


def row_modes(table: Table) -> dict[str, list[str]]:
    """Row name -> the scoring modes its records were scored in (usually one)."""
    return {row.name: sorted({rec.get("scoring") or UNRECORDED for recs in row.runs.values() for rec in recs})
            for row in table.rows}


def scoring_notes(table: Table) -> list[str]:
    """Which mode scored each row; rows in different modes lose their best-in-column marks."""
    modes = row_modes(table)
    distinct = sorted({m for ms in modes.values() for m in ms})
    if len(distinct) == 1 and all(len(ms) == 1 for ms in modes.values()):
        return [f"Scored in {distinct[0]} mode (prism.scoring){_meaning(distinct[0])}."]
    for row in table.rows:
        row.best.clear()
    shown = "; ".join(f"{name}: {' + '.join(ms)}" for name, ms in modes.items())
    return [f"Rows scored in different modes are not compared (no best is marked): {shown}. Lenient mode "
            "also reads answers without the paper's format, so its scores are not the paper's protocol."]


def paper_notes(table: Table) -> list[str]:
    """For the paper comparison: rows not scored in the paper's protocol."""
    other = [name for name, ms in row_modes(table).items() if ms != [REFERENCE]]
    if not other:
        return ["Measured rows scored in reference mode, the paper's protocol (with the deliberate differences "
                "of prism/score.py). The paper's Avg is the one it prints."]
    return [f"{', '.join(other)}: not scored in reference mode, the paper's protocol: the difference with the "
            "paper is not the captioner's alone. The paper's Avg is the one it prints."]


def _meaning(mode: str) -> str:
    return {REFERENCE: ", the paper's protocol: its answer format and math-verify, with the deliberate "
                       "differences of prism/score.py",
            "lenient": ", which also reads answers without the paper's format: not the paper's protocol"}.get(mode, "")
