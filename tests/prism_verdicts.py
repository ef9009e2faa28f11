r"""Held-out-style answer/gold pairs with their verdicts under the paper's Prism protocol, written
by hand (not computed by prism/score.py): math-verify equivalence of the \boxed{} inside the
answer model's `<answer>...</answer>`; for chart data (metric `relaxed`) also a number within 5%
of the gold, read x1, x0.01 or x100, or the same text; for infographics (`anls`) also ANLS.

ERROR: the question cannot be scored (its gold cannot be read). `differs` names the entry of
prism.score.DELIBERATE_DIFFERENCES where the released scorer gives another verdict (None: it
gives this one); tests/test_prism_verdicts.py holds both to it, and
benchmarks/prism_agreement.py prints how many verdicts the two share.
"""

from __future__ import annotations

import math

ERROR = "error"
TEN_ELEVENTHS, FIVE_NINTHS = 10 / 11, 5 / 9


def formatted(answer: str) -> str:
    """The reply of an answer model that keeps the protocol's format."""
    return f"<think>The caption says so.</think>\n<answer>The answer is \\boxed{{{answer}}}</answer>"


# (answer inside the box, gold, metric, verdict, differs)
BOXED = [
    # options
    ("B", "B", "exact", 1.0, None),
    (r"\text{B}", "B", "exact", 1.0, None),
    (r"\text{(B)}", "B", "exact", 1.0, None),
    ("b", "B", "exact", 1.0, None),                      # a lowercase letter for option B
    ("(B)", "B", "exact", 1.0, None),
    ("C", "B", "exact", 0.0, None),
    ("A", "B", "exact", 0.0, None),
    ("B. blue", "B", "exact", 0.0, None),                # the box holds more than the option
    ("blue", "B", "exact", 0.0, None),
    ("E", "E", "exact", 1.0, None),
    # numbers, units, commas
    ("12", "12", "exact", 1.0, None),
    ("12.0", "12", "exact", 1.0, None),
    ("13", "12", "exact", 0.0, None),
    ("1,234", "1234", "exact", 1.0, None),
    ("1234", "1,234", "exact", 1.0, None),
    ("1,000,000", "1000000", "exact", 1.0, None),
    ("12 cm", "12", "exact", 1.0, None),
    (r"12\text{ cm}", "12", "exact", 1.0, None),
    ("3.14", "3.14159", "exact", 0.0, None),
    ("-5", "5", "exact", 0.0, None),
    ("\u22125", "-5", "exact", 1.0, None),               # U+2212 minus sign
    ("10^{3}", "1000", "exact", 1.0, None),
    ("2^{10}", "1024", "exact", 1.0, None),
    # x= forms, degrees
    ("x=3", "3", "exact", 1.0, None),
    ("x = 3", "3", "exact", 1.0, None),
    ("x=4", "3", "exact", 0.0, None),
    (r"30^\circ", "30", "exact", 1.0, None),
    (r"60^{\circ}", "60", "exact", 1.0, None),
    (r"45^\circ", "30", "exact", 0.0, None),
    # fractions, roots, constants, Greek letters
    (r"\dfrac{3}{4}", "0.75", "exact", 1.0, None),
    (r"\frac{3}{4}", "0.75", "exact", 1.0, None),
    ("3/4", "0.75", "exact", 1.0, None),
    ("0.75", r"\frac{3}{4}", "exact", 1.0, None),
    (r"\sqrt{8}", r"2\sqrt{2}", "exact", 1.0, None),
    (r"3\sqrt{3}", r"3\sqrt3", "exact", 1.0, None),
    (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}", "exact", 1.0, None),
    (r"\sqrt{3}", r"\sqrt{2}", "exact", 0.0, None),
    ("0.333333", "1/3", "exact", 1.0, None),             # equal at math-verify's 6 decimals
    ("0.3333", "1/3", "exact", 0.0, None),
    ("0.33", "1/3", "exact", 0.0, None),
    ("\u03b1", r"\alpha", "exact", 1.0, None),           # α
    (r"\beta", r"\alpha", "exact", 0.0, None),
    (r"\pi", r"\pi", "exact", 1.0, None),
    (r"\frac{\pi}{2}", r"\frac{1}{2}\pi", "exact", 1.0, None),
    ("x^2+1", "1+x^2", "exact", 1.0, None),
    ("(2, 3)", "(2,3)", "exact", 1.0, None),
    # words
    ("red", "red", "exact", 1.0, None),
    ("Red", "red", "exact", 1.0, None),
    ("yes", "Yes", "exact", 1.0, None),
    ("New York", "new york", "exact", 1.0, None),
    ("blue", "red", "exact", 0.0, None),
    ("The Red", "red", "exact", 0.0, None),
    ("two", "2", "exact", 0.0, None),
    (r"\text{red}", "red", "exact", 1.0, None),
    ("act", "cat", "exact", 0.0, "words_compared_as_text"),
    ("no", "on", "exact", 0.0, "words_compared_as_text"),
    ("dog", "god", "exact", 0.0, None),
    ("york new", "New York", "exact", 0.0, "words_compared_as_text"),
    # golds that cannot be read
    ("5", "", "exact", ERROR, "unparseable_gold_is_an_error"),
    ("5", "$$", "exact", ERROR, "unparseable_gold_is_an_error"),
    ("5", r"\text{}", "exact", ERROR, "unparseable_gold_is_an_error"),
    ("5", r"\text{ }", "exact", ERROR, "unparseable_gold_is_an_error"),
    ("5", r"\text{ }", "relaxed", ERROR, "unparseable_gold_is_an_error"),
    # a gold list: alternatives
    ("c", "['a b', 'c']", "exact", 1.0, "gold_lists_are_alternatives"),
    # chart data: relaxed accuracy
    ("104", "100", "relaxed", 1.0, None),
    ("105", "100", "relaxed", 1.0, None),
    ("95", "100", "relaxed", 1.0, "tolerance_of_gold"),      # 5% of the gold, 5.3% of the prediction
    ("94.9", "100", "relaxed", 0.0, None),
    ("95.3", "100", "relaxed", 1.0, None),
    ("95.1", "100", "relaxed", 1.0, "tolerance_of_gold"),    # 4.9% of the gold, 5.2% of the prediction
    ("105.2", "100", "relaxed", 0.0, "tolerance_of_gold"),   # 5.2% of the gold, 4.9% of the prediction
    ("12 cm", "12", "relaxed", 1.0, None),
    ("45", "0.45", "relaxed", 1.0, None),                # x0.01
    ("0.45", "45", "relaxed", 1.0, None),                # x100
    ("45%", "0.45", "relaxed", 1.0, None),
    ("1,234", "1234", "relaxed", 1.0, None),
    ("2019", "2020", "relaxed", 1.0, None),              # a year is a number too
    ("0", "0", "relaxed", 1.0, None),
    ("1", "0", "relaxed", 0.0, None),
    ("Yes", "yes", "relaxed", 1.0, None),
    (r"\frac{1}{2}", "0.5", "relaxed", 1.0, None),
    ("-5", "5", "relaxed", 0.0, None),
    ("\u22125", "-5", "relaxed", 1.0, None),
    # infographics: ANLS
    ("hello world", "hello world", "anls", 1.0, None),
    ("hello worl", "hello world", "anls", TEN_ELEVENTHS, None),   # 1 edit over 11 characters
    ("Apple", "apple inc", "anls", FIVE_NINTHS, None),           # 4 edits over 9
    ("abc", "abcdefgh", "anls", 0.0, None),                      # 3/8 similar: below 0.5
    ("15", "15", "anls", 1.0, None),
    ("16", "15", "anls", 0.5, None),                             # 1 edit over 2: at the threshold, kept
]

