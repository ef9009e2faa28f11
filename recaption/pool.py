"""Several OpenAI-compatible endpoints serving the same model (replicas), used as one.

- Each request goes to the endpoint in service with the fewest outstanding requests, at most
  `concurrency` at a time per endpoint: equal per-endpoint load, so N replicas give N times one.
- An endpoint is taken out of service when it fails its health check (GET /models, asked after a
  lost connection and every `probe_s` while it is out or silent) or fails `eject_after`
  requests in a row (time-outs, 5xx). Its requests in flight are cancelled and re-sent to the
  others without spending their retries; a late answer from it is never read, so no key is
  answered twice. Probed every `probe_s` while out, it is put back when it answers again.
- With no endpoint in service the request is tried on one anyway and its failure spends a retry:
  one endpoint behaves as before (retries with backoff, then the image is listed as failed).

Which endpoints served a key is run-only: the same model at other URLs writes the same captions.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from recaption.endpoint import Endpoint

# The captioner keys this module reads (offered with the other optional keys in CAPTIONER_DEFAULTS).
POOL_DEFAULTS: dict[str, Any] = dict(
    endpoints=None,    # base URLs of replicas serving the same model, instead of base_url
    eject_after=3,     # requests failing in a row (time-outs, 5xx) that take an endpoint out of service
    probe_s=10.0,      # seconds between health checks (GET /models) of an endpoint out of service or silent
)
# A busy server still answers GET /models at once; one that does not within this is not serving.
PROBE_TIMEOUT_S = 10.0


class NoEndpoint(Exception):
    """No endpoint answered the first health check (the reasons, per endpoint)."""


@dataclass
class Replica:
    url: str
    http: httpx.AsyncClient
    up: bool = True
    outstanding: int = 0
    answered: int = 0        # requests it answered
    tokens: int = 0          # completion tokens of those answers (their usage count, read by the client)
    failures: int = 0        # attempts that failed on it
    streak: int = 0          # failures since its last answer
    last_answer: float = field(default_factory=time.monotonic)
    # set when it is taken out: its requests in flight stop waiting and are re-sent elsewhere
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    probing: asyncio.Task | None = None

    def state(self) -> dict:
        return {"up": self.up, "outstanding": self.outstanding, "answered": self.answered, "tokens": self.tokens,
                "failures": self.failures}


class Pool:
    """The endpoints of one captioner (or answer model); `send` is one request with failover."""

    def __init__(self, ep: Endpoint, urls: list[str], headers: dict, log=None):
        self.ep, self.log = ep, log or (lambda m: None)
        limits = httpx.Limits(max_connections=ep.concurrency, max_keepalive_connections=ep.concurrency)
        # One TLS context for all (loading the CA bundle costs 0.1 s each), none for plain http.
        tls = httpx.create_ssl_context() if any(u.startswith("https:") for u in urls) else False
        self.replicas = [Replica(u.rstrip("/"), httpx.AsyncClient(headers=headers, limits=limits, verify=tls,
                                                                  timeout=httpx.Timeout(ep.timeout_s)))
                         for u in urls]
        self._changed = asyncio.Condition()
        self._prober: asyncio.Task | None = None

    @property
    def capacity(self) -> int:
        """Requests in flight when every endpoint is in service."""
        return self.ep.concurrency * len(self.replicas)

    async def close(self) -> None:
        for task in [self._prober, *(r.probing for r in self.replicas)]:
            if task is not None:
                task.cancel()
        for r in self.replicas:
            await r.http.aclose()

    def start_probing(self) -> None:
        self._prober = asyncio.create_task(self._probe_loop())

    # ------------------------------------------------------------ health

    async def models(self, r: Replica, timeout: float | None = None) -> httpx.Response:
        return await r.http.get(f"{r.url}/models", timeout=timeout or PROBE_TIMEOUT_S)

    async def healthy(self, r: Replica) -> bool:
        """GET /models answers and still lists the model (a node restarted with other weights is
        not put back)."""
        try:
            resp = await self.models(r)
            return resp.status_code == 200 and self.ep.model in [m.get("id") for m in resp.json().get("data", [])
                                                                 if isinstance(m, dict)]
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    def take_out(self, r: Replica, why: str) -> None:
        if not r.up:
            return
        r.up = False
        r.gone.set()
        in_service = sum(x.up for x in self.replicas)
        self.log(f"endpoint {r.url} taken out of service ({why}); {in_service} of {len(self.replicas)} in service")
        self._notify()

    def put_back(self, r: Replica) -> None:
        if r.up:
            return
        r.up, r.streak, r.gone = True, 0, asyncio.Event()
        r.last_answer = time.monotonic()
        self.log(f"endpoint {r.url} answers again: back in service")
        self._notify()

    def _notify(self) -> None:
        async def wake():
            async with self._changed:
                self._changed.notify_all()
        asyncio.ensure_future(wake())

    async def _check(self, r: Replica, why: str) -> None:
        """Health check after a lost connection, one at a time per endpoint."""
        if r.probing is None or r.probing.done():
            async def check():
                if not await self.healthy(r):
                    self.take_out(r, f"{why}; GET /models failed")
            r.probing = asyncio.create_task(check())
        await asyncio.shield(r.probing)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ep.probe_s)
            now = time.monotonic()
            for r in self.replicas:
                silent = r.up and r.outstanding and now - r.last_answer > self.ep.probe_s
                if not r.up or silent:
                    ok = await self.healthy(r)
                    if ok:
                        self.put_back(r)
                    elif silent:
                        self.take_out(r, f"no answer for {now - r.last_answer:.1f} s and GET /models failed")

    # ------------------------------------------------------------ requests

    async def _acquire(self) -> Replica:
        """The endpoint in service with the fewest outstanding requests, waiting while all are
        full; with none in service, the least busy of all (its failure spends a retry)."""
        async with self._changed:
            while True:
                up = [r for r in self.replicas if r.up]
                if not up:
                    best = min(self.replicas, key=lambda r: r.outstanding)
                    break
                best = min(up, key=lambda r: r.outstanding)
                if best.outstanding < self.ep.concurrency:
                    break
                await self._changed.wait()
            best.outstanding += 1
            return best

    async def _release(self, r: Replica) -> None:
        async with self._changed:
            r.outstanding -= 1
            self._changed.notify()

    async def attempt(self, method: str, path: str, body: dict | None) -> tuple[Replica, httpx.Response | str]:
        """One try on the best endpoint: its response, or why it failed (the endpoint's health
        updated). A response of any status is the caller's to judge."""
        r = await self._acquire()
        try:
            return r, await self._on(r, method, path, body)
        finally:
            await self._release(r)

    async def _on(self, r: Replica, method: str, path: str, body: dict | None) -> httpx.Response | str:
        request = asyncio.ensure_future(r.http.request(method, f"{r.url}{path}", json=body))
        # While in service, its being taken out ends the wait when another endpoint can take the
        # request (the answer is never read); with none, waiting for it is the best there is.
        gone = asyncio.ensure_future(r.gone.wait()) if r.up else None
        try:
            while not request.done():
                await asyncio.wait([t for t in (request, gone) if t is not None], return_when=asyncio.FIRST_COMPLETED)
                if gone is not None and gone.done() and not request.done():
                    if any(x.up for x in self.replicas):
                        request.cancel()
                        return "taken out of service while the request was in flight"
                    gone = None
        finally:
            for task in (request, gone):
                if task is not None and not task.done():
                    task.cancel()
        try:
            resp = request.result()
        except httpx.TimeoutException:
            return self._failed(r, f"timed out after {self.ep.timeout_s:g} s")
        except httpx.TransportError as exc:
            why = f"connection failed ({type(exc).__name__}: {exc or 'no detail'})"
            self._failed(r, why)
            await self._check(r, why)
            return why
        if resp.status_code >= 500 or resp.status_code == 429:
            from recaption.client import snippet

            why = f"HTTP {resp.status_code}: {snippet(resp)}"
            # 429 is a server at its limit, not a broken one: retried, never a reason to take it out
            return self._failed(r, why) if resp.status_code != 429 else self._busy(r, why)
        r.answered += 1
        r.streak = 0
        r.last_answer = time.monotonic()
        if not r.up:
            self.put_back(r)
        return resp

    def _failed(self, r: Replica, why: str) -> str:
        r.failures += 1
        r.streak += 1
        if r.streak >= self.ep.eject_after:
            self.take_out(r, f"{r.streak} failures in a row, the last: {why}")
        return why

    def _busy(self, r: Replica, why: str) -> str:
        r.failures += 1
        return why

    def may_resend(self, r: Replica) -> bool:
        """A failure on an endpoint now out of service is re-sent to one in service, free."""
        return not r.up and any(x.up for x in self.replicas)

    def where(self, r: Replica) -> str:
        return f" at {r.url}" if len(self.replicas) > 1 else ""

    def counts(self) -> dict[str, dict]:
        return {r.url: r.state() for r in self.replicas}
