"""Reading an answer out of a reply and scoring it against the gold answer (Prism, paper Table 3).

Metrics (per benchmark, configs/hydra/prism/):
    exact    option letter when the gold is one (A-J), else numbers compared as numbers, else the
             VQA normalisation (case, punctuation, articles, number words) on both sides
    relaxed  chart and infographic data: a number within 5% of the gold (also read as a
             percentage or a fraction, the x1 / x0.01 / x100 scales of the reference scorer),
             otherwise as `exact`. The 5% is of the gold, as ChartQA defines it (the reference
             scorer swaps the two and measures it against the prediction)
    anls     InfoVQA: the better of `relaxed` and ANLS (normalised Levenshtein similarity, 0 below 0.5)

A gold answer that cannot be read is a GoldError: the question is counted and reported as an
error, never scored (the reference code scores it 1.0, which inflates every captioner alike and
hides broken rows). A reply with nothing to read is a NoAnswer: that answer scores 0 and is counted.
"""

from __future__ import annotations

import ast
import re
from typing import Any

METRICS = ("exact", "relaxed", "anls")
RELAXED_TOLERANCE = 0.05
ANLS_THRESHOLD = 0.5
_LETTERS = "ABCDEFGHIJ"
_OPTION = re.compile(r"^\(?([A-J])\)?(?:[.):]\s*.*)?$", re.DOTALL)
_ANSWER_LINE = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*(.+)", re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
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


def score_reply(reply: str, golds: list[str], metric: str) -> float:
    """The best match of the reply's answer over the accepted golds (NoAnswer when none)."""
    pred = extract_answer(reply)
    return max(_COMPARE[metric](pred, g) for g in golds)