# (whole reply, gold, metric, verdict in reference mode, verdict in lenient mode, differs)
REPLIES = [
    ("</think><answer>\\boxed{B}</answer>", "B", "exact", 1.0, 1.0, None),
    ("<think>\nsee the caption\n</think>\n<answer>The result is \\boxed{12} cm.</answer>", "12", "exact", 1.0, 1.0, None),
    ("</think><answer>\\boxed{\\frac{1}{2}}</answer>", "0.5", "exact", 1.0, 1.0, None),
    # two answer blocks: the box's greedy capture runs on into the second, as the released scorer's does
    ("</think><answer>\\boxed{3}</answer> again: </think><answer>\\boxed{4}</answer>", "4", "exact", 0.0, 1.0, None),
    ("<answer>\\boxed{B}</answer>", "B", "exact", 1.0, 1.0, "think_block_optional"),
    # the format missing: 0 in reference mode, read in lenient mode
    ("\\boxed{B}", "B", "exact", 0.0, 1.0, None),
    ("B", "B", "exact", 0.0, 1.0, None),
    ("(B)", "B", "exact", 0.0, 1.0, None),
    ("The answer is B.", "B", "exact", 0.0, 1.0, None),
    ("Looking at the chart.\nAnswer: 104", "104", "relaxed", 0.0, 1.0, None),
    ("</think><answer>12</answer>", "12", "exact", 0.0, 1.0, None),
    # nothing to read in either mode
    ("</think><answer>\\boxed{12", "12", "exact", 0.0, 0.0, None),
    ("", "12", "exact", 0.0, 0.0, None),
]


def cases() -> list[tuple[str, str, str, object, str | None]]:
    """Every row as (whole reply, gold, metric, reference-mode verdict, differs)."""
    return [(formatted(a), gold, metric, verdict, differs) for a, gold, metric, verdict, differs in BOXED] + \
        [(reply, gold, metric, verdict, differs) for reply, gold, metric, verdict, _, differs in REPLIES]


def reference_verdict(reply: str, gold: str, metric: str):
    """prism/score.py's verdict in reference mode: a score, or ERROR for a gold it cannot read."""
    from prism.score import GoldError, NoAnswer, read_golds, score_reply

    try:
        golds = read_golds(gold, "reference")
    except GoldError:
        return ERROR
    try:
        return score_reply(reply, golds, metric, "reference")
    except NoAnswer:
        return 0.0


def same(a, b) -> bool:
    return a == b if ERROR in (a, b) else math.isclose(a, b, abs_tol=1e-9)


def released_disagreements() -> list[tuple]:
    """The rows where the released scorer's re-implementation gives another verdict than the table."""
    from tests.caprl_released_scorer import released_reward

    return [row for row in cases() if not same(released_reward(*row[:3]), row[3])]
