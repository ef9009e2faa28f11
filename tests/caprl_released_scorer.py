"""A re-implementation of the paper authors' released Prism scoring logic (InternLM/CapRL,
Prism_Evaluation/Eval_CapRL.py with openrlhf/models/remote_rm/vqa_eval.py), written from its
published description to measure where prism/score.py's `reference` mode agrees with it.

Kept apart from prism/score.py on purpose (nothing imported from it): this is the yardstick, with
the released scorer's defects in place. Only the table test and benchmarks/prism_agreement.py use it.

    verify_math   the answer is the \\boxed{} of `</think> <answer> ... </answer>` (else ''); the gold
                  is parsed by math-verify as `$gold$` (first match, LaTeX); a gold it reads nothing
                  from scores 1.0; otherwise the better of verify(answer as text, gold) and
                  verify(answer parsed, gold), any error 0
    verify_chart  chart ('char') and infographic ('info') files only: the answer's math-verify text as a
                  number x1 / x0.01 / x100, relaxed accuracy with the 5% measured against the
                  prediction; not a number: the same text, case aside; infographics also ANLS
    a question's reward: chart and infographic files the better of both, others verify_math
"""

from __future__ import annotations

import re

_FORMAT = re.compile(r"</think>\s*<answer>.*?\\boxed{(.*)}.*?</answer>", re.DOTALL)


def math_parse(content: str) -> list:
    from math_verify import LatexExtractionConfig, parse

    return parse(content, extraction_mode="first_match", extraction_config=[LatexExtractionConfig()])


def boxed_answer(content: str) -> str:
    matches = _FORMAT.findall(content)
    return matches[-1] if matches else ""


def verify_math(content: str, sol: str) -> float:
    from math_verify import verify

    gold_parsed = math_parse(sol)
    if not gold_parsed:
        return 1.0
    answer = boxed_answer(content)
    math_answer = math_parse(f"${answer}$")
    try:
        return float(max(float(verify(answer, gold_parsed)), float(verify(math_answer, gold_parsed))))
    except Exception:
        return 0.0


def relaxed_correctness(target: str, prediction: str, max_relative_change: float = 0.05) -> bool:
    def to_float(text):
        text = str(text)
        try:
            return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            return None

    prediction_float, target_float = to_float(prediction), to_float(target)
    if prediction_float is not None and target_float:
        return abs(prediction_float - target_float) / abs(target_float) <= max_relative_change
    return str(prediction).lower() == str(target).lower()


def levenshtein_distance(s1: str, s2: str) -> int:
    if len(s1) > len(s2):
        s1, s2 = s2, s1
    distances = range(len(s1) + 1)
    for i2, c2 in enumerate(s2):
        row = [i2 + 1]
        for i1, c1 in enumerate(s1):
            row.append(distances[i1] if c1 == c2 else 1 + min(distances[i1], distances[i1 + 1], row[-1]))
        distances = row
    return distances[-1]


def anls_compute(groundtruth: str, prediction: str) -> float:
    gt = " ".join(groundtruth.strip().lower().split())
    det = " ".join(prediction.strip().lower().split())
    length = max(len(groundtruth.upper()), len(prediction.upper()))
    return 0.0 if length == 0 else levenshtein_distance(gt, det) / length


def verify_chart(content: str, sol: str, use_anls: bool = False) -> float:
    ground_truth = sol[1:-1]
    answer = boxed_answer(content)
    try:
        student = math_parse(f"${answer}$")[-1]
    except IndexError:
        student = ""
    reward = 0.0
    try:
        pre = float(student)
        for scale in (1, 0.01, 100):
            # the released scorer passes (prediction, gold) as (target, prediction)
            reward = max(reward, float(relaxed_correctness(str(scale * pre).strip(), ground_truth)))
    except (ValueError, TypeError):
        reward = float(relaxed_correctness(str(student).strip(), ground_truth))
    if not use_anls:
        return reward
    similarity = 1 - anls_compute(ground_truth, str(student))
    return max(reward, 0.0 if similarity < 0.5 else similarity)


def released_reward(content: str, gold: str, metric: str) -> float:
    """The reward of one answer-model reply; `metric` stands for the file name's kind: relaxed =
    a chart file, anls = an infographic file, exact = any other."""
    sol = f"${gold}$"
    if metric in ("relaxed", "anls"):
        return max(verify_chart(content, sol, use_anls=metric == "anls"), verify_math(content, sol))
    return verify_math(content, sol)
