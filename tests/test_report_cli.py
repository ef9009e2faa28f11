"""The report's command line and figures: `python -m harness report PATH...` prints the table and
writes the files; plots are real PNGs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from report import ReportError, build_table, collect_records, plot_benchmark_bars, plot_loss_curves
from report.cli import loss_curves, main

DATA = Path(__file__).resolve().parent / "data" / "report"
PAPER_T1 = Path(__file__).resolve().parent.parent / "results" / "paper" / "paper_table1.csv"


def write_trainer_state(path: Path, losses: list[float]) -> Path:
    history = [{"step": 10 * (i + 1), "loss": loss, "learning_rate": 1e-3} for i, loss in enumerate(losses)]
    history.append({"step": 10 * len(losses), "eval_loss": 9.9})  # eval entries carry no "loss"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"global_step": 10 * len(losses), "log_history": history}))
    return path


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1024, path


@pytest.fixture
def sweep(tmp_path) -> Path:
    """The fixture sweep copied (so the default out dir lands in tmp), with training logs."""
    root = shutil.copytree(DATA / "sweep", tmp_path / "sweep")
    qwen, internlm = root / "run1_qwen3b" / "train" / "stage1", root / "run2_internlm7b" / "train" / "stage1"
    write_trainer_state(qwen / "trainer_state.json", [2.0, 1.5, 1.2])
    write_trainer_state(qwen / "checkpoint-20" / "trainer_state.json", [2.0, 1.5])
    write_trainer_state(internlm / "checkpoint-10" / "trainer_state.json", [3.0])
    write_trainer_state(internlm / "checkpoint-20" / "trainer_state.json", [3.0, 2.5])
    return root


def test_cli_prints_the_table_and_writes_every_file(sweep, capsys):
    assert main([str(sweep), "--paper", str(PAPER_T1), "--title", "Fixture ablation"]) == 0
    out = capsys.readouterr().out
    assert out.startswith((DATA / "expected" / "table.md").read_text())
    assert "measured vs paper (paper_table1.csv)" in out
    report = sweep / "report"
    for name in ("table.md", "table.csv", "table.tex", "paper_comparison.md", "paper_comparison.csv"):
        assert (report / name).is_file() and str(report / name) in out
    assert_png(report / "benchmarks.png")
    assert_png(report / "loss_curves.png")


def test_paper_tables_can_be_given_together_and_the_comparison_has_latex(sweep, capsys):
    table2 = PAPER_T1.with_name("paper_table2.csv")
    assert main([str(sweep), "--paper", str(PAPER_T1), "--paper", str(table2)]) == 0
    assert "measured vs paper (paper_table1.csv, paper_table2.csv)" in capsys.readouterr().out
    tex = (sweep / "report" / "paper_comparison.tex").read_text()
    assert "\\begin{tabular}" in tex and "CapRL-1M (paper)" in tex and "CapRL-1M ($\\Delta$)" in tex


def test_loss_curves_of_run_folders_are_labelled_by_job_and_stage(tmp_path):
    job = tmp_path / "captions=vanilla"
    model = tmp_path / "store" / "train" / "abc" / "model"
    write_trainer_state(model / "trainer_state.json", [2.0, 1.0])
    (job / "stages").mkdir(parents=True)
    (job / "stages" / "train.sft").symlink_to(model.parent)
    other = tmp_path / "captions=caprl_1m"   # a second job sharing the same stage
    (other / "stages").mkdir(parents=True)
    (other / "stages" / "train.sft").symlink_to(model.parent)
    assert list(loss_curves([job])) == ["sft"]
    assert list(loss_curves([job, other])) == ["captions=vanilla: sft"]   # one line, under the first job


def test_cli_out_dir_and_errors(sweep, tmp_path, capsys):
    assert main([str(sweep / "run1_qwen3b" / "evaluate" / "results.jsonl"), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "table.md").is_file()
    assert "| Qwen2.5-3B+Qwen2.5-ViT | vanilla |" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "no results.jsonl records" in capsys.readouterr().err
    assert main([]) == 2  # argparse usage error, returned rather than exiting


def test_loss_curves_take_one_log_per_training_folder(sweep):
    curves = loss_curves([sweep])
    # a folder's own trainer_state.json beats its checkpoints'; otherwise the newest checkpoint
    assert curves == {
        "run1_qwen3b/train/stage1": sweep / "run1_qwen3b" / "train" / "stage1" / "trainer_state.json",
        "run2_internlm7b/train/stage1":
            sweep / "run2_internlm7b" / "train" / "stage1" / "checkpoint-20" / "trainer_state.json",
    }
    two = loss_curves([sweep / "run1_qwen3b", sweep / "run2_internlm7b"])
    assert sorted(two) == ["run1_qwen3b/train/stage1", "run2_internlm7b/train/stage1"]


def test_plots_are_png_files(tmp_path):
    table = build_table(collect_records([DATA / "sweep"]))  # includes an n/a cell
    assert_png(plot_benchmark_bars(table, tmp_path / "bars.png"))
    state = write_trainer_state(tmp_path / "a" / "trainer_state.json", [2.0, 1.0, 0.5])
    assert_png(plot_loss_curves({"a": state}, tmp_path / "loss.png"))


def test_loss_curve_errors_name_the_file(tmp_path):
    bad = tmp_path / "trainer_state.json"
    bad.write_text("{not json")
    with pytest.raises(ReportError, match="trainer_state.json"):
        plot_loss_curves({"bad": bad}, tmp_path / "loss.png")
    empty = write_trainer_state(tmp_path / "e" / "trainer_state.json", [])
    with pytest.raises(ReportError, match="no loss entries"):
        plot_loss_curves({"empty": empty}, tmp_path / "loss.png")
