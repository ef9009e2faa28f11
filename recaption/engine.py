"""Send many requests to one endpoint, a bounded number at a time, journaling each result.

The items are whatever needs an answer (an image to caption, a question to answer from a
caption); each has a key, and the journal (recaption/journal.py) decides which keys are still
missing. A worker pool of `concurrency` coroutines keeps that many requests in flight: the
endpoint batches concurrent requests (vLLM's continuous batching), so throughput grows with it
until the server is saturated. Every run appends the keys it is about to request to
`runs.jsonl` beside the journal, so "only the missing ones were asked for" can be checked.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recaption.client import ChatClient, RequestFailed
from recaption.journal import Journal


@dataclass
class Item:
    key: str
    messages: list[dict]
    n: int = 1                                 # completions wanted
    meta: dict = field(default_factory=dict)   # copied into the journal record
    # An empty caption is no caption (asked again, then a failure); an empty answer to a question
    # is an answer, scored like any wrong one.
    empty_ok: bool = False


# key -> its request, built by the worker that sends it: a million pending images are a million
# strings in the queue, and each image file is read only when its request goes out.
MakeItem = Callable[[str], Item]


@dataclass
class Outcome:
    total: int
    done_before: int
    succeeded: int = 0
    failed: dict[str, str] = field(default_factory=dict)   # key -> reason
    seconds: float = 0.0
    tokens: int = 0

    @property
    def missing(self) -> int:
        return self.total - self.done_before - self.succeeded


def pending(keys: list[str], journal: Journal) -> list[str]:
    return [k for k in keys if k not in journal.done]


def record_run(path: Path, what: str, keys: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"what": what, "started": time.time(), "requested": keys}) + "\n")


async def run_on_endpoints(ep, keys: list[str], make: MakeItem, out_dir: Path, *, log, what: str,
                           journal: str = "journal.jsonl", runs: str = "runs.jsonl") -> Outcome:
    """Serve the model when configured, check every endpoint serves it, and request every key
    the journal in out_dir lacks (the recaption stage and both Prism stages)."""
    from recaption.client import describe_down
    from recaption.serve import endpoint_urls

    with endpoint_urls(ep, out_dir, log) as urls, Journal(out_dir / journal) as book:
        async with ChatClient(ep, urls, log) as client:
            try:
                await client.check_model()
            except RequestFailed as exc:
                raise RuntimeError(describe_down(urls, exc)) from None
            return await run_items(client, keys, make, book, log=log, what=what, progress_s=ep.progress_s,
                                   runs_log=out_dir / runs, progress_file=out_dir / PROGRESS)


# Beside the journal, rewritten at every progress line: what `status` and the console show.
PROGRESS = "progress.json"


async def run_items(client: ChatClient, keys: list[str], make: MakeItem, journal: Journal, *, log,
                    what: str = "images", progress_s: float = 10.0, runs_log: Path | None = None,
                    progress_file: Path | None = None) -> Outcome:
    """Request every key the journal lacks; returns the account. EndpointRejected stops all."""
    todo = pending(keys, journal)
    out = Outcome(total=len(keys), done_before=len(keys) - len(todo))
    if progress_file is not None:
        progress_file.unlink(missing_ok=True)   # a killed run's figures are not this run's
    if runs_log is not None:
        record_run(runs_log, what, todo)
    if out.done_before:
        log(f"{out.done_before} of {len(keys)} {what} already done; requesting the other {len(todo)}")
    queue: asyncio.Queue[str] = asyncio.Queue()
    for key in todo:
        queue.put_nowait(key)
    t0 = time.monotonic()
    # `concurrency` per endpoint: the pool holds each endpoint to it, so a full pool needs them all
    workers = [asyncio.create_task(_worker(client, queue, make, journal, out)) for _ in range(client.workers)]
    report = Report(out, len(todo), t0, what, client.pool.counts, progress_file)
    reporter = asyncio.create_task(_progress(report, log, progress_s))
    try:
        await asyncio.gather(*workers)
    finally:
        for task in (*workers, reporter):
            task.cancel()
        await asyncio.gather(*workers, reporter, return_exceptions=True)
        out.seconds = time.monotonic() - t0
        journal.sync()
    log(report.line(final=True))
    return out


async def _worker(client: ChatClient, queue: asyncio.Queue, make: MakeItem, journal: Journal, out: Outcome) -> None:
    while not queue.empty():
        key = queue.get_nowait()
        try:
            item = make(key)
            reply = await client.chat(item.messages, n=item.n, what=key, empty_ok=item.empty_ok)
        except RequestFailed as exc:   # EndpointRejected propagates: run_items stops every worker
            out.failed[key] = str(exc)
            continue
        journal.append({"key": item.key, **item.meta, "texts": reply.texts,
                        "completion_tokens": reply.completion_tokens, "finish_reasons": reply.finish_reasons})
        out.succeeded += 1
        out.tokens += reply.completion_tokens


@dataclass
class Report:
    """A progress line for the log, and the same figures in progress.json for `status`."""
    out: Outcome
    todo: int
    t0: float
    what: str
    endpoints: Callable[[], dict]
    path: Path | None = None

    def line(self, final: bool = False) -> str:
        seconds = self.out.seconds if final else time.monotonic() - self.t0
        return progress_line(self.out, self.todo, seconds, self.what, final) + endpoints_part(self.endpoints(), seconds)

    def write(self) -> str:
        text = self.line()
        if self.path is not None:
            from stagekit import write_json_atomic

            write_json_atomic(self.path, {"text": text, "todo": self.todo, "succeeded": self.out.succeeded,
                                          "failed": len(self.out.failed), "tokens": self.out.tokens,
                                          "seconds": round(time.monotonic() - self.t0, 1),
                                          "endpoints": self.endpoints()})
        return text


async def _progress(report: Report, log, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        log(report.write())


def endpoints_part(counts: dict[str, dict], seconds: float) -> str:
    """Per endpoint, when there are several: answered (and per second, answers and tokens), failed
    attempts, and whether it is out of service."""
    if len(counts) < 2:
        return ""
    parts = [f"{url.removeprefix('http://').removeprefix('https://').removesuffix('/v1')} {c['answered']} ok"
             + (f" ({c['answered'] / seconds:.2f}/s, {c.get('tokens', 0) / seconds:.1f} tokens/s)" if seconds > 0 else "")
             + (f" {c['failures']} failed" if c["failures"] else "") + ("" if c["up"] else " (out)")
             for url, c in counts.items()]
    return "; endpoints: " + ", ".join(parts)


def progress_line(out: Outcome, todo: int, seconds: float, what: str, final: bool = False) -> str:
    handled = out.succeeded + len(out.failed)
    rate = out.succeeded / seconds if seconds > 0 else 0.0
    tok = out.tokens / seconds if seconds > 0 else 0.0
    eta = (todo - handled) / rate if rate > 0 else float("inf")
    head = "finished" if final else "progress"
    tail = "" if final else f", ETA {eta:.0f} s" if eta != float("inf") else ", ETA unknown"
    return (f"{head}: {handled}/{todo} {what} ({out.succeeded} ok, {len(out.failed)} failed) in {seconds:.1f} s, "
            f"{rate:.2f} {what}/s, {tok:.1f} tokens/s{tail}")


def check_failures(out: Outcome, max_fraction: float, failures_path: Path, what: str) -> str | None:
    """Write every failed key with its reason; a message when more than max_fraction failed."""
    failures_path.write_text("".join(json.dumps({"key": k, "reason": r}) + "\n" for k, r in sorted(out.failed.items())))
    if not out.failed:
        return None
    fraction = len(out.failed) / max(out.total, 1)
    if fraction <= max_fraction:
        return None
    shown = "\n".join(f"  {k}: {r}" for k, r in sorted(out.failed.items())[:10])
    return (f"{len(out.failed)} of {out.total} {what} failed ({fraction:.1%} > max_failed_fraction "
            f"{max_fraction:.1%}); all listed in {failures_path}; first ones:\n{shown}\n"
            "re-run to request only the missing ones")
