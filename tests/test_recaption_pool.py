"""Many endpoints, one stage (recaption/pool.py) against scripted loopback endpoints: the least
busy endpoint gets the next request, an endpoint that dies is taken out and its requests in flight
re-sent elsewhere, one that comes back is put back, and the journal holds every image once. The
real-server version (two `llamafactory-cli api`, one SIGKILLed) is in test_recaption_replicas.py."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import pytest

from harness.chain import build_chain
from harness.config import compose_config, to_plain
from harness.stage import chain_fingerprints
from recaption.endpoint import EndpointConfigError, parse_endpoint
from recaption.pool import Pool
from recaption.serve import free_port
from recaption.stage import JOURNAL, caption_images
from tests.stub_endpoint import StubEndpoint
from tests.test_recaption import write_pngs

RECAPTIONED = "captions=recaptioned_synthetic"


def endpoint(urls: list[str], **extra):
    return parse_endpoint({"name": "cap", "model": "stub", "endpoints": urls, "concurrency": 2, "retries": 0,
                           "backoff_s": 0.01, "timeout_s": 10, "progress_s": 60, "probe_s": 0.05, **extra})


KEYS = [f"{i:02d}.png" for i in range(12)]


@pytest.fixture
def images(tmp_path):
    return write_pngs(tmp_path / "images", KEYS, size=8)


def journal_keys(folder) -> list[str]:
    return [json.loads(x)["key"] for x in (folder / JOURNAL).read_text().split("\n")[:-1]]


def test_which_endpoints_serve_the_stage_changes_no_fingerprint(results_dir):
    def fps(*overrides):
        return chain_fingerprints(build_chain(to_plain(compose_config([RECAPTIONED, "captioner=caprl_3b", *overrides]))))

    assert fps("captioner.base_url=null", "captioner.endpoints=[http://a:8000/v1,http://b:8000/v1]",
               "captioner.eject_after=1", "captioner.probe_s=1") == fps()


def test_endpoints_config_errors_name_the_key():
    base = {"name": "x", "model": "m"}
    with pytest.raises(EndpointConfigError, match=r"captioner: set base_url \(one endpoint\) or endpoints \(several\), "
                                                  r"not both: add captioner.base_url=null"):
        parse_endpoint({**base, "base_url": "http://a/v1", "endpoints": ["http://b/v1"]})
    with pytest.raises(EndpointConfigError, match=r"captioner.endpoints must be a list of base URLs.*got 'http://a/v1'"):
        parse_endpoint({**base, "endpoints": "http://a/v1"})
    with pytest.raises(EndpointConfigError, match=r"captioner.endpoints lists a URL twice"):
        parse_endpoint({**base, "endpoints": ["http://a/v1", "http://a/v1"]})
    with pytest.raises(EndpointConfigError, match=r"prism.answerer.eject_after=0 is too small"):
        parse_endpoint({**base, "base_url": "http://a/v1", "eject_after": 0}, "prism.answerer")
    assert parse_endpoint({**base, "base_url": "http://a/v1"}).urls == ("http://a/v1",)


def test_the_least_busy_endpoint_gets_the_next_request_up_to_its_concurrency():
    async def scenario():
        pool = Pool(endpoint(["http://a/v1", "http://b/v1", "http://c/v1"]), ["http://a/v1", "http://b/v1",
                                                                                  "http://c/v1"], {})
        got = [await pool._acquire() for _ in range(5)]
        assert [r.url for r in got] == ["http://a/v1", "http://b/v1", "http://c/v1", "http://a/v1", "http://b/v1"]
        await pool._release(got[0])                                      # a: 1, b: 2, c: 1 -> a first
        assert (await pool._acquire()).url == "http://a/v1"
        assert (await pool._acquire()).url == "http://c/v1"
        waiting = asyncio.create_task(pool._acquire())                    # all at concurrency 2: waits
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await pool._release(got[1])
        assert (await asyncio.wait_for(waiting, 1)).url == "http://b/v1"
        pool.take_out(pool.replicas[1], "test")                           # out of service: skipped
        await pool._release(got[2])
        assert (await pool._acquire()).url == "http://c/v1"
        assert pool.capacity == 6
        await pool.close()

    asyncio.run(scenario())


def test_an_endpoint_down_at_the_start_is_left_out_and_put_back_when_it_answers(images, tmp_path):
    port = free_port()
    dead_url = f"http://127.0.0.1:{port}/v1"
    live = StubEndpoint(delay_s=0.05)   # 12 images one at a time: 0.6 s, time for the other to come back
    later: list[StubEndpoint] = []
    said: list[str] = []
    try:
        def log(line: str) -> None:
            said.append(line)
            if "taken out" in line:                               # it comes up once the run has started
                threading.Timer(0.05, lambda: later.append(StubEndpoint(port=port, delay_s=0.03))).start()

        ep = endpoint([dead_url, live.url], concurrency=1)
        out = asyncio.run(caption_images(ep, KEYS, images, tmp_path, log=log))
        assert (out.succeeded, out.failed) == (12, {})
        assert sorted(journal_keys(tmp_path)) == KEYS                          # each once
        assert said[0].startswith(f"endpoint {dead_url} taken out of service (connection failed")
        assert f"endpoint {dead_url} answers again: back in service" in said
        assert len(later[0].requests) >= 1 and len(later[0].requests) + len(live.requests) == 12
    finally:
        live.close()
        for s in later:
            s.close()


def test_a_killed_endpoint_is_taken_out_and_its_requests_in_flight_go_elsewhere(images, tmp_path):
    doomed, steady = StubEndpoint(delay_s=0.5), StubEndpoint(delay_s=0.02)
    said: list[str] = []
    try:
        def kill_when_busy():                                      # while its first 2 requests are in flight
            deadline = time.monotonic() + 10
            while len(doomed.requests) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            doomed.kill()

        threading.Thread(target=kill_when_busy).start()
        out = asyncio.run(caption_images(endpoint([doomed.url, steady.url]), KEYS, images, tmp_path,
                                         log=said.append))
        assert (out.succeeded, out.failed) == (12, {})          # retries=0: the re-sends spent none
        assert sorted(journal_keys(tmp_path)) == KEYS
        assert len(doomed.requests) == 2                         # both dropped, both re-sent
        assert len(steady.requests) == 12
        # found by a dropped request or by the periodic probe of a silent endpoint, whichever comes first
        assert any(re.match(rf"endpoint {doomed.url} taken out of service \((connection failed|no answer for).*"
                            r"GET /models failed\); 1 of 2 in service", m) for m in said), said
        final = said[-1]
        assert final.startswith("finished: 12/12 images (12 ok, 0 failed)")
        found = re.search(rf"; endpoints: {doomed.url[7:-3]} 0 ok \(0.00/s, 0.0 tokens/s\) [12] failed \(out\), "
                          rf"{steady.url[7:-3]} 12 ok \([0-9.]+/s, ([0-9.]+) tokens/s\)$", final)
        assert found, final
        # every token came from the endpoint that answered: its tokens/s is the whole run's (5 per answer)
        assert found.group(1) == re.search(r", ([0-9.]+) tokens/s;", final).group(1) != "0.0"
    finally:
        steady.close()


def test_progress_is_readable_by_status_while_the_stage_runs(images, tmp_path):
    from recaption.stage import progress

    a, b = StubEndpoint(delay_s=0.02), StubEndpoint(delay_s=0.02)
    try:
        ep = endpoint([a.url, b.url], progress_s=0.05)
        asyncio.run(caption_images(ep, KEYS, images, tmp_path, log=lambda m: None))
        info = progress(tmp_path, {})
        assert info["todo"] == 12 and set(info["endpoints"]) == {a.url, b.url}
        assert info["text"].startswith("progress: ") and "; endpoints: " in info["text"]
    finally:
        a.close()
        b.close()


def test_the_progress_line_counts_per_endpoint_and_marks_those_out():
    from recaption.engine import Outcome, endpoints_part, progress_line

    counts = {"http://gpu1:8000/v1": {"up": True, "outstanding": 4, "answered": 20, "tokens": 400, "failures": 0},
              "https://gpu2:8000/v1": {"up": False, "outstanding": 0, "answered": 5, "tokens": 100, "failures": 3}}
    out = Outcome(total=100, done_before=0, succeeded=25, failed={"x.png": "gone"}, tokens=500)
    assert progress_line(out, 100, 10.0, "images") + endpoints_part(counts, 10.0) == (
        "progress: 26/100 images (25 ok, 1 failed) in 10.0 s, 2.50 images/s, 50.0 tokens/s, ETA 30 s; "
        "endpoints: gpu1:8000 20 ok (2.00/s, 40.0 tokens/s), gpu2:8000 5 ok (0.50/s, 10.0 tokens/s) 3 failed (out)")
    assert endpoints_part({"http://one/v1": counts["http://gpu1:8000/v1"]}, 10.0) == ""   # one endpoint: as before
