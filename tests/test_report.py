"""The ablation table: fixed records -> exact Markdown/CSV, the paper's Avg column reproduced, and
the rules that keep the comparison honest (n/a is not 0, newest record wins, partial Avg marked)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from report import (ReportError, build_table, collect_records, compare_with_paper, load_paper_table,
                    to_csv, to_latex, to_markdown, write_report)
from report.paper import PAPER_BENCHMARKS, PRISM_ONLY_BENCHMARKS, paper_benchmarks
from report.records import KEYS, validate_record
from report.table import round1

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "report"
SWEEP = DATA / "sweep"
PAPER = REPO / "results" / "paper"
QWEN3B = "Qwen2.5-3B+Qwen2.5-ViT"


def rec(source: str, bench: str, value: float | None, *, backbone: str = QWEN3B,
        ts: str = "2025-11-01T00:00:00Z") -> dict:
    return dict.fromkeys(KEYS) | {
        "run": "r", "backbone": backbone, "caption_source": source, "benchmark": bench, "task": "t",
        "metric": "acc", "value": value, "status": "ok" if value is not None else "n/a",
        "reason": None if value is not None else "no judge", "timestamp": ts}


def row(table, source, backbone=QWEN3B):
    return next(r for r in table.rows if r.caption_source == source and r.backbone == backbone)


# --- the fixture, exactly ---------------------------------------------------------------------

def test_fixture_renders_the_hand_written_markdown_and_csv():
    table = build_table(collect_records([SWEEP]))
    assert to_markdown(table, "Fixture ablation") == (DATA / "expected" / "table.md").read_text()
    assert to_csv(table) == (DATA / "expected" / "table.csv").read_text()


def test_fixture_latex_is_a_booktabs_tabular():
    tex = to_latex(build_table(collect_records([SWEEP])), "Fixture ablation")
    assert r"\begin{tabular}{llrrrrr}" in tex and tex.rstrip().endswith(r"\end{tabular}")
    rules = [line for line in tex.splitlines() if line in (r"\toprule", r"\bottomrule")]
    assert rules == [r"\toprule", r"\bottomrule"]
    assert r" & CapRL-1M & \textbf{87.4} & \textbf{78.0} & n/a & 82.7$^{*}$ & +17.8$^{*}$ \\" in tex
    assert r"InternLM2.5-7B+CLIP-ViT-L & vanilla & \textbf{80.0} & 68.7 & 43.1 & 63.9 & -- \\" in tex
    assert r"& $-$0.1 \\" in tex
    assert tex.count(r"\midrule") == 2  # under the header, between the two backbones


# --- the paper's own numbers ------------------------------------------------------------------

def test_paper_table1_avg_column_is_reproduced():
    table = build_table(load_paper_table(PAPER / "paper_table1.csv"))
    with open(PAPER / "paper_table1.csv", newline="") as fh:
        expected = {(r["backbone"], r["caption_source"]): float(r["Avg"]) for r in csv.DictReader(fh)}
    assert len(table.rows) == len(expected) == 15
    for r in table.rows:
        assert not r.partial
        assert abs(float(round1(r.avg)) - expected[(r.backbone, r.caption_source)]) <= 0.1 + 1e-9, r


def test_paper_tables_keep_their_column_and_row_order():
    assert tuple(paper_benchmarks(PAPER / "paper_table1.csv")) == PAPER_BENCHMARKS
    assert tuple(paper_benchmarks(PAPER / "paper_table2.csv")) == PAPER_BENCHMARKS
    prism = paper_benchmarks(PAPER / "paper_table3_prism.csv")
    assert [b for b in prism if b not in PAPER_BENCHMARKS] == list(PRISM_ONLY_BENCHMARKS)
    table = build_table(load_paper_table(PAPER / "paper_table1.csv"))
    assert table.benchmarks == list(PAPER_BENCHMARKS)
    assert [r.caption_source for r in table.rows[:5]] == ["vanilla", "ShareGPT4V-1M", "DenseFusion-1M",
                                                          "CapRL-1M", "CapRL-5M"]
    prism_table = build_table(load_paper_table(PAPER / "paper_table3_prism.csv"), benchmarks=prism)
    assert prism_table.benchmarks == prism and len(prism_table.rows) == 6


def test_compare_with_paper_shows_measured_paper_and_difference():
    paper = load_paper_table(PAPER / "paper_table1.csv")
    measured = [rec("vanilla", "DocVQA", 80.0), rec("vanilla", "ChartQA", 73.7),
                rec("vanilla", "MMVet", None), rec("CapRL-1M", "DocVQA", 87.3),
                rec("Mystery-1M", "DocVQA", 50.0)]  # not in the paper: no comparison row
    comparison = compare_with_paper(build_table(measured), paper)
    assert comparison.benchmarks == ["DocVQA", "ChartQA"]  # MMVet: no measured value anywhere
    labels = [(r.caption_source, r.label) for r in comparison.rows]
    assert labels == [("vanilla", "measured"), ("vanilla", "paper"), ("vanilla", "Δ"),
                      ("CapRL-1M", "measured"), ("CapRL-1M", "paper"), ("CapRL-1M", "Δ")]
    diff = comparison.rows[2]
    assert diff.cells == pytest.approx({"DocVQA": -1.0, "ChartQA": 1.0})
    assert diff.avg == pytest.approx(0.0)
    # CapRL-1M measured DocVQA only: both Avgs use DocVQA alone, and are marked partial
    assert comparison.rows[4].avg == pytest.approx(87.3) and comparison.rows[4].missing == ["ChartQA"]
    md = to_markdown(comparison)
    assert f"| {QWEN3B} | vanilla | Δ | -1.0 | +1.0 | +0.0 |" in md


# --- the rules --------------------------------------------------------------------------------

def test_na_is_never_counted_as_zero():
    table = build_table([rec("vanilla", "A", 60.0), rec("vanilla", "B", None),
                         rec("CapRL-1M", "A", 70.0), rec("CapRL-1M", "B", None)])
    # B is n/a everywhere: the rows still compare with each other (the best Avg is marked), but
    # every Avg is over 1 of the table's 2 benchmarks, so every one is marked partial, and said why
    assert [r.avg for r in table.rows] == [60.0, 70.0] and all(r.partial for r in table.rows)
    assert [r.missing for r in table.rows] == [[], []] and [r.na_everywhere for r in table.rows] == [["B"], ["B"]]
    md = to_markdown(table)
    assert "| vanilla | 60.0 | n/a | 60.0* |" in md and "| CapRL-1M | **70.0** | n/a | **70.0*** |" in md
    assert "- every row: Avg without B (no row has a score there)" in md
    one_na = build_table([rec("vanilla", "A", 60.0), rec("vanilla", "B", 40.0), rec("CapRL-1M", "A", 70.0),
                          rec("CapRL-1M", "B", None)])
    assert row(one_na, "CapRL-1M").avg == 70.0 and row(one_na, "CapRL-1M").missing == ["B"]
    assert "| CapRL-1M | **70.0** | n/a | 70.0* | +20.0* |" in to_markdown(one_na)


def test_delta_vs_vanilla_is_per_backbone():
    other = "Qwen2.5-7B+Qwen2.5-ViT"
    table = build_table([rec("CapRL-1M", "A", 64.0), rec("vanilla", "A", 60.0),
                         rec("CapRL-1M", "A", 50.0, backbone=other), rec("vanilla", "A", 55.0, backbone=other),
                         rec("CapRL-5M", "A", 99.0, backbone="No-vanilla")])
    assert row(table, "CapRL-1M").delta_avg == pytest.approx(4.0)
    assert row(table, "CapRL-1M").deltas == pytest.approx({"A": 4.0})
    assert row(table, "CapRL-1M", other).delta_avg == pytest.approx(-5.0)
    assert row(table, "vanilla").delta_avg is None
    assert row(table, "CapRL-5M", "No-vanilla").delta_avg is None
    assert "| Qwen2.5-7B+Qwen2.5-ViT | CapRL-1M | 50.0 | 50.0 | -5.0 |" in to_markdown(table)


def test_best_is_marked_per_backbone_and_ties_share_it():
    table = build_table([rec("vanilla", "A", 70.04), rec("CapRL-1M", "A", 69.96), rec("CapRL-5M", "A", 50.0),
                         rec("vanilla", "A", 10.0, backbone="Solo")])
    assert row(table, "vanilla").best == {"A", "Avg"} and row(table, "CapRL-1M").best == {"A", "Avg"}
    assert row(table, "CapRL-5M").best == set()
    assert row(table, "vanilla", "Solo").best == set()  # a single number is best of nothing
    assert "| vanilla | **70.0** | **70.0** | — |" in to_markdown(table)
    assert to_csv(table).splitlines()[1].endswith(",A;Avg,")  # best_in, then significant_in


def test_a_partial_avg_is_never_best():
    table = build_table([rec("vanilla", "A", 50.0), rec("vanilla", "B", 10.0),
                         rec("ShareGPT4V-1M", "A", 40.0), rec("ShareGPT4V-1M", "B", 30.0),
                         rec("CapRL-1M", "A", 60.0), rec("CapRL-1M", "B", None)])
    assert row(table, "CapRL-1M").avg == 60.0 and row(table, "CapRL-1M").best == {"A"}
    assert row(table, "ShareGPT4V-1M").best == {"B", "Avg"}  # 35.0 beats vanilla's 30.0, not 60.0*


def test_newest_record_wins_whatever_the_file_order():
    table = build_table([rec("vanilla", "A", 1.0, ts="2025-01-02T00:00:00Z"),
                         rec("vanilla", "A", 2.0, ts="2025-01-01T23:00:00-02:00"),  # 01:00Z on the 2nd
                         rec("vanilla", "A", 3.0, ts="2025-01-01T00:00:00Z")])
    assert table.rows[0].cells == {"A": 2.0}


def test_benchmarks_in_paper_order_then_alphabetical_and_missing_is_not_na():
    table = build_table([rec("vanilla", b, 50.0) for b in ("Zeta", "GQA", "alpha", "InfoVQA", "MMMU")]
                        + [rec("CapRL-1M", "GQA", 60.0)])
    assert table.benchmarks == ["InfoVQA", "GQA", "MMMU", "alpha", "Zeta"]
    assert "| CapRL-1M | — | **60.0** | — | — | — | 60.0* | +10.0* |" in to_markdown(table)
    assert build_table([rec("vanilla", "GQA", 5.0)], benchmarks=["GQA", "X"]).benchmarks == ["GQA", "X"]


def test_caption_sources_in_paper_order_then_alphabetical():
    sources = ["zzz", "CapRL-5M", "Aaa", "CapRL-1M", "DenseFusion-1M", "ShareGPT4V-1M", "vanilla"]
    table = build_table([rec(s, "A", 50.0) for s in sources])
    assert [r.caption_source for r in table.rows] == ["vanilla", "ShareGPT4V-1M", "DenseFusion-1M",
                                                      "CapRL-1M", "CapRL-5M", "Aaa", "zzz"]


# --- reading records --------------------------------------------------------------------------

GOOD = json.dumps(rec("vanilla", "A", 50.0))


@pytest.mark.parametrize("bad", [
    "{not json",
    "[1, 2]",
    json.dumps({k: v for k, v in rec("vanilla", "A", 50.0).items() if k != "timestamp"}),
    json.dumps(rec("vanilla", "A", 50.0) | {"extra": 1}),
    json.dumps(rec("vanilla", "A", 50.0) | {"value": "50"}),
    json.dumps(rec("vanilla", "A", 50.0) | {"value": 0.5e3}),  # not the paper's 0-100 scale
    json.dumps(rec("vanilla", "A", 50.0) | {"status": "n/a"}),  # n/a carrying a number
    json.dumps(rec("vanilla", "A", None) | {"status": "ok"}),
    json.dumps(rec("vanilla", "A", 50.0) | {"status": "failed"}),
    json.dumps(rec("vanilla", "A", 50.0) | {"timestamp": "yesterday"}),
    json.dumps(rec("vanilla", "A", 50.0) | {"n": 1.5}),
    json.dumps(rec("vanilla", "A", 50.0) | {"backbone": ""}),
])
def test_a_malformed_line_names_file_and_line(tmp_path, bad):
    path = tmp_path / "run" / "results.jsonl"
    path.parent.mkdir()
    path.write_text(f"{GOOD}\n\n{bad}\n{GOOD}\n")
    with pytest.raises(ReportError, match=r"results\.jsonl, line 3: ") as info:
        collect_records([tmp_path])
    assert str(path) in str(info.value)


def test_collect_follows_symlinks_and_reads_each_file_once(tmp_path):
    run = tmp_path / "runs" / "a" / "evaluate"
    run.mkdir(parents=True)
    (run / "results.jsonl").write_text(GOOD + "\n")
    (run / "other.jsonl").write_text("ignored: not results.jsonl\n")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "job0").symlink_to(tmp_path / "runs" / "a", target_is_directory=True)
    (sweep / "job1").symlink_to(tmp_path / "runs" / "a", target_is_directory=True)
    (sweep / "loop").symlink_to(sweep, target_is_directory=True)  # must not hang
    assert len(collect_records([sweep])) == 1
    assert len(collect_records([sweep, run / "results.jsonl", tmp_path / "runs"])) == 1
    with pytest.raises(ReportError, match="no such file"):
        collect_records([tmp_path / "absent"])


def test_load_paper_table_records_follow_the_schema():
    records = load_paper_table(PAPER / "paper_table2.csv")
    assert len(records) == 2 * len(PAPER_BENCHMARKS)
    assert all(tuple(r) == KEYS for r in records)
    assert records[0]["value"] == 52.1 and records[0]["task"] is None


# --- writing ----------------------------------------------------------------------------------

def test_write_report_writes_tables_comparison_and_returns_markdown(tmp_path):
    records = collect_records([SWEEP])
    written = write_report(records, tmp_path / "out", paper_csv=PAPER / "paper_table1.csv",
                           title="Fixture ablation", plots=False)
    assert written["markdown"].read_text() == (DATA / "expected" / "table.md").read_text()
    assert written["csv"].read_text() == (DATA / "expected" / "table.csv").read_text()
    assert written["latex"].name == "table.tex"
    compared = written["paper_comparison_md"].read_text()
    # Qwen 3B vanilla: measured 81.0 vs paper 81.0, 72.7 vs 72.7, 41.0 vs 41.0
    assert f"| {QWEN3B} | vanilla | Δ | +0.0 | +0.0 | +0.0 | +0.0 |" in compared
    # InternLM ShareGPT4V MMVet: 48.0 measured vs 43.3 in the paper
    assert "| InternLM2.5-7B+CLIP-ViT-L | ShareGPT4V-1M | Δ | +0.0 | +0.0 | +4.7 |" in compared
    assert written["paper_comparison_csv"].exists()
    assert written["markdown_text"].startswith((DATA / "expected" / "table.md").read_text())


def test_no_comparison_files_when_the_paper_has_none_of_our_rows(tmp_path):
    written = write_report([rec("synthetic_dense", "A", 50.0)], tmp_path, paper_csv=PAPER / "paper_table1.csv",
                           plots=False)
    assert "paper_comparison_md" not in written and not (tmp_path / "paper_comparison.md").exists()


def test_the_judge_of_judged_cells_is_named_and_different_judges_are_said():
    small = {"name": "loopback", "model": "judge", "weights": "Qwen/Qwen2.5-0.5B-Instruct",
             "base_url": "http://127.0.0.1:8011/v1"}
    big = {**small, "model": "big", "weights": "Qwen/Qwen2.5-72B-Instruct"}
    table = build_table([rec("vanilla", "A", 60.0), rec("vanilla", "MMVet", 30.0) | {"judge": small},
                         rec("CapRL-1M", "A", 70.0), rec("CapRL-1M", "MMVet", 40.0) | {"judge": small}])
    md = to_markdown(table)
    assert "- Judged by loopback: judge (weights Qwen/Qwen2.5-0.5B-Instruct) at http://127.0.0.1:8011/v1: MMVet" in md
    assert "different judges" not in md
    mixed = build_table([rec("vanilla", "MMVet", 30.0) | {"judge": small}, rec("CapRL-1M", "MMVet", 40.0) | {"judge": big}])
    assert ("- Rows were scored by different judges: their judge columns and Avg do not compare"
            in to_markdown(mixed))
    with pytest.raises(ValueError, match="'judge' must be null or"):
        validate_record(rec("vanilla", "MMVet", 30.0) | {"judge": {"name": "x"}})
