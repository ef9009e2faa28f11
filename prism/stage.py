"""The `prism` stage kind: caption quality the paper's way (Table 3), before any GPU-week of
pretraining is spent on a captioner.

    prism.captions   the captioner describes every image of the Prism files N times (default 4)
    prism            an answer model (a second endpoint) answers each question seeing only one
                     caption, N answers per question; each is scored (prism/score.py); per
                     benchmark the Mean over the N captions (what the paper reports, in
                     results.jsonl for the report's Table-3-shaped table) and best-of-N
                     (best_of_n.jsonl), with every question's details in details.jsonl

Two stages, so that changing the answer model reuses the captions. Both journal each finished
request and resume like the recaption stage. Runs when `pipeline=prism` (experiment=prism)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from recaption.stage import progress  # noqa: F401  (the kind's progress reader: same journal engine)
from stagekit import StageRun, run_label, unknown_keys, write_json_atomic

KIND = "prism"
VERSION = 1
PIPELINES = ("prism",)
PRISM_KEYS = ("name", "label", "image_root", "samples", "answer_prompt", "benchmarks", "answerer", "scoring")
BACKBONE = "Prism"   # report/paper.py PRISM_BACKBONE: Table 3 rows are captioners, one group
DETAILS, BEST_OF_N, RESULTS = "details.jsonl", "best_of_n.jsonl", "results.jsonl"


def stages(cfg: Mapping, upstream: list[dict]) -> list[dict]:
    from recaption.endpoint import output_config, run_settings

    p, cap, ans = cfg["prism"], cfg["captioner"], cfg["prism"]["answerer"]
    files = {"benchmarks": [dict(b) for b in p["benchmarks"]], "image_root": p["image_root"]}
    names = ", ".join(b["name"] for b in p["benchmarks"])
    captions = {"name": "prism.captions", "resumable": True,
                "config": {"captioner": output_config(cap), "samples": p["samples"], **files},
                "settings": {"captioner": run_settings(cap)},
                "summary": f"{cap.get('label') or cap['name']} captions every image of {names}, {p['samples']}x"}
    label = cap.get("label") or cap["name"]
    answers = {"name": "prism", "resumable": True, "inputs": {"captions": "prism.captions"},
               "config": {"answerer": output_config(ans), "answer_prompt": p["answer_prompt"], **files,
                          "samples": p["samples"], "scoring": scoring_mode(p),
                          "meta": {"run": run_label(cfg), "caption_source": label}},
               "settings": {"answerer": run_settings(ans)},
               "summary": f"{ans.get('label') or ans['name']} answers from the captions; Mean and best-of-"
                          f"{p['samples']} per benchmark, scored in {scoring_mode(p)} mode"}
    return [captions, answers]


def problems(cfg: Mapping) -> list[str]:
    from prism.score import METRICS, SCORING_MODES
    from recaption.endpoint import EndpointConfigError, parse_endpoint

    if cfg.get("pipeline") not in PIPELINES:
        return []
    p = cfg["prism"]
    out = unknown_keys("prism", p, PRISM_KEYS)
    for section, node in (("captioner", cfg["captioner"]), ("prism.answerer", p.get("answerer") or {})):
        try:
            parse_endpoint(node, section)
        except EndpointConfigError as exc:
            out.append(str(exc))
    if (p.get("answerer") or {}).get("slurm"):
        out.append("prism.answerer.slurm: the answer model is not run as a SLURM array; list its replicas in "
                   "prism.answerer.endpoints")
    for i, b in enumerate(p.get("benchmarks") or []):
        out += unknown_keys(f"prism.benchmarks[{i}]", b, ("name", "file", "metric"))
        if b.get("metric") not in METRICS:
            out.append(f"prism.benchmarks[{i}] ({b.get('name')}): metric={b.get('metric')!r}; choose one of "
                       f"{', '.join(METRICS)}")
    if scoring_mode(p) not in SCORING_MODES:
        out.append(f"prism.scoring={p.get('scoring')!r}; choose one of {', '.join(SCORING_MODES)} (reference: the "
                   f"paper's answer format and math-verify; lenient: also bare answers)")
    if int(p.get("samples") or 0) < 1:
        out.append("prism.samples must be at least 1")
    if "{caption}" not in str(p.get("answer_prompt")):
        out.append("prism.answer_prompt must contain {caption}")
    return out


def scoring_mode(p: Mapping) -> str:
    """prism.scoring; a Prism YAML that does not say is scored the paper's way."""
    from prism.score import DEFAULT_SCORING

    return p.get("scoring") or DEFAULT_SCORING


def describe(view) -> list[str]:
    """plan's lines: what the stage will cost (recaption/cost.py)."""
    from recaption.cost import prism_cost

    return prism_cost(view)


def run(job: StageRun) -> dict:
    return run_captions(job) if job.name == "prism.captions" else run_answers(job)


