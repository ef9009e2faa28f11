"""The Prism report has the paper's Table 3 shape: its columns in its order, Avg over its 11
benchmarks (VisuLogic shown outside it), the paper's printed Avg, no baseline column, and the
scoring mode of every row, with rows of different modes never compared silently."""

from __future__ import annotations

from report.paper import PRISM_TABLE
from report.records import KEYS, validate_record
from report.write import write_report

# CapRL-3B's Table 3 cells (results/paper/paper_table3_prism.csv), typed by hand
CAPRL_3B = {"ChartQA": 80.5, "ChartQA-Pro": 39.9, "InfoVQA": 64.8, "MMMU-Pro": 30.7, "MathVerse": 36.4,
            "CharXiv": 32.4, "WeMath": 60.1, "MathVision": 23.4, "MMStar": 55.0, "SEED": 70.6, "MMMU": 38.1}
HEADER = ("| Backbone | Caption source | ChartQA | ChartQA-Pro | InfoVQA | MMMU-Pro | MathVerse | CharXiv | WeMath "
          "| MathVision | MMStar | SEED | MMMU | VisuLogic | Avg |")


def prism_rec(captioner: str, bench: str, value: float, scoring: str = "reference") -> dict:
    return validate_record(dict.fromkeys(KEYS) | {
        "run": f"prism/{captioner}", "backbone": "Prism", "caption_source": captioner, "benchmark": bench,
        "task": "prism:x.json", "metric": "prism_mean", "value": value, "n": 10, "status": "ok",
        "timestamp": "2026-12-01T00:00:00Z", "scoring": scoring})


def caprl_3b(scoring: str = "reference") -> list[dict]:
    # VisuLogic first: the order records arrive in must not decide the columns
    return [prism_rec("CapRL-3B", "VisuLogic", 20.0, scoring)] + \
        [prism_rec("CapRL-3B", b, v, scoring) for b, v in CAPRL_3B.items()]


def test_the_prism_table_has_table_3s_columns_avg_and_printed_paper_avg(tmp_path):
    md = write_report(caprl_3b(), tmp_path, paper_csv=[PRISM_TABLE], plots=False)["markdown_text"]
    lines = md.splitlines()
    assert lines[0] == "# Caption quality with Prism (the paper's Table 3)"
    assert lines[2] == HEADER
    # Avg = 531.9 / 11 = 48.35 -> 48.4 (with VisuLogic it would be 46.0)
    assert lines[4] == ("| Prism | CapRL-3B | 80.5 | 39.9 | 64.8 | 30.7 | 36.4 | 32.4 | 60.1 | 23.4 | 55.0 | 70.6 "
                        "| 38.1 | 20.0 | 48.4 |")
    assert ("- VisuLogic: scored from the Prism files but not a Table 3 column; shown, outside Avg, as in the "
            "paper.") in lines
    assert any(line.startswith("- Scored in reference mode (prism.scoring), the paper's protocol") for line in lines)
    # the paper's Avg is the one it prints (48.3), not 48.4 recomputed from its rounded cells
    paper_row = next(line for line in lines if line.startswith("| Prism | CapRL-3B | paper |"))
    assert paper_row.endswith("| 38.1 | 48.3 |")
    delta_row = next(line for line in lines if line.startswith("| Prism | CapRL-3B | Δ |"))
    assert delta_row.endswith("| +0.0 | +0.1 |")
    assert "Δ vs" not in md and "vanilla" not in md and "pretraining" not in md


def test_rows_scored_in_different_modes_are_not_compared_silently(tmp_path):
    records = caprl_3b() + [prism_rec("Qwen2.5-VL-3B", b, v + 1, "lenient") for b, v in CAPRL_3B.items()]
    md = write_report(records, tmp_path, paper_csv=[PRISM_TABLE], plots=False)["markdown_text"]
    assert ("- Rows scored in different modes are not compared (no best is marked): CapRL-3B: reference; "
            "Qwen2.5-VL-3B: lenient.") in md
    assert "**" not in md.split("\n\n")[1]                    # no best marked in the table itself
    assert ("- Qwen2.5-VL-3B: not scored in reference mode, the paper's protocol: the difference with the paper "
            "is not the captioner's alone. The paper's Avg is the one it prints.") in md


def test_the_embedded_worlds_own_benchmarks_average_over_all_of_them(tmp_path):
    records = [prism_rec("Tiny", b, v, "lenient") for b, v in (("SynthShapes", 50.0), ("SynthChoice", 25.0))]
    md = write_report(records, tmp_path, plots=False)["markdown_text"]
    assert "| Prism | Tiny | 25.0 | 50.0 | 37.5 |" in md
    assert "Avg: over every benchmark shown" in md and "outside Avg" not in md


def test_no_lmms_eval_scoring_note_on_a_prism_table(tmp_path):
    md = write_report(caprl_3b(), tmp_path, paper_csv=[PRISM_TABLE], plots=False)["markdown_text"]
    assert "lmms-eval" not in md      # Prism scores its answers itself: MMStar's lmms-eval note does not apply
