"""From the N answers of each question to one Prism score per benchmark.

Per question: each answer scores 0..1 (prism/score.py); its Mean over the N captions and its
best-of-N. Per benchmark: the average of those over the questions that could be scored, on the
paper's 0-100 scale. A question whose gold answer cannot be read, or that has no answer at all
(its image or every answer failed after retries), is an error: left out of the score and
counted in the record's `reason`, never counted as correct."""

from __future__ import annotations

from collections.abc import Mapping
from statistics import fmean

from prism.score import DEFAULT_SCORING, GoldError, NoAnswer, read_answer, read_golds, score_reply


def question_detail(q, replies: list[str | None], metric: str, mode: str = DEFAULT_SCORING) -> dict:
    detail = {"benchmark": q.benchmark, "qid": q.qid, "image": q.image, "gold": q.answer, "metric": metric,
              "scoring": mode, "answers": [], "scores": [], "no_answer": 0, "error": None}
    try:
        golds = read_golds(q.answer, mode)
    except GoldError as exc:
        return {**detail, "error": f"unparseable gold: {exc}"}
    for reply in replies:
        if reply is None:
            continue
        try:
            detail["answers"].append(read_answer(reply, mode))
            detail["scores"].append(score_reply(reply, golds, metric, mode))
        except NoAnswer:
            detail["answers"].append(None)
            detail["scores"].append(0.0)
            detail["no_answer"] += 1
    if not detail["scores"]:
        detail["error"] = "no answers (captioning or answering failed for it)"
    return detail


def benchmark_records(details: list[dict], c: Mapping, backbone: str, stamp: str) -> tuple[list[dict], list[dict]]:
    """(Mean records, best-of-N records), one per benchmark, in the report's record schema."""
    mean, best = [], []
    for b in c["benchmarks"]:
        rows = [d for d in details if d["benchmark"] == b["name"]]
        scored = [d for d in rows if d["error"] is None]
        reason = _note(rows, scored)
        base = {"run": c["meta"]["run"], "backbone": backbone, "caption_source": c["meta"]["caption_source"],
                "benchmark": b["name"], "task": f"prism:{b['file'].rsplit('/', 1)[-1]}", "n": len(scored),
                "lmms_eval_version": None, "model_args": None, "timestamp": stamp,
                "scoring": c.get("scoring", DEFAULT_SCORING)}
        for out, metric, pick in ((mean, "prism_mean", fmean), (best, f"prism_best_of_{c['samples']}", max)):
            value = round(100 * fmean(pick(d["scores"]) for d in scored), 4) if scored else None
            out.append({**base, "metric": metric, "value": value, "status": "ok" if scored else "n/a",
                        "reason": reason if scored or reason else "no questions"})
    return mean, best


def _note(rows: list[dict], scored: list[dict]) -> str | None:
    parts = []
    gold = sum(1 for d in rows if d["error"] and d["error"].startswith("unparseable gold"))
    empty = len(rows) - len(scored) - gold
    if gold:
        parts.append(f"{gold} question{'s' if gold > 1 else ''} with an unparseable gold answer not scored")
    if empty:
        parts.append(f"{empty} question{'s' if empty > 1 else ''} without any answer not scored")
    no_answer = sum(d["no_answer"] for d in scored)
    if no_answer:
        parts.append(f"{no_answer} answer{'s' if no_answer > 1 else ''} with no extractable value scored 0")
    return "; ".join(parts) + " (details.jsonl)" if parts else None