def load_questions(config: Mapping) -> list:
    from prism.files import PrismFileError, read_questions

    root = Path(config["image_root"])
    questions = [q for b in config["benchmarks"] for q in read_questions(b["name"], Path(b["file"]), root)]
    seen: set[tuple[str, str]] = set()
    for q in questions:
        if (q.benchmark, q.qid) in seen:
            raise PrismFileError(f"benchmark {q.benchmark}: question id {q.qid!r} appears twice")
        seen.add((q.benchmark, q.qid))
    return questions


# ---------------------------------------------------------------- captions

def run_captions(job: StageRun) -> dict:
    from recaption.endpoint import endpoint_from
    from recaption.engine import check_failures
    from recaption.stage import caption_job

    c = job.config
    ep = endpoint_from(c["captioner"], job.settings["captioner"])
    images = list(dict.fromkeys(q.image for q in load_questions(c)))
    job.log(f"{len(images)} images, {c['samples']} captions each, from {ep.name} ({ep.model})")
    # An empty caption is scored like any poor one: asking until a captioner says something would
    # score it above what it does.
    out = caption_job(job, ep, images, Path(c["image_root"]), samples=c["samples"], empty_ok=True)
    problem = check_failures(out, ep.max_failed_fraction, job.out_dir / "failures.jsonl", "images")
    if problem:
        raise RuntimeError(problem)
    return {"images": len(images), "failed": len(out.failed), "seconds": round(out.seconds, 1)}


# ---------------------------------------------------------------- answers and scores

def answer_messages(system: str | None, prompt: str, caption: str, question: str) -> list[dict]:
    """The paper's decoupled question: the caption stands in for the image, then the question
    exactly as the benchmark asks it (the reference joins them without a separator)."""
    user = {"role": "user", "content": prompt.replace("{caption}", caption) + question}
    return ([{"role": "system", "content": system}] if system else []) + [user]


def run_answers(job: StageRun) -> dict:
    from recaption.endpoint import endpoint_from
    from recaption.engine import Item, check_failures
    from recaption.journal import load

    c = job.config
    ep = endpoint_from(c["answerer"], job.settings["answerer"], "prism.answerer")
    questions = load_questions(c)
    captions = {k: r["texts"] for k, r in load(job.inputs["captions"] / "journal.jsonl").items()}
    asks = {answer_key(q, k): (q, cap) for q in questions if q.image in captions
            for k, cap in enumerate(captions[q.image][:c["samples"]])}

    def make(key: str) -> Item:
        q, cap = asks[key]
        return Item(key, answer_messages(q.system, c["answer_prompt"], cap, q.question),
                    meta={"benchmark": q.benchmark, "qid": q.qid}, empty_ok=True)

    job.log(f"{len(questions)} questions, {len(asks)} answers to ask {ep.name} ({ep.model})")
    out = asyncio.run(_ask(ep, list(asks), make, job))
    problem = check_failures(out, ep.max_failed_fraction, job.out_dir / "failures.jsonl", "answers")
    if problem:
        raise RuntimeError(problem)
    answers = {k: r["texts"][0] for k, r in load(job.out_dir / "journal.jsonl").items()}
    return write_scores(job.out_dir, questions, answers, c, job.log)


def answer_key(q, k: int) -> str:
    return f"{q.benchmark}/{q.qid}/{k}"


async def _ask(ep, keys: list[str], make, job: StageRun):
    from recaption.engine import run_on_endpoints

    return await run_on_endpoints(ep, keys, make, job.out_dir, log=job.log, what="answers")


def write_scores(out_dir: Path, questions: list, answers: Mapping[str, str], c: Mapping, log) -> dict:
    from prism.aggregate import benchmark_records, question_detail
    from prism.score import DEFAULT_SCORING

    metrics = {b["name"]: b["metric"] for b in c["benchmarks"]}
    mode = c.get("scoring", DEFAULT_SCORING)
    details = [question_detail(q, [answers.get(answer_key(q, k)) for k in range(c["samples"])], metrics[q.benchmark],
                               mode) for q in questions]
    (out_dir / DETAILS).write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in details))
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    mean, best = benchmark_records(details, c, BACKBONE, stamp)
    (out_dir / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in mean))
    (out_dir / BEST_OF_N).write_text("".join(json.dumps(r) + "\n" for r in best))
    log(f"scored in {mode} mode")
    for m, b in zip(mean, best):
        shown = (f"mean {m['value']:.1f}, best-of-{c['samples']} {b['value']:.1f}" if m["value"] is not None
                 else "n/a")
        log(f"{m['benchmark']:<14} {shown}  (n={m['n']}{'; ' + m['reason'] if m['reason'] else ''})")
    summary = {m["benchmark"]: {"mean": m["value"], "best_of_n": b["value"], "n": m["n"], "note": m["reason"],
                                "scoring": mode} for m, b in zip(mean, best)}
    write_json_atomic(out_dir / "summary.json", summary)
    return {"scores": {k: v["mean"] for k, v in summary.items()}}
