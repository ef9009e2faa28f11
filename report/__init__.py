"""The ablation report: normalized evaluation records (results.jsonl) -> the paper's table
(Markdown, CSV, LaTeX) with 95% intervals and paired tests from lmms-eval's per-sample logs
(report/stats.py, report/confidence.py), a comparison with the paper's numbers, and plots.

    python -m harness report results/sweeps/embedded [--baseline ROW] [--paper results/paper/paper_table1.csv]

Plotting functions import matplotlib only when called, so importing this package stays cheap."""

from report.paper import load_paper_table, paper_benchmarks
from report.plots import plot_benchmark_bars, plot_loss_curves
from report.records import ReportError, collect_records, latest_records
from report.render import to_csv, to_latex, to_markdown
from report.table import Row, Table, build_table, compare_with_paper
from report.write import write_report

__all__ = ["ReportError", "Row", "Table", "build_table", "collect_records", "compare_with_paper",
           "latest_records", "load_paper_table", "paper_benchmarks", "plot_benchmark_bars",
           "plot_loss_curves", "to_csv", "to_latex", "to_markdown", "write_report"]
