"""Reading an answer out of a reply and scoring it against the gold answer (Prism, paper Table 3).

Two scoring modes (`prism.scoring`, recorded with every result):
    reference  the paper's protocol: the answer is the \\boxed{} inside the reply's
               `<answer>...</answer>`, nothing else; equivalence by math-verify (options, numbers,
               LaTeX, units and degrees alike), and for chart and infographic data the better of
               that and relaxed accuracy / ANLS, as the released scorer computes them; except the
               deliberate differences listed in DELIBERATE_DIFFERENCES
    lenient    also reads a bare \\boxed{}, an "Answer: X" line or a short reply, and compares
               options, numbers and words directly: for answer models that ignore the format

Metrics (per benchmark, configs/hydra/prism/), as lenient mode compares:
    exact    option letter when the gold is one (A-J), else numbers compared as numbers, else the
             VQA normalisation (case, punctuation, articles, number words) on both sides
    relaxed  chart and infographic data: a number within 5% of the gold (also read as a
             percentage or a fraction, the x1 / x0.01 / x100 scales of the reference scorer),
             otherwise as `exact`
    anls     InfoVQA: the better of `relaxed` and ANLS (normalised Levenshtein similarity, 0 below 0.5)
Reference mode takes the same metric names to mean: math-verify only; math-verify or relaxed
accuracy; math-verify, relaxed accuracy or ANLS.

A gold answer that cannot be read is a GoldError: the question is counted and reported as an
error, never scored. A reply with nothing to read is a NoAnswer: that answer scores 0 and is counted.
"""

from __future__ import annotations

import ast
import re
import threading
from functools import lru_cache
from typing import Any

METRICS = ("exact", "relaxed", "anls")
SCORING_MODES = ("reference", "lenient")
DEFAULT_SCORING = "reference"
# Where `reference` mode deliberately departs from the paper's released scorer, one line of reason
# each (a test shows each one); everything else follows it.
DELIBERATE_DIFFERENCES = {
    "tolerance_of_gold": "relaxed accuracy's 5% is of the gold (ChartQA's definition); the released scorer "
                         "measures it against the prediction, so an over-estimate passes more easily",
    "unparseable_gold_is_an_error": "a gold math-verify reads nothing from is an error, never scored; the released "
                                    "scorer gives it 1.0, which raises every captioner alike and hides broken rows",
    "words_compared_as_text": "answers of words (two letters or more) are compared as text, case and spaces "
                              "aside; math-verify reads them as products of commuting symbols (act = cat, "
                              "no = on)",
    "think_block_optional": "the <answer> tag need not follow a </think>: an OpenAI-compatible server may "
                            "return the reasoning apart from the content (vLLM's reasoning parser)",
    "gold_lists_are_alternatives": "a gold given as a list is a set of accepted answers, each tried; the released "
                                   "scorer reads the printed list as one expression",
}
RELAXED_TOLERANCE = 0.05
ANLS_THRESHOLD = 0.5
_LETTERS = "ABCDEFGHIJ"
_OPTION = re.compile(r"^\(?([A-J])\)?(?:[.):]\s*.*)?$", re.DOTALL)
_ANSWER_LINE = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*(.+)", re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# The reference protocol's answer format: the last `<answer> ... \\boxed{X} ... </answer>`, X
# greedy up to the tag's last closing brace, as the released scorer reads it.
_ANSWER_FORMAT = re.compile(r"<answer>.*?\\boxed{(.*)}.*?</answer>", re.DOTALL)
_WORDS = re.compile(r"[^\W\d_]+(?:[\s'-]+[^\W\d_]+)*")
_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|mathrm|mbox)\{(.*)\}$", re.DOTALL)
_CHART_SCALES = (1, 0.01, 100)
_VERIFY_SECONDS = 5
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_SHORT_REPLY_WORDS = 5


class GoldError(ValueError):
    """The gold answer cannot be read: the question is an error, not a score."""


class NoAnswer(ValueError):
    """Nothing in the reply reads as an answer."""


# ---------------------------------------------------------------- reading the reply

