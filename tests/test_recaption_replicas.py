"""Two real captioner replicas: `llamafactory-cli api` twice on loopback, serving the tiny Qwen2.5-VL
(started once for the module). One is SIGKILLed in the middle of the stage; the stage finishes on
the other, the journal holds every image once, and with greedy decoding the captions equal those
of a run against one endpoint, image by image."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from recaption.endpoint import parse_endpoint
from recaption.stage import CAPTIONS, JOURNAL, RUNS, caption_images, write_source
from tests.test_recaption_server import MODEL, LFServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replicas(captioner_world, tmp_path_factory):
    pair = [LFServer(captioner_world / "vit_source", tmp_path_factory.mktemp(f"replica{i}")) for i in range(2)]
    try:
        for server in pair:
            server.start()
        yield pair
    finally:
        for server in pair:
            if server.server is not None:
                server.server.stop()


def every_image(world: Path) -> list[str]:
    return sorted(str(p.relative_to(world / "images")) for p in (world / "images").rglob("*.png"))


def greedy(**where):
    # temperature 0: LLaMA-Factory decodes greedily, so every replica writes the same caption
    return parse_endpoint({"name": "tiny", "model": MODEL, "temperature": 0.0, "max_tokens": 16, "concurrency": 1,
                           "retries": 0, "timeout_s": 60, "probe_s": 0.5, "progress_s": 60, **where})


def captions(folder: Path) -> list[tuple[str, str]]:
    return [(r["image"], r["caption"]) for r in map(json.loads, (folder / CAPTIONS).read_text().split("\n")[:-1])]


def test_a_replica_killed_mid_stage_leaves_every_image_captioned_once_as_one_endpoint_would(
        captioner_world, replicas, tmp_path):
    keys, root = every_image(captioner_world), captioner_world / "images"
    assert len(keys) == 20
    survivor, doomed = replicas

    one = greedy(base_url=survivor.url)
    (tmp_path / "one").mkdir()
    out = asyncio.run(caption_images(one, keys, root, tmp_path / "one", log=print))
    write_source(tmp_path / "one", keys, out, one)

    (tmp_path / "warm").mkdir()        # its first request loads lazily: warmed, it answers like the other
    asyncio.run(caption_images(greedy(base_url=doomed.url), keys[:1], root, tmp_path / "warm", log=print))

    both = greedy(endpoints=[survivor.url, doomed.url], progress_s=0.02)
    journal, said, killed = tmp_path / "two" / JOURNAL, [], []
    (tmp_path / "two").mkdir()

    def log(line: str) -> None:
        # SIGKILL after its first answer, from inside the run (its progress line, written by the
        # run's own event loop): the run cannot finish on the survivor alone before the kill, as it
        # could while a test thread polled for the answer on a loaded machine
        said.append(line)
        if not killed and re.search(rf"127\.0\.0\.1:{doomed.port} [1-9]\d* ok", line):
            doomed.kill()
            killed.append(line)

    two = asyncio.run(caption_images(both, keys, root, tmp_path / "two", log=log))
    assert killed and not killed[0].startswith("finished"), f"the run ended before the kill: {said}"
    assert (two.succeeded, two.failed) == (20, {})                    # finished on the survivor, retries=0
    lines = [json.loads(x)["key"] for x in journal.read_text().split("\n")[:-1]]
    assert sorted(lines) == keys                                       # every image exactly once
    assert len((tmp_path / "two" / RUNS).read_text().split("\n")[:-1]) == 1   # one run, no re-run needed
    final = said[-1]
    served = {m.group(1): int(m.group(2)) for m in re.finditer(r"127\.0\.0\.1:(\d+) (\d+) ok", final)}
    assert served[str(doomed.port)] >= 1 and served[str(survivor.port)] + served[str(doomed.port)] == 20
    assert f"127.0.0.1:{doomed.port} {served[str(doomed.port)]} ok" in final and "(out)" in final, final
    assert any(m.startswith(f"endpoint {doomed.url} taken out of service") for m in said), said

    write_source(tmp_path / "two", keys, two, both)
    assert captions(tmp_path / "two") == captions(tmp_path / "one")   # image by image
