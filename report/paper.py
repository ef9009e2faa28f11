"""The paper's labels and orderings, and its tables (results/paper/*.csv) read as records, so that
the same table code renders the paper's numbers and ours."""

from __future__ import annotations

import csv
from pathlib import Path

from report.records import KEYS, ReportError

# The paper's tables shipped with the project, compared with every run's and sweep's report.
PAPER_DIR = Path(__file__).resolve().parent.parent / "results" / "paper"
PAPER_TABLES = (PAPER_DIR / "paper_table1.csv", PAPER_DIR / "paper_table2.csv")
PRISM_TABLE = PAPER_DIR / "paper_table3_prism.csv"   # caption quality (Prism): captioners, not backbones
# Column order of paper_table1.csv / paper_table2.csv (tests check it against the CSV header).
PAPER_BENCHMARKS = ("InfoVQA", "DocVQA", "ChartQA", "RealWorldQA", "MathVista", "SEED2Plus",
                    "MME-RealWorld", "MMBench", "MMStar", "MMVet", "AI2D", "GQA")
# Prism caption-quality columns (paper_table3_prism.csv) that Table 1 does not have, in CSV order.
PRISM_ONLY_BENCHMARKS = ("ChartQA-Pro", "MMMU-Pro", "MathVerse", "CharXiv", "WeMath", "MathVision",
                         "SEED", "MMMU")
CAPTION_SOURCES = ("vanilla", "ShareGPT4V-1M", "DenseFusion-1M", "CapRL-1M", "CapRL-5M")
VANILLA = "vanilla"
PRISM_BACKBONE = "Prism"  # Table 3 has captioners, not backbones: all its rows form one group
_ID_COLUMNS = ("backbone", "caption_source", "captioner")
_DERIVED = ("Avg",)  # recomputed by the table code, never read back as a benchmark


def order_benchmarks(names) -> list[str]:
    known = PAPER_BENCHMARKS + PRISM_ONLY_BENCHMARKS
    names = set(names)
    return [b for b in known if b in names] + sorted(names.difference(known), key=str.casefold)


def order_caption_sources(names) -> list[str]:
    names = set(names)
    return [s for s in CAPTION_SOURCES if s in names] + sorted(names.difference(CAPTION_SOURCES), key=str.casefold)


def paper_benchmarks(csv_path: Path) -> list[str]:
    """The benchmark columns of a paper CSV in its own order (to render a table exactly like it)."""
    with open(csv_path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    return [c for c in header if c not in _ID_COLUMNS + _DERIVED]


def load_paper_table(csv_path: Path) -> list[dict]:
    """Each cell of a paper CSV as a record of the results.jsonl schema (empty cell -> n/a).

    Fields the paper does not give (task split, lmms-eval version, timestamp) stay null rather
    than being guessed."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [rec for line, row in enumerate(rows, start=2) for rec in _row_records(csv_path, line, row)]


def _row_records(csv_path: Path, line: int, row: dict) -> list[dict]:
    if "backbone" in row:
        backbone, source = row["backbone"], row["caption_source"]
    elif "captioner" in row:
        backbone, source = PRISM_BACKBONE, row["captioner"]
    else:
        raise ReportError(f"{csv_path}: needs backbone,caption_source or captioner columns")
    records = []
    for bench in paper_benchmarks(csv_path):
        cell = (row.get(bench) or "").strip()
        try:
            value = float(cell) if cell and cell.lower() != "n/a" else None
        except ValueError:
            raise ReportError(f"{csv_path}, line {line}: {bench} is not a number: {cell!r}") from None
        records.append(dict.fromkeys(KEYS) | {
            "run": f"paper/{csv_path.stem}", "backbone": backbone, "caption_source": source,
            "benchmark": bench, "metric": "paper", "value": value,
            "status": "ok" if value is not None else "n/a"})
    return records