def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (nested braces included), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed{") - 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j].strip()
    return None   # unbalanced: the reply was cut off inside the box


def extract_answer(reply: str) -> str:
    """The answer a reply gives: its last \\boxed{}, else its <answer> tag, else an "Answer: X" /
    "the answer is X" line, else the whole reply when it is a short one (a word, a number, a
    letter). NoAnswer otherwise, quoting the reply's start."""
    text = (reply or "").strip()
    boxed = last_boxed(text)
    if boxed:
        return boxed
    if "\\boxed{" in text:
        raise NoAnswer(f"no \\boxed{{}} answer: the last box is never closed (cut off by max_tokens?): {text[-80:]!r}")
    tags = _ANSWER_TAG.findall(text)
    if tags and tags[-1].strip():
        return tags[-1].strip()
    lines = _ANSWER_LINE.findall(text)
    if lines and lines[-1].strip():
        return lines[-1].strip().rstrip(".").strip()
    if text and "\n" not in text and len(text.split()) <= _SHORT_REPLY_WORDS:
        return text.rstrip(".").strip()
    raise NoAnswer(f"no \\boxed{{}} answer, <answer> tag or 'Answer:' line, and not a short reply: {text[:80]!r}")


def option_letter(text: str) -> str | None:
    m = _OPTION.match(text.strip())
    return m.group(1) if m else None


# ---------------------------------------------------------------- reading the gold

def gold_answers(gold: Any) -> list[str]:
    """The accepted answers: a string, a number, a list of them, or a string holding a list."""
    if isinstance(gold, bool) or gold is None:
        raise GoldError(f"gold answer {gold!r} is not an answer")
    if isinstance(gold, (int, float)):
        return [_number_text(gold)]
    if isinstance(gold, str) and gold.strip().startswith("["):
        try:
            gold = ast.literal_eval(gold.strip())
        except (ValueError, SyntaxError):
            raise GoldError(f"gold answer {gold!r} looks like a list but cannot be parsed") from None
    if isinstance(gold, list):
        if not gold:
            raise GoldError("gold answer is an empty list")
        return [a for g in gold for a in gold_answers(g)]
    if not isinstance(gold, str):
        raise GoldError(f"gold answer of type {type(gold).__name__} ({str(gold)[:80]!r})")
    text = gold.strip().strip("$").strip()
    if not re.search(r"\w", text):
        raise GoldError(f"gold answer {gold!r} has no content")
    return [text]


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


# ---------------------------------------------------------------- comparing

def normalize(text: str) -> str:
    """The VQA answer normalisation: lower case, punctuation out, number words as digits, no articles."""
    text = re.sub(r"(\d),(\d)", r"\1\2", text.lower())
    text = re.sub(r"[^\w\s.%-]|(?<!\d)\.(?!\d)", " ", text)
    words = [_NUMBER_WORDS.get(w, w) for w in text.split()]
    return " ".join(w for w in words if w not in _ARTICLES)


def to_number(text: str) -> float | None:
    """A number written as 12, 1,234.5, 45%, 3/4 or \\frac{3}{4}; None for anything else."""
    t = text.strip().strip("$").replace(",", "").replace(" ", "")
    t = re.sub(r"^\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}$", r"\1/\2", t)
    try:
        if t.endswith("%"):
            return float(t[:-1]) / 100
        if re.fullmatch(r"-?[\d.]+/-?[\d.]+", t):
            num, den = t.split("/")
            return float(num) / float(den) if float(den) else None
        return float(t)
    except ValueError:
        return None


def exact(pred: str, gold: str) -> float:
    if len(gold) == 1 and gold in _LETTERS:   # an option question: the letter decides
        return float(option_letter(pred) == gold)
    p, g = to_number(pred), to_number(gold)
    if p is not None and g is not None:
        return float(abs(p - g) <= 1e-9 * max(1.0, abs(g)))
    return float(normalize(pred) == normalize(gold))


def relaxed(pred: str, gold: str) -> float:
    p, g = to_number(pred), to_number(gold)
    if p is None or g is None or g == 0:
        return exact(pred, gold)
    return float(any(abs(p * s - g) <= RELAXED_TOLERANCE * abs(g) for s in (1, 0.01, 100)))


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def anls(pred: str, gold: str) -> float:
    p, g = " ".join(pred.lower().split()), " ".join(gold.lower().split())
    longest = max(len(p), len(g))
    similarity = 1.0 - (levenshtein(p, g) / longest if longest else 0.0)
    return max(relaxed(pred, gold), similarity if similarity >= ANLS_THRESHOLD else 0.0)


_COMPARE = {"exact": exact, "relaxed": relaxed, "anls": anls}


def score_reply(reply: str, golds: list[str], metric: str, mode: str = "lenient") -> float:
    """The best match of the reply's answer over the accepted golds (NoAnswer when none)."""
    pred = read_answer(reply, mode)
    if mode == "reference":
        return max(reference_score(pred, g, metric) for g in golds)
    return max(_COMPARE[metric](pred, g) for g in golds)


def read_answer(reply: str, mode: str) -> str:
    return format_answer(reply) if mode == "reference" else extract_answer(reply)


def read_golds(gold: Any, mode: str) -> list[str]:
    """The accepted answers; in `reference` mode each must also be something math-verify reads."""
    golds = gold_answers(gold)
    if mode == "reference":
        for g in golds:
            if not math_parse(g):
                raise GoldError(f"gold answer {g!r}: math-verify reads nothing from it")
    return golds


# ---------------------------------------------------------------- the reference protocol

def format_answer(reply: str) -> str:
    """The protocol's answer: the \\boxed{} inside the reply's last <answer>...</answer>."""
    found = _ANSWER_FORMAT.findall(reply or "")
    if not found or not found[-1].strip():
        raise NoAnswer(f"no <answer>...\\boxed{{}}...</answer> in the reply: {(reply or '')[-80:]!r}")
    return found[-1].strip()


def reference_score(answer: str, gold: str, metric: str) -> float:
    """math-verify equivalence; chart and infographic data also relaxed accuracy (and ANLS)."""
    score = math_equal(answer, gold)
    if metric in ("relaxed", "anls"):
        score = max(score, chart_score(answer, gold, metric == "anls"))
    return score


def math_equal(answer: str, gold: str) -> float:
    if is_words(answer) or is_words(gold):
        return float(_plain(answer).casefold() == _plain(gold).casefold())
    from math_verify import verify

    gold_parsed, seconds = list(math_parse(gold)), _timeout()
    if not gold_parsed:
        return 0.0
    try:   # the answer both as written and as parsed, as the released scorer tries it
        return float(verify(answer, gold_parsed, timeout_seconds=seconds)
                     or verify(list(math_parse(answer)), gold_parsed, timeout_seconds=seconds))
    except Exception:   # math-verify's own failures (a time-out, sympy) read as no match, as there
        return 0.0


@lru_cache(maxsize=4096)
def math_parse(text: str) -> tuple:
    """What math-verify reads from `text` as a LaTeX formula: (expression, its text), or ()."""
    from math_verify import LatexExtractionConfig, parse

    return tuple(parse(f"${text}$", extraction_mode="first_match", extraction_config=[LatexExtractionConfig()],
                       parsing_timeout=_timeout()))


def _timeout() -> int | None:
    # math-verify times out with SIGALRM, which only the main thread may set
    return _VERIFY_SECONDS if threading.current_thread() is threading.main_thread() else None


def _plain(text: str) -> str:
    inner = _TEXT_WRAPPER.match(text.strip())
    return " ".join((inner.group(1) if inner else text).split())


def is_words(text: str) -> bool:
    """Only letters (two or more in a row somewhere), spaces, hyphens and apostrophes."""
    plain = _plain(text)
    return bool(_WORDS.fullmatch(plain)) and bool(re.search(r"[^\W\d_]{2}", plain))


def chart_score(answer: str, gold: str, with_anls: bool) -> float:
    """Relaxed accuracy of the answer as math-verify prints it, also scaled x0.01 and x100; with
    ANLS for infographics (0 below the threshold)."""
    parsed = math_parse(answer)
    student = str(parsed[-1]) if parsed else ""
    try:
        number = float(student)
        score = max(float(relaxed_correctness(str(s * number), gold)) for s in _CHART_SCALES)
    except ValueError:
        score = float(relaxed_correctness(student, gold))
    if not with_anls:
        return score
    similarity = 1.0 - anls_distance(gold, student)
    return max(score, similarity if similarity >= ANLS_THRESHOLD else 0.0)


def relaxed_correctness(prediction: str, gold: str) -> bool:
    """Within 5% of the gold when both are numbers (a gold of 0 compares as text), else the same text."""
    p, g = _chart_float(prediction.strip()), _chart_float(gold)
    if p is not None and g:
        return abs(p - g) / abs(g) <= RELAXED_TOLERANCE
    return prediction.strip().lower() == gold.lower()


def _chart_float(text: str) -> float | None:
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return None


def anls_distance(gold: str, prediction: str) -> float:
    """Levenshtein distance of the lower-cased, space-normalised texts over the longer raw length."""
    g, p = " ".join(gold.strip().lower().split()), " ".join(prediction.strip().lower().split())
    longest = max(len(gold), len(prediction))
    return levenshtein(g, p) / longest if longest else 0.0
