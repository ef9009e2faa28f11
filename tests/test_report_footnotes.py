"""Report footnotes on how a column is scored, and per-sample logs of local task copies."""

from __future__ import annotations

from report import build_table, to_latex, to_markdown
from report.footnotes import Footnote, footnotes_for
from report.records import KEYS
from report.samples import find_samples_file


def rec(bench: str, value: float) -> dict:
    return dict.fromkeys(KEYS) | {
        "run": "r", "backbone": "B", "caption_source": "vanilla", "benchmark": bench, "task": "t",
        "metric": "acc", "value": value, "status": "ok", "reason": None, "timestamp": "2025-11-01T00:00:00Z"}


def test_scoring_footnotes_name_only_the_tables_columns():
    assert footnotes_for(["GQA", "SynthVQA"]) == []
    texts = footnotes_for(["MMStar", "GQA"])
    assert len(texts) == 1 and texts[0].startswith("MMStar: the score is lmms-eval's `average`, the unweighted "
                                                   "mean of the sub-category (l2_category) means")
    assert [t.split(":")[0] for t in footnotes_for(["MMStar", "RealWorldQA", "MathVista"])] == \
        ["MathVista", "RealWorldQA", "MMStar"]


def test_a_judge_footnote_is_one_more_entry():
    judge = Footnote(("MMVet", "MathVista"), "MMVet, MathVista: judged by qwen2.5-7b-instruct at http://127.0.0.1:9")
    assert footnotes_for(["MMVet"], extra=[judge]) == [judge.text]
    assert footnotes_for(["GQA"], extra=[judge]) == []


def test_markdown_and_latex_carry_the_scoring_footnotes():
    table = build_table([rec("MMStar", 40.0), rec("GQA", 50.0)])
    md = to_markdown(table)
    assert "\nScoring:\n- MMStar: the score is lmms-eval's `average`" in md
    assert "\n% MMStar: the score is lmms-eval's `average`" in to_latex(table)
    assert "Scoring:" not in to_markdown(build_table([rec("GQA", 50.0)]))


def test_samples_of_a_local_task_copy_are_found(tmp_path):
    logs = tmp_path / "lmms_eval" / "model"
    logs.mkdir(parents=True)
    old = logs / "20251101_100000_samples_mmstar.jsonl"
    local = logs / "20251101_110000_samples_mmstar_local.jsonl"
    other = logs / "20251101_120000_samples_mmstar_localized.jsonl"   # another task's name
    for p in (old, local, other):
        p.write_text("{}\n")
    assert find_samples_file(tmp_path, "mmstar") == local
    local.unlink()
    assert find_samples_file(tmp_path, "mmstar") == old
