"""Prism's answer reading and scoring on known cases, the per-benchmark Mean and best-of-N, the
unparseable-gold rule, and the Prism file reader's errors."""

from __future__ import annotations

import json

import pytest

from prism.aggregate import benchmark_records, question_detail
from prism.files import PrismFileError, Question, read_questions, split_prompt
from prism.score import GoldError, NoAnswer, anls, exact, extract_answer, gold_answers, relaxed, score_reply
from report.records import validate_record


@pytest.mark.parametrize("reply,answer", [
    ("The chart shows 12 bars. So the answer is \\boxed{12}.", "12"),
    ("\\boxed{3} first, then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),          # the last box, nested braces
    ("</think> <answer>The result is \\boxed{B}</answer>", "B"),
    ("<answer> blue </answer>", "blue"),
    ("Looking at the caption...\nAnswer: 42.", "42"),
    ("I think the final answer is red", "red"),
    ("Red.", "Red"),
    ("(C)", "(C)"),
])
def test_answers_are_read_with_and_without_a_box(reply, answer):
    assert extract_answer(reply) == answer


@pytest.mark.parametrize("reply", ["", "   ", "The caption does not say anything about the colour of it.\nSorry.",
                                   "\\boxed{12"])
def test_a_reply_without_an_answer_is_no_answer(reply):
    with pytest.raises(NoAnswer, match="no \\\\boxed"):
        extract_answer(reply)


@pytest.mark.parametrize("pred,gold,score", [
    ("B", "B", 1.0), ("(B)", "B", 1.0), ("B. blue", "B", 1.0), ("b", "B", 0.0), ("C", "B", 0.0),
    ("blue", "B", 0.0),                                     # an option question wants the letter
    ("The Red", "red", 1.0), ("two", "2", 1.0), ("1,234", "1234", 1.0), ("0.5", "1/2", 1.0),
    ("\\frac{1}{2}", "0.5", 1.0), ("12", "12.0", 1.0), ("13", "12", 0.0), ("green", "red", 0.0),
])
def test_exact_and_option_match(pred, gold, score):
    assert exact(pred, gold) == score


@pytest.mark.parametrize("pred,gold,score", [
    ("104", "100", 1.0), ("105", "100", 1.0), ("105.1", "100", 0.0), ("95", "100", 1.0), ("94.9", "100", 0.0),
    ("45", "0.45", 1.0),            # a percentage given as a number (x0.01)
    ("45%", "0.45", 1.0), ("0.45", "45", 1.0),   # x100
    ("0", "0", 1.0), ("1", "0", 0.0), ("Yes", "yes", 1.0), ("no", "yes", 0.0),
])
def test_relaxed_accuracy_has_five_percent_tolerance(pred, gold, score):
    assert relaxed(pred, gold) == score


def test_anls_scores_near_misses_and_zeroes_below_one_half():
    assert anls("hello world", "hello world") == 1.0
    assert anls("hello worl", "hello world") == pytest.approx(1 - 1 / 11)
    assert anls("Hello  World", "hello world") == 1.0                  # case and spaces
    assert anls("abc", "abcdefgh") == 0.0                               # similarity 3/8 < 0.5
    assert anls("102", "100") == 1.0                                    # a number within 5% (relaxed)


@pytest.mark.parametrize("gold,golds", [("red", ["red"]), (" $12$ ", ["12"]), (7, ["7"]), (2.5, ["2.5"]),
                                        ("['a b', 'c']", ["a b", "c"]), (["x", 3], ["x", "3"]), ("A", ["A"])])
def test_gold_answers_that_parse(gold, golds):
    assert gold_answers(gold) == golds


@pytest.mark.parametrize("gold", [None, "", "  ", "$$", "[1, 2", [], {"a": 1}, True, "?!"])
def test_gold_answers_that_do_not_parse_are_errors(gold):
    with pytest.raises(GoldError):
        gold_answers(gold)


def test_score_reply_takes_the_best_gold():
    assert score_reply("\\boxed{c}", ["a b", "c"], "exact") == 1.0
    assert score_reply("\\boxed{d}", ["a b", "c"], "exact") == 0.0


# ---------------------------------------------------------------- aggregation

def q(qid, answer, bench="B1"):
    return Question(bench, qid, f"{qid}.png", "What?", None, answer)


def test_mean_over_n_and_best_of_n_with_errors_left_out():
    details = [
        question_detail(q("1", "red"), ["\\boxed{red}", "\\boxed{blue}", "no idea at all, the caption says nothing", "red"],
                        "exact", "lenient"),                                       # 1, 0, 0 (no answer), 1
        question_detail(q("2", "3"), ["\\boxed{3}"] * 4, "exact", "lenient"),    # 1, 1, 1, 1
        question_detail(q("3", ""), ["\\boxed{3}"] * 4, "exact", "lenient"),     # gold unparseable
        question_detail(q("4", "4"), [None, None, None, None], "exact", "lenient"),  # nothing answered
    ]
    assert details[0]["scores"] == [1.0, 0.0, 0.0, 1.0] and details[0]["no_answer"] == 1
    assert details[0]["answers"] == ["red", "blue", None, "red"] and details[0]["scoring"] == "lenient"
    assert details[2]["error"].startswith("unparseable gold") and details[2]["scores"] == []
    c = {"benchmarks": [{"name": "B1", "file": "/x/lmm_eval_b1.json", "metric": "exact"}], "samples": 4,
         "scoring": "lenient", "meta": {"run": "prism/cap", "caption_source": "Cap"}}
    mean, best = benchmark_records(details, c, "Prism", "2026-11-30T00:00:00Z")
    assert mean[0]["value"] == 75.0          # (0.5 + 1.0) / 2
    assert best[0]["value"] == 100.0         # (1 + 1) / 2
    assert mean[0]["n"] == best[0]["n"] == 2
    assert mean[0]["reason"] == ("1 question with an unparseable gold answer not scored; 1 question without any "
                                 "answer not scored; 1 answer with no extractable value scored 0 (details.jsonl)")
    assert (mean[0]["metric"], best[0]["metric"], mean[0]["task"]) == ("prism_mean", "prism_best_of_4",
                                                                       "prism:lmm_eval_b1.json")
    assert {r["scoring"] for r in mean + best} == {"lenient"}     # every result says how it was scored
    for record in mean + best:
        validate_record(record)              # the report reads them like evaluation records


def test_a_benchmark_with_no_scorable_question_is_na_not_zero():
    c = {"benchmarks": [{"name": "B1", "file": "f.json", "metric": "exact"}], "samples": 4,
         "meta": {"run": "r", "caption_source": "Cap"}}
    mean, _ = benchmark_records([question_detail(q("1", None), ["\\boxed{1}"], "exact")], c, "Prism", "2026-11-30T00:00:00Z")
    assert (mean[0]["status"], mean[0]["value"], mean[0]["n"]) == ("n/a", None, 0)
    validate_record(mean[0])


# ---------------------------------------------------------------- Prism files

VISION = "<|vision_start|><|image_pad|><|vision_end|>"


def write(tmp_path, rows, name="lmm_eval_x.json"):
    (tmp_path / "bench_image_folder").mkdir(exist_ok=True)
    (tmp_path / "bench_image_folder" / "a.png").write_bytes(b"png")
    path = tmp_path / name
    path.write_text(json.dumps(rows))
    return path


def test_rows_in_the_published_layout_are_read(tmp_path):
    prompt = f"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{VISION}How many?<|im_end|>\n<|im_start|>assistant\n"
    rows = [{"image": "bench_image_folder/a.png", "prompt": prompt, "answer": "3"},
            {"id": "q7", "image": [{"role": "user", "content": [{"type": "image", "image": "bench_image_folder/a.png"}]}],
             "prompt": "<image>\nWhat colour?", "answer": "red"}]
    qs = read_questions("X", write(tmp_path, rows), tmp_path)
    assert qs == [Question("X", "0", "bench_image_folder/a.png", "How many?", "Be brief.", "3"),
                  Question("X", "q7", "bench_image_folder/a.png", "What colour?", None, "red")]


def test_a_row_without_a_field_names_file_row_and_key(tmp_path):
    path = write(tmp_path, [{"image": "bench_image_folder/a.png", "prompt": "Q?", "answer": "1"},
                            {"image": "bench_image_folder/a.png", "prompt": "Q?"}])
    with pytest.raises(PrismFileError, match=rf"Prism file {path}, row 1: missing field answer \(a row needs "
                                             r"image, prompt, answer; it has image, prompt\)"):
        read_questions("X", path, tmp_path)


def test_an_image_that_does_not_exist_names_file_row_and_key(tmp_path):
    path = write(tmp_path, [{"image": "bench_image_folder/nope.png", "prompt": "Q?", "answer": "1"}])
    with pytest.raises(PrismFileError, match=rf"{path}, row 0, key 'image': bench_image_folder/nope.png does not "
                                             rf"exist under image_root {tmp_path}"):
        read_questions("X", path, tmp_path)


def test_a_template_prompt_without_its_image_slot_is_refused():
    with pytest.raises(PrismFileError, match=r"row 3, key 'prompt': the user turn has no image placeholder"):
        split_prompt("<|im_start|>user\nHow many?<|im_end|>", "row 3, key 'prompt'")


def test_a_missing_prism_file_is_named(tmp_path):
    with pytest.raises(PrismFileError, match=rf"Prism file {tmp_path}/nope.json: No such file"):
        read_questions("X", tmp_path / "nope.json", tmp_path)


def test_prism_records_of_a_paper_captioner_sit_beside_table_3(tmp_path):
    from report.paper import PRISM_TABLE
    from report.write import write_report

    base = {"run": "prism/caprl_3b", "backbone": "Prism", "caption_source": "CapRL-3B", "metric": "prism_mean",
            "n": 10, "status": "ok", "reason": None, "lmms_eval_version": None, "model_args": None,
            "timestamp": "2026-11-30T00:00:00Z"}
    records = [{**base, "benchmark": "ChartQA", "task": "prism:lmm_eval_chartqa.json", "value": 70.25},
               {**base, "benchmark": "InfoVQA", "task": "prism:lmm_eval_infovqa.json", "value": 60.0}]
    written = write_report(records, tmp_path, paper_csv=[PRISM_TABLE], plots=False)
    lines = written["paper_comparison_md"].read_text().splitlines()
    # Table 3's column order: ChartQA before InfoVQA
    assert any("| paper |" in line and "| 80.5 | 64.8 |" in line for line in lines)              # Table 3
    assert any("measured" in line and "| 70.3 | 60.0 |" in line for line in lines)              # ours


def test_reference_mode_reads_only_the_answer_format_and_says_so_in_the_details():
    formatted = "<think>red, per the caption</think><answer>\\boxed{\\text{Red}}</answer>"
    d = question_detail(q("1", "red"), [formatted, "\\boxed{red}", "red"], "exact")   # reference is the default
    assert (d["scoring"], d["answers"], d["scores"], d["no_answer"]) == ("reference", ["\\text{Red}", None, None],
                                                                         [1.0, 0.0, 0.0], 2)


def test_reference_mode_makes_a_gold_math_verify_cannot_read_an_error():
    d = question_detail(q("1", "\\text{ }"), ["</think><answer>\\boxed{5}</answer>"], "exact", "reference")
    assert d["error"] == "unparseable gold: gold answer '\\\\text{ }': math-verify reads nothing from it"
    assert question_detail(q("1", "\\text{ }"), ["\\boxed{5}"], "exact", "lenient")["error"] is None


@pytest.mark.parametrize("scoring,found", [("reference", []), ("lenient", []), (None, []), ("strict", [
    "prism.scoring='strict'; choose one of reference, lenient (reference: the paper's answer format and "
    "math-verify; lenient: also bare answers)"])])
def test_the_scoring_mode_is_checked_before_any_work(scoring, found):
    from prism.stage import problems

    ep = {"name": "c", "model": "m", "base_url": "http://127.0.0.1:1/v1"}
    prism = {"name": "x", "label": "x", "image_root": "/r", "samples": 4, "answer_prompt": "{caption}",
             "benchmarks": [{"name": "B", "file": "f", "metric": "exact"}], "answerer": ep, "scoring": scoring}
    assert problems({"pipeline": "prism", "prism": prism, "captioner": ep}) == found
