"""The LLM judge of MathVista, MM-Vet and MMBench: one config slice (configs/hydra/judge/), from
which each judge task's lmms-eval process gets the environment it reads.

    judge: {name: none}                                        no judge: judge tasks are n/a
    judge: {name, base_url, model, weights, api_key_env,       an OpenAI-compatible endpoint
            outage_s}

lmms-eval 0.7.3 reads its judge from the environment: API_TYPE, OPENAI_API_URL, OPENAI_API_KEY,
MODEL_VERSION. MathVista and MM-Vet go through its llm_judge `openai` provider, which takes
OPENAI_API_URL as a base URL and appends /chat/completions; MMBench's evaluator posts to
OPENAI_API_URL as given, so it needs the full .../chat/completions URL. One process cannot hold
both, which is one reason each task runs in an lmms-eval process of its own (evaluation/stage.py).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Mapping

JUDGE_KEYS = ("name", "base_url", "model", "weights", "api_key_env", "outage_s")
# How long lmms-eval 0.7.3 keeps asking an unreachable judge about one question before it scores
# that question 0 and goes on: its judge tasks try 3 times (patience), each try 5 attempts 10 s
# apart (llm_judge ServerConfig), so 3 x 4 x 10 s of waiting at the least. A judge back within
# this window costs no question; one gone longer costs every question asked meanwhile.
LMMS_EVAL_JUDGE_RETRY_S = 120
OUTAGE_S = 30.0    # judge.outage_s when not set: well inside the window above
# Tasks whose evaluator posts to OPENAI_API_URL itself, as a full URL.
FULL_URL_TASKS = ("mmbench_",)
NO_KEY = "EMPTY"   # OpenAI clients refuse an empty key; loopback servers ignore it


def is_set(judge: Mapping | None) -> bool:
    return bool(judge) and judge.get("name", "none") != "none"


def problems(judge: Mapping | None) -> list[str]:
    """What in the `judge` slice cannot work, each naming its key."""
    if not is_set(judge):
        extra = sorted(set(judge or {}) - {"name"})
        return [f"judge.{k}: unknown key for judge=none" for k in extra]
    out = [f"judge.{k}: unknown key (known: {', '.join(JUDGE_KEYS)})" for k in sorted(set(judge) - set(JUDGE_KEYS))]
    for key in ("base_url", "model", "weights"):
        if not isinstance(judge.get(key), str) or not judge[key].strip() or judge[key] == "???":
            out.append(f"judge.{key}: required, a non-empty string")
    url = str(judge.get("base_url") or "")
    if url and not url.startswith(("http://", "https://")):
        out.append(f"judge.base_url={url!r}: an http(s) URL")
    if url.rstrip("/").endswith("/chat/completions"):
        out.append(f"judge.base_url={url!r}: the base URL (…/v1), not …/chat/completions")
    if judge.get("api_key_env") is not None and not isinstance(judge["api_key_env"], str):
        out.append("judge.api_key_env: the name of an environment variable, or null")
    outage = outage_limit(judge)
    if isinstance(outage, bool) or not isinstance(outage, (int, float)) or not 0 < outage < LMMS_EVAL_JUDGE_RETRY_S:
        out.append(f"judge.outage_s={outage!r}: seconds, more than 0 and less than {LMMS_EVAL_JUDGE_RETRY_S} "
                   "(lmms-eval scores a question 0 after about that long without its judge)")
    return out


def identity(judge: Mapping | None) -> dict | None:
    """What a judged score records: who judged it. None without a judge."""
    if not is_set(judge):
        return None
    return {"name": judge["name"], "model": judge["model"], "weights": judge["weights"],
            "base_url": judge["base_url"].rstrip("/")}


def task_env(judge: Mapping, task: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables lmms-eval's judge code reads, for one task's process. The key is read from
    the variable judge.api_key_env names, never from the config."""
    environ = os.environ if environ is None else environ
    base = judge["base_url"].rstrip("/")
    key = environ.get(judge["api_key_env"], "") if judge.get("api_key_env") else ""
    return {"API_TYPE": "openai",
            "OPENAI_API_URL": base + "/chat/completions" if task.startswith(FULL_URL_TASKS) else base,
            "OPENAI_API_KEY": key or NO_KEY,
            "MODEL_VERSION": judge["model"]}


def how_to_start(judge: Mapping) -> str:
    return (f"start the judge so that {judge['base_url'].rstrip('/')}/models lists {judge['model']!r} "
            f"(e.g. API_HOST=127.0.0.1 API_PORT=<port> API_MODEL_NAME={judge['model']} llamafactory-cli api "
            f"<yaml with model_name_or_path: {judge['weights']}>), or run with judge=none")


def answers(judge: Mapping, environ: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> tuple[bool, str]:
    """(answers, reason): the judge's model list names judge.model. lmms-eval scores a question 0
    when its judge call fails, so a judge that is not there must be found before any question."""
    env = task_env(judge, "", environ)
    url = judge["base_url"].rstrip("/") + "/models"
    reply, why = model_list(url, {"Authorization": f"Bearer {env['OPENAI_API_KEY']}"}, timeout_s)
    if reply is None:
        return False, f"judge {judge['name']!r} at {url} {why}"
    try:
        served = [m.get("id") for m in reply.json().get("data", [])]
    except (ValueError, AttributeError):
        return False, f"judge {judge['name']!r} at {url} answered no model list"
    if judge["model"] not in served:
        return False, f"judge {judge['name']!r} at {url} serves {served}, not {judge['model']!r}"
    return True, ""


def outage_watch(judge: Mapping, environ: Mapping[str, str] | None = None) -> Callable[[], str | None]:
    """A check for stagekit's run_logged(watch=...) while a judge task runs: None while the judge
    answers, the reason once it has not answered for judge.outage_s. lmms-eval itself scores a
    question 0 after its retries and goes on, so without this a judge gone for good costs about
    2 minutes per remaining question and ends in a score of zeros; stopping within outage_s, less
    than those 2 minutes, means no question was scored 0 for want of a judge."""
    limit = float(outage_limit(judge))
    down_since: float | None = None   # when the judge first failed to answer, since it last answered

    def check() -> str | None:
        nonlocal down_since
        ok, why = answers(judge, environ, timeout_s=min(10.0, limit))
        if ok:
            down_since = None
            return None
        if down_since is None:
            down_since = time.monotonic()
        return why if time.monotonic() - down_since >= limit else None

    return check


def watch_every_s(judge: Mapping) -> float:
    """How often outage_watch is asked: often enough to notice an outage well within outage_s."""
    return min(5.0, float(outage_limit(judge)) / 3)


def outage_limit(judge: Mapping):
    """judge.outage_s as configured (problems() checks it), OUTAGE_S when the slice does not set it."""
    return judge.get("outage_s", OUTAGE_S)


def model_list(url: str, headers: Mapping[str, str], timeout_s: float):
    """(the 200 reply of GET url, "") or (None, why: "does not answer (...)" / "answered HTTP n")."""
    import httpx

    try:
        reply = httpx.get(url, headers=dict(headers), timeout=timeout_s)
    except httpx.HTTPError as exc:
        return None, f"does not answer ({type(exc).__name__})"
    if reply.status_code != 200:
        return None, f"answered HTTP {reply.status_code}"
    return reply, ""
