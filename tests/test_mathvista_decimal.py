"""MathVista decimal answers are scored: the harness's process_results wraps lmms-eval 0.7.3's, which
scores every float answer wrong (round() with the data's float precision raises and is caught)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from evaluation.local_tasks import write_thin_task

TASKS = Path(__file__).resolve().parents[1] / "evaluation" / "lmms_tasks"
DOC = {"pid": "7", "question_type": "free_form", "answer_type": "float", "query": "How long is the bar?",
       "choices": None, "answer": "1.5", "precision": 1.0, "metadata": {"split": "testmini"}}


@pytest.fixture
def scoring(monkeypatch):
    # lmms-eval's MathVista module builds its judge client on import; no call is made here (float
    # answers are read without the judge)
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    monkeypatch.setenv("API_TYPE", "openai")
    monkeypatch.syspath_prepend(str(TASKS))
    from lmms_eval.tasks.mathvista.utils import mathvista_process_results
    from mathvista_decimal import process_results

    yield mathvista_process_results, process_results
    sys.modules.pop("mathvista_decimal", None)


@pytest.mark.slow   # importing lmms-eval's MathVista module takes seconds
@pytest.mark.parametrize("answer, precision, said, right", [
    ("1.5", 1.0, "1.5", True), ("1.5", 1.0, "1.50", True), ("1.5", 1.0, "1.4", False),
    ("0.25", 2.0, "0.25", True), ("3.14", 2.0, "3.1416", True), ("3.14", 2.0, "3.15", False),
])
def test_decimal_answers_are_scored(scoring, answer, precision, said, right):
    upstream, ours = scoring
    doc = {**DOC, "answer": answer, "precision": precision}
    assert upstream(doc, [said])["llm_as_judge_eval"]["true_false"] is False   # the defect, every time
    result = ours(doc, [said])["llm_as_judge_eval"]
    assert result["true_false"] is right
    assert result["answer"] == answer and result["question_id"] == "7"


@pytest.mark.slow
def test_integer_and_choice_answers_are_scored_as_before(scoring):
    upstream, ours = scoring
    doc = {**DOC, "answer_type": "integer", "answer": "12", "precision": float("nan")}
    assert ours(doc, ["12"]) == upstream(doc, ["12"])
    assert ours(doc, ["12"])["llm_as_judge_eval"]["true_false"] is True


def test_the_local_copy_uses_the_fixed_scoring(tmp_path):
    local_copy(tmp_path)


def local_copy(tmp_path):
    data = tmp_path / "mathvista.parquet"
    import pandas as pd

    pd.DataFrame([{**DOC, "decoded_image": None, "question": "q", "unit": None, "caption": "", "ocr": "",
                   "choices": None, "metadata": "{}", "image": "a.png", "shot_type": "", "language": "",
                   "source": "", "category": "", "task": "", "context": "", "grade": "", "skills": []}]
                 ).to_parquet(data)
    path = write_thin_task({"benchmark": "MathVista", "task": "mathvista_testmini_format", "local_data": str(data)},
                           tmp_path / "tasks")
    assert path.read_text().splitlines()[-1] == "process_results: !function mathvista_decimal.process_results"
    assert (path.parent / "mathvista_decimal.py").read_text() == (TASKS / "mathvista_decimal.py").read_text()
    return path


@pytest.mark.slow
def test_lmms_eval_reads_the_fixed_scoring_from_the_local_copy(scoring, tmp_path):
    from lmms_eval.utils import load_yaml_config

    config = load_yaml_config(str(local_copy(tmp_path)))
    assert config["process_results"].__module__ == "mathvista_decimal"
    assert config["process_results"](DOC, ["1.5"])["llm_as_judge_eval"]["true_false"] is True


def hub_mathvista() -> dict:
    from evaluation.benchmarks import task_entries
    from tests.test_evaluate import load_set

    (entry,) = [e for e in task_entries(load_set("paper_table1")) if e["benchmark"] == "MathVista"]
    return entry


def test_the_hub_task_runs_as_a_thin_copy_with_the_fixed_scoring(tmp_path):
    """Runs of the hub dataset get the same correction: a copy of the installed task that replaces
    only process_results (the hub data and every other key are the installed YAML's)."""
    hub_copy(tmp_path)


def hub_copy(tmp_path):
    from evaluation.benchmarks import task_yaml_path
    from evaluation.stage import write_local_tasks

    write_local_tasks([hub_mathvista()], tmp_path / "tasks")
    path = tmp_path / "tasks/mathvista_testmini_format_fixed/mathvista_testmini_format_fixed.yaml"
    assert path.read_text().splitlines() == [
        f'include: "{task_yaml_path("mathvista_testmini_format")}"', 'task: "mathvista_testmini_format_fixed"',
        "process_results: !function mathvista_decimal.process_results"]
    assert (path.parent / "mathvista_decimal.py").read_text() == (TASKS / "mathvista_decimal.py").read_text()
    return path


def test_the_hub_command_runs_the_fixed_copy_from_the_stage_folder(tmp_path):
    from evaluation.command import build_command

    env = {"API_TYPE": "openai", "OPENAI_API_KEY": "k", "OPENAI_API_URL": "http://127.0.0.1:9/v1"}
    argv, _ = build_command(tmp_path / "m", tmp_path / "e", benchmarks={"name": "one", "tasks": [hub_mathvista()]},
                            pixels={"min_pixels": 3136, "max_pixels": 12544}, eval_cfg={}, environ=env)
    assert argv[argv.index("--tasks") + 1] == "mathvista_testmini_format_fixed"
    assert argv[argv.index("--include_path") + 1] == str(tmp_path / "e/tasks")


@pytest.mark.slow
def test_lmms_eval_reads_the_fixed_scoring_from_the_hub_copy(scoring, tmp_path):
    from lmms_eval.utils import load_yaml_config

    config = load_yaml_config(str(hub_copy(tmp_path)))
    assert config["dataset_path"] == "AI4Math/MathVista" and config["task"] == "mathvista_testmini_format_fixed"
    assert config["process_results"](DOC, ["1.5"])["llm_as_judge_eval"]["true_false"] is True
