"""A scripted OpenAI-compatible HTTP endpoint on loopback, for testing our client's own rules
(retries, the stop on 4xx, the model check, the key header). It is not LLaMA-Factory: the tests
that claim the real server works start `llamafactory-cli api` (tests/test_recaption_server.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubEndpoint:
    """`script`: status codes to answer chat requests with, in order (then 200 for ever).
    Records every chat request body and the Authorization headers it saw."""

    def __init__(self, model: str = "stub", script: list[int] | None = None, delay_s: float = 0.0,
                 replies: list | None = None, port: int = 0):
        """`replies`: what the 200 answers hold, in order (then the default caption): a string or
        None is the message content of every choice, bytes is sent as the whole body."""
        self.model, self.script, self.delay_s = model, list(script or []), delay_s
        self.replies = list(replies or [])
        self.finish_reason = "stop"
        self.models_body: bytes | None = None   # set: GET /models answers 200 with exactly these bytes
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self._lock = threading.Lock()
        self.dead = False
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kill(self) -> None:
        """Like a SIGKILLed server: the port refuses, requests in flight lose their connection."""
        self.dead = True
        self.close()

    def _next_status(self) -> int:
        with self._lock:
            return self.script.pop(0) if self.script else 200

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if stub.models_body is not None:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(stub.models_body)))
                    self.end_headers()
                    return self.wfile.write(stub.models_body)
                self._send(200, {"object": "list", "data": [{"id": stub.model, "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.auth.append(self.headers.get("Authorization"))
                code = stub._next_status()
                with stub._lock:
                    stub.requests.append(body)
                if stub.delay_s:
                    import time

                    end = time.monotonic() + stub.delay_s
                    while time.monotonic() < end and not stub.dead:
                        time.sleep(0.01)
                if stub.dead:
                    self.close_connection = True
                    return None   # no reply: the client sees the connection drop
                if code != 200:
                    return self._send(code, {"error": {"message": f"scripted {code}"}})
                n = body.get("n", 1)
                with stub._lock:
                    reply = stub.replies.pop(0) if stub.replies else "default"
                if isinstance(reply, bytes):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    return self.wfile.write(reply)
                choices = [{"index": i, "message": {"role": "assistant", "content":
                            f"caption {i} \\boxed{{red}}" if reply == "default" else reply},
                            "finish_reason": stub.finish_reason} for i in range(n)]
                self._send(200, {"id": "x", "object": "chat.completion", "choices": choices,
                                 "usage": {"completion_tokens": 5 * n}})

        return Handler
