"""Write the report files of one set of records: the tables first, the figure last, so a plotting
problem can never cost the numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from report.paper import load_paper_table
from report.render import comparisons_csv, comparisons_latex, to_csv, to_latex, to_markdown
from report.table import build_table, compare_with_paper

DEFAULT_TITLE = "CapRL pretraining ablation"


def write_report(records, out_dir: Path, *, paper_csv: Path | Sequence[Path] | None = None,
                 title: str = DEFAULT_TITLE, plots: bool = True, baseline: str | None = None) -> dict[str, Path | str]:
    """table.md/.csv/.tex (+ comparisons.csv/.tex when rows were compared on per-sample scores,
    paper_comparison.md/.csv/.tex when the paper CSV(s) have rows we measured, and benchmarks.png).
    Δ is against the row named `baseline` (default: vanilla). Returns the paths by kind, plus
    "markdown_text": the Markdown to print."""
    from report import prism

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shaped = prism.is_prism(records)   # captioners scored with Prism: the paper's Table 3 shape
    table = prism.prism_table(records) if shaped else build_table(records, baseline=baseline)
    if shaped and title == DEFAULT_TITLE:
        title = prism.TITLE
    markdown = to_markdown(table, title)
    written: dict[str, Path | str] = {
        "markdown": _write(out_dir / "table.md", markdown),
        "csv": _write(out_dir / "table.csv", to_csv(table)),
        "latex": _write(out_dir / "table.tex", to_latex(table, title)),
    }
    if any(r.comparisons for r in table.rows):
        written["comparisons_csv"] = _write(out_dir / "comparisons.csv", comparisons_csv(table))
        written["comparisons_tex"] = _write(out_dir / "comparisons.tex", comparisons_latex(table, title))
    csvs = [] if paper_csv is None else [paper_csv] if isinstance(paper_csv, (str, Path)) else list(paper_csv)
    if csvs:
        printed = {k: v for c in csvs for k, v in prism.printed_avgs(c).items()} if shaped else None
        comparison = compare_with_paper(table, [r for c in csvs for r in load_paper_table(c)], printed)
        if shaped:
            comparison.notes.extend(prism.paper_notes(table))
            comparison.lmms_eval_notes = False
        if comparison.rows:
            heading = f"{title}: measured vs paper ({', '.join(Path(c).name for c in csvs)})"
            compared = to_markdown(comparison, heading)
            written["paper_comparison_md"] = _write(out_dir / "paper_comparison.md", compared)
            written["paper_comparison_csv"] = _write(out_dir / "paper_comparison.csv", to_csv(comparison))
            written["paper_comparison_tex"] = _write(out_dir / "paper_comparison.tex", to_latex(comparison, heading))
            markdown += "\n" + compared
    if plots and table.rows:
        from report.plots import plot_benchmark_bars

        written["bars"] = plot_benchmark_bars(table, out_dir / "benchmarks.png")
    written["markdown_text"] = markdown
    return written


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
