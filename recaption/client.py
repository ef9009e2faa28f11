"""Requests to one OpenAI-compatible chat endpoint: what is retried, what stops the run.

- Retried with exponential backoff: time-outs, lost or refused connections, 5xx and 429 (a
  server restarting or overloaded comes back; the work is not lost).
- Stops the whole run at once (EndpointRejected): any other 4xx. A wrong model name, a bad key or a
  request the server cannot parse fails every image alike, so retrying or skipping would only
  turn one configuration mistake into a million listed failures.
- An image that finally fails after its retries is the caller's to list (RequestFailed).
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from recaption.endpoint import Endpoint

# LLaMA-Factory's image parser needs a real subtype in the data URL (vLLM accepts both).
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".bmp": "image/bmp",
         ".webp": "image/webp"}


class EndpointRejected(RuntimeError):
    """A 4xx that every request would get: the run stops and says what to fix."""


class RequestFailed(Exception):
    """One request failed for good (retries spent, or an unreadable image): listed, not fatal."""


@dataclass
class Reply:
    texts: list[str]
    completion_tokens: int
    finish_reasons: list[str]


def image_url(path: Path) -> str:
    """The image as a data URL with its real MIME type; RequestFailed when it cannot be read."""
    mime = _MIME.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
    if mime is None or not mime.startswith("image/"):
        raise RequestFailed(f"image {path}: unknown image type {path.suffix!r}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RequestFailed(f"image {path}: {exc.strerror or exc}") from None
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_messages(ep: Endpoint, url: str) -> list[dict]:
    """The captioning request: the image, then the prompt; a system turn only when configured."""
    user = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                        {"type": "text", "text": ep.prompt}]}
    return ([{"role": "system", "content": ep.system_prompt}] if ep.system_prompt else []) + [user]


def served_models(resp: httpx.Response, url: str) -> list[str]:
    """The model names of a GET /models reply. Anything else (a web page, another API's JSON)
    means base_url is not an OpenAI-compatible /v1 root: stop, naming the URL asked."""
    try:
        body = resp.json()
    except ValueError:
        body, what = None, "is not JSON"
    else:
        what = "is not an OpenAI model list"
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise EndpointRejected(f"GET {url} answered {resp.status_code} with a body that {what} ({resp.text[:80]!r}): "
                               "is base_url the server's OpenAI-compatible root (it ends in /v1)?")
    return [m.get("id") for m in body["data"] if isinstance(m, dict)]


class ChatClient:
    """The endpoints of one captioner (recaption/pool.py), at most `concurrency` requests in
    flight on each."""

    def __init__(self, ep: Endpoint, urls: list[str], log=None):
        from recaption.pool import Pool

        key = ep.api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.ep, self.pool = ep, Pool(ep, urls, headers, log)

    @property
    def workers(self) -> int:
        return self.pool.capacity

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.pool.close()

    async def check_model(self) -> list[str]:
        """Before any work: the endpoints answer and list the configured model name. A server
        that would answer any name (LLaMA-Factory) must still list it, so a typo stops here
        instead of captioning with whatever that server holds. The work starts on those that
        answer; the others are probed and join when they do. With none answering, the check is
        retried like a request, then the run stops."""
        last = ""
        for attempt in range(self.ep.retries + 1):
            if attempt:
                await self._back_off(attempt)
            results = await asyncio.gather(*(self._served(r) for r in self.pool.replicas))
            served = [s for s in results if isinstance(s, list)]
            if served:
                for r, res in zip(self.pool.replicas, results):
                    if isinstance(res, str):
                        self.pool.take_out(r, res)
                self.pool.start_probing()
                return served[0]
            last = "; ".join(f"{r.url}: {res}" if len(results) > 1 else res
                             for r, res in zip(self.pool.replicas, results))
        attempts = self.ep.retries + 1
        raise RequestFailed(f"GET /models: {last} ({attempts} attempt{'s' if attempts > 1 else ''})")

    async def _served(self, r) -> list[str] | str:
        """The model names one endpoint serves, or why it did not answer."""
        try:
            resp = await self.pool.models(r, self.ep.timeout_s)
        except httpx.TimeoutException:
            return f"timed out after {self.ep.timeout_s:g} s"
        except httpx.TransportError as exc:
            return f"connection failed ({type(exc).__name__}: {exc or 'no detail'})"
        if resp.status_code >= 500 or resp.status_code == 429:
            return f"HTTP {resp.status_code}: {snippet(resp)}"
        if resp.status_code >= 400:
            raise EndpointRejected(_rejected(self.ep, r.url, resp, "GET /models"))
        served = served_models(resp, f"{r.url}/models")
        if self.ep.model not in served:
            raise EndpointRejected(f"{self.ep.name}: endpoint {r.url} serves {served}, not "
                                   f"model={self.ep.model!r}: set {self.ep.name}'s `model` to the served name "
                                   "(vLLM: --served-model-name; LLaMA-Factory: API_MODEL_NAME)")
        return served

    async def chat(self, messages: list[dict], n: int = 1, what: str = "request", empty_ok: bool = False) -> Reply:
        """n completions of one conversation (asked for in as many calls as the server needs).

        An empty, blank or null completion is no caption: it is asked for again, like a reply that
        is not a chat completion at all (a server answering 200 with garbage), up to the retry
        limit; then the request fails, so the image is listed in failures.jsonl and asked for
        again by the next run, never journaled as done with nothing to train on. empty_ok: an
        empty completion is a valid reply (an answer to a question, scored like a wrong one)."""
        texts: list[str] = []
        tokens, reasons, bad = 0, [], 0
        while len(texts) < n:
            body = self._body(messages, n - len(texts))
            replica, resp = await self._post(body, what)
            try:
                got = _parse_reply(resp, what)
                replica.tokens += got.completion_tokens   # the per-endpoint tokens/s of the progress line
                problem = "" if got.texts else f"{what}: the endpoint returned no choices"
            except RequestFailed as exc:
                got, problem = Reply([], 0, []), str(exc)
            kept = [(t, r) for t, r in zip(got.texts, got.finish_reasons) if empty_ok or t.strip()]
            if len(kept) < len(got.texts):
                problem = f"{what}: the endpoint returned an empty completion"
            texts += [t for t, _ in kept]
            reasons += [r for _, r in kept]
            tokens += got.completion_tokens
            if problem:
                bad += 1
                if bad > self.ep.retries:
                    raise RequestFailed(f"{problem} ({bad} time{'s' if bad > 1 else ''})")
                await self._back_off(bad)
        return Reply(texts[:n], tokens, reasons[:n])

    def _body(self, messages: list[dict], n: int) -> dict:
        s = self.ep.sampling
        body: dict[str, Any] = {"model": self.ep.model, "messages": messages, "n": n, "temperature": s["temperature"],
                                "top_p": s["top_p"], "max_tokens": s["max_tokens"],
                                "repetition_penalty": s["repetition_penalty"]}
        if s.get("seed") is not None:
            body["seed"] = s["seed"]
        return body

    async def _back_off(self, attempt: int) -> None:
        """The wait before retry number `attempt` (1, 2, ...): doubling from backoff_s, capped."""
        await asyncio.sleep(min(self.ep.backoff_s * 2 ** (attempt - 1), self.ep.backoff_max_s))

    async def _post(self, body: dict, what: str):
        """One chat request until an endpoint answers it: (that endpoint, its answer). A failure on an endpoint just taken out
        of service is re-sent to another at once, without spending a retry (a bounded number of
        times, so endpoints that keep coming and going cannot hold a request for ever)."""
        bad, free, last = 0, 0, ""
        while True:
            r, result = await self.pool.attempt("POST", "/chat/completions", body)
            if isinstance(result, httpx.Response):
                if result.status_code >= 400:
                    raise EndpointRejected(_rejected(self.ep, r.url, result, what))
                return r, result
            last = result + self.pool.where(r)
            if self.pool.may_resend(r) and free < 2 * len(self.pool.replicas):
                free += 1
                continue
            bad += 1
            if bad > self.ep.retries:
                raise RequestFailed(f"{what}: {last} ({bad} attempt{'s' if bad > 1 else ''})")
            await self._back_off(bad)


def _parse_reply(resp: httpx.Response, what: str) -> Reply:
    try:
        data = resp.json()
        choices = data["choices"]
        texts = [c["message"]["content"] or "" for c in choices]
    except (ValueError, KeyError, TypeError) as exc:
        raise RequestFailed(f"{what}: not an OpenAI chat completion ({type(exc).__name__}: {exc}): "
                            f"{snippet(resp)}") from None
    usage = data.get("usage") or {}
    return Reply(texts, int(usage.get("completion_tokens") or 0), [str(c.get("finish_reason")) for c in choices])


def _rejected(ep: Endpoint, base_url: str, resp: httpx.Response, what: str) -> str:
    hint = {401: f"the endpoint refused the API key (read from ${ep.api_key_env})" if ep.api_key_env
            else "the endpoint wants an API key: set api_key_env to the name of the variable holding it",
            404: f"check `model` ({ep.model!r}) against the served name and base_url ({base_url})"}
    return (f"{ep.name}: {what} was rejected with HTTP {resp.status_code}: {snippet(resp)}; "
            f"{hint.get(resp.status_code, 'the request itself is wrong, so every image would fail alike')}")


def snippet(resp: httpx.Response, limit: int = 300) -> str:
    text = resp.text.strip().replace("\n", " ")
    return text[:limit] + ("..." if len(text) > limit else "")


def describe_down(urls: list[str], exc: BaseException) -> str:
    where = f"endpoint {urls[0]}" if len(urls) == 1 else f"none of the endpoints {', '.join(urls)}"
    return (f"{where} cannot be reached ({exc}); start the server (README: serving a captioner) "
            "or fix base_url / endpoints")
