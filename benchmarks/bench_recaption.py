"""Recaption throughput: the client's own ceiling, and one figure against the real server.

1. A loopback stub that answers every chat request after a fixed delay (a stand-in for a GPU
   server's latency; stdlib http.server, one thread per request, so it never queues): a plain
   sequential request loop, then the recaption engine (recaption/engine.py, the journal included)
   at concurrency 1, 4 and 16, each as a ratio to the sequential loop measured in the same run.
   Target: >= 12x at concurrency 16.
2. Many endpoints (recaption/pool.py): 1, 2 and 4 such stubs at the same concurrency per
   endpoint, aggregate images/s as a ratio to one endpoint's (target >= 0.9 x N); then 2 stubs,
   one killed when half the images are done: the run must finish with every image journaled
   once and none failed.
3. `llamafactory-cli api` serving the embedded tiny Qwen2.5-VL on CPU: the sequential loop vs the
   engine at concurrency 4 (on 2 shared CPU cores the server, not the client, is the limit).

    .venv/bin/python benchmarks/bench_recaption.py [--images 256] [--delay 0.2] [--no-server]
        [--no-endpoints] [--only-endpoints] [--per-endpoint-images 256] [--per-endpoint-concurrency 16]

Each engine figure includes its run's fixed start (HTTP client, the model check, the journal),
about 0.1-0.2 s here: with 256 images that is a few percent, with 64 it is a third of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx

from recaption.client import image_messages, image_url
from recaption.endpoint import parse_endpoint
from recaption.stage import caption_images

TARGET_AT_16 = 12.0
TARGET_PER_ENDPOINT = 0.9


def stub_server(delay_s: float) -> tuple[ThreadingHTTPServer, str]:
    dead = threading.Event()   # set by kill(): requests in flight lose their connection, like a SIGKILL

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"   # keep-alive, like a real server: no reconnect per request
        disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)

        def log_message(self, *args):
            pass

        def _send(self, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send({"data": [{"id": "stub"}]})

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            if dead.wait(delay_s):
                self.close_connection = True
                return
            self._send({"choices": [{"message": {"content": "a caption"}, "finish_reason": "stop"}],
                        "usage": {"completion_tokens": 3}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256

    def kill() -> None:
        dead.set()
        server.shutdown()
        server.server_close()

    server.kill = kill
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def make_images(folder: Path, n: int) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (56, 56), (i % 256, 40, 90)).save(folder / f"{i:05d}.png")
    return [f"{i:05d}.png" for i in range(n)]


def endpoint(url: str | list[str], model: str, concurrency: int, max_tokens: int = 16):
    where = {"endpoints": url} if isinstance(url, list) else {"base_url": url}
    return parse_endpoint({"name": "bench", "model": model, **where, "concurrency": concurrency,
                           "max_tokens": max_tokens, "retries": 0, "progress_s": 3600})


def sequential(url: str, model: str, keys: list[str], root: Path, max_tokens: int = 16) -> float:
    """Images/s of the simplest client: one request after the other."""
    ep = endpoint(url, model, 1, max_tokens)
    t0 = time.perf_counter()
    with httpx.Client(timeout=600) as client:
        for k in keys:
            body = {"model": model, "messages": image_messages(ep, image_url(root / k)), "max_tokens": max_tokens,
                    "temperature": 1.0, "top_p": 1.0}
            client.post(f"{url}/chat/completions", json=body).raise_for_status()
    return len(keys) / (time.perf_counter() - t0)


def engine(url: str | list[str], model: str, keys: list[str], root: Path, concurrency: int, max_tokens: int = 16) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = asyncio.run(caption_images(endpoint(url, model, concurrency, max_tokens), keys, root, Path(out),
                                            log=lambda m: None))
        seconds = time.perf_counter() - t0
    assert result.succeeded == len(keys), result.failed
    return len(keys) / seconds


def stub_figures(images: int, delay: float, work: Path) -> bool:
    server, url = stub_server(delay)
    keys = make_images(work / "stub_images", images)
    base = sequential(url, "stub", keys[: max(8, images // 4)], work / "stub_images")
    print(f"stub endpoint, {delay * 1000:.0f} ms per request, {images} images")
    print(f"  sequential loop        {base:8.2f} images/s   1.00x")
    ok = True
    for c in (1, 4, 16):
        rate = engine(url, "stub", keys, work / "stub_images", c)
        ratio = rate / base
        note = f"   target >= {TARGET_AT_16:.0f}x: {'met' if ratio >= TARGET_AT_16 else 'NOT met'}" if c == 16 else ""
        ok = ok and (c != 16 or ratio >= TARGET_AT_16)
        print(f"  engine concurrency {c:<3} {rate:8.2f} images/s  {ratio:5.2f}x{note}")
    server.shutdown()
    return ok


def stub_process(delay_s: float):
    """A stub in its own process (a replica is its own server: its threads do not share the
    client's interpreter lock); kill() is a real SIGKILL. Returns (process, url)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    urls = ctx.Queue()

    def serve():
        server, url = stub_server(delay_s)
        urls.put(url)
        threading.Event().wait()

    proc = ctx.Process(target=serve, daemon=True)
    proc.start()
    return proc, urls.get(timeout=30)


def endpoints_figures(per_endpoint: int, concurrency: int, delay: float, work: Path) -> bool:
    """Aggregate images/s of 1, 2 and 4 stubs at the same concurrency each (images in proportion,
    so every run lasts about as long); then one of 2 killed halfway."""
    keys = make_images(work / "pool_images", per_endpoint * 4)
    root = work / "pool_images"
    print(f"{len(keys) // 4} images per endpoint, concurrency {concurrency} per endpoint, {delay * 1000:.0f} ms stubs")
    warm, url = stub_process(delay)
    engine(url, "stub", keys[:concurrency], root, concurrency)   # imports and first connections: not measured
    warm.kill()
    ok, one = True, None
    for n in (1, 2, 4):
        servers = [stub_process(delay) for _ in range(n)]
        rate = engine([u for _, u in servers], "stub", keys[:per_endpoint * n], root, concurrency)
        for proc, _ in servers:
            proc.kill()
        one = one or rate
        ratio = rate / one
        met = ratio >= TARGET_PER_ENDPOINT * n
        ok = ok and met
        target = "" if n == 1 else f"   target >= {TARGET_PER_ENDPOINT * n:.1f}x: {'met' if met else 'NOT met'}"
        print(f"  {n} endpoint{'s' if n > 1 else ' '}            {rate:8.2f} images/s  {ratio:5.2f}x{target}")
    return killed_halfway(keys[:per_endpoint * 2], root, concurrency, delay) and ok


def killed_halfway(keys: list[str], root: Path, concurrency: int, delay: float) -> bool:
    from recaption.stage import JOURNAL

    (doomed, a), (steady, b) = stub_process(delay), stub_process(delay)
    with tempfile.TemporaryDirectory() as out:
        journal = Path(out) / JOURNAL

        def kill_halfway():
            while not journal.exists() or len(journal.read_bytes().splitlines()) < len(keys) // 2:
                time.sleep(0.01)
            doomed.kill()   # SIGKILL: its requests in flight lose their connections

        threading.Thread(target=kill_halfway, daemon=True).start()
        t0 = time.perf_counter()
        said: list[str] = []
        result = asyncio.run(caption_images(endpoint([a, b], "stub", concurrency), keys, root, Path(out),
                                            log=said.append))
        seconds = time.perf_counter() - t0
        lines = [json.loads(x)["key"] for x in journal.read_text().split("\n")[:-1]]
    steady.kill()
    whole = sorted(lines) == sorted(keys) and len(lines) == len(keys) and not result.failed
    print(f"  2 endpoints, one SIGKILLed at {len(keys) // 2}/{len(keys)}: {len(lines)} journaled, "
          f"{len(set(lines))} distinct, {len(result.failed)} failed, {len(keys) / seconds:.2f} images/s: "
          f"{'nothing lost' if whole else 'LOST OR DUPLICATED'}")
    print(f"    {said[-1]}")
    return whole


def server_figures(images: int, work: Path) -> None:
    from embedded.world import build_world
    from recaption.serve import api_command, api_yaml, free_port, wait_ready
    from stagekit import Serving

    world = work / "world"
    build_world(world, {"n_train": images, "n_bench": 2, "seed": 0, "vocab_size": 1024, "vit_text_hidden": 48,
                        "llm_hidden": 64, "llm_layers": 2}, log=lambda m: None)
    port = free_port()
    (work / "api.yaml").write_text(api_yaml({"model_dir": str(world / "vit_source"), "template": "qwen2_vl"}))
    env = {"API_PORT": str(port), "API_HOST": "127.0.0.1", "API_MODEL_NAME": "tiny"}
    url = f"http://127.0.0.1:{port}/v1"
    root = world / "images"
    keys = sorted(str(p.relative_to(root)) for p in (root / "train").glob("*.png"))
    with Serving(api_command(work / "api.yaml"), env=env, log_path=work / "server.log") as srv:
        wait_ready(srv, url, 300)
        sequential(url, "tiny", keys[:2], root)   # warm-up
        base = sequential(url, "tiny", keys, root)
        rate = engine(url, "tiny", keys, root, 4)
    print(f"llamafactory-cli api, tiny Qwen2.5-VL on CPU, {len(keys)} images, 16 new tokens each")
    print(f"  sequential loop        {base:8.2f} images/s   1.00x")
    print(f"  engine concurrency 4   {rate:8.2f} images/s  {rate / base:5.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--server-images", type=int, default=24)
    ap.add_argument("--no-server", action="store_true")
    ap.add_argument("--no-endpoints", action="store_true")
    ap.add_argument("--only-endpoints", action="store_true")
    ap.add_argument("--per-endpoint-images", type=int, default=256)
    ap.add_argument("--per-endpoint-concurrency", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ok = True
        if not args.only_endpoints:
            ok = stub_figures(args.images, args.delay, Path(tmp))
        if not args.no_endpoints:
            ok = endpoints_figures(args.per_endpoint_images, args.per_endpoint_concurrency, args.delay, Path(tmp)) and ok
        if not args.no_server and not args.only_endpoints:
            server_figures(args.server_images, Path(tmp))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
