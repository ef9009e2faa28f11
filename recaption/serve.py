"""Where an endpoint's requests go: its base_url, or a server the harness starts for the stage.

With `serve: {model_dir, template}` the stage runs `llamafactory-cli api` on loopback for its own
duration (`replicas: N` of them, used as one pool) (the embedded world's tiny captioner; any Qwen2.5-VL folder on CPU or one GPU). The
served name is the config's `model` (API_MODEL_NAME), so the same model check applies as for an
external server; a key, when one is configured, is handed over in the environment (API_KEY),
and the runner masks it in the log like any secret.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from recaption.endpoint import Endpoint
from stagekit import Serving

READY_POLL_S = 0.5


class ServeFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_yaml(serve: dict) -> str:
    import yaml

    return yaml.safe_dump({"model_name_or_path": str(serve["model_dir"]), "template": serve.get("template") or "qwen2_vl",
                           "infer_backend": serve.get("infer_backend") or "huggingface", "trust_remote_code": True},
                          sort_keys=False)


def api_command(yaml_path: Path) -> list[str]:
    # the CLI of this interpreter's environment (LLaMA-Factory is installed beside the harness)
    return [str(Path(sys.executable).parent / "llamafactory-cli"), "api", str(yaml_path)]


@contextlib.contextmanager
def endpoint_urls(ep: Endpoint, work_dir: Path, log=print) -> Iterator[list[str]]:
    """The base URLs to send requests to, serving the model for the duration when configured
    (`serve.replicas` servers, each on its own port, logging to server_<name>[_<i>].log)."""
    if not ep.serve:
        yield list(ep.urls)
        return
    replicas = int(ep.serve.get("replicas") or 1)
    yaml_path = work_dir / f"serve_{ep.name}.yaml"
    yaml_path.write_text(api_yaml(ep.serve))
    env = {"API_HOST": "127.0.0.1", "API_MODEL_NAME": ep.model}
    if ep.api_key_env:
        env["API_KEY"] = ep.api_key()   # masked in the log: API_KEY is a secret name
    with contextlib.ExitStack() as stack:
        started = []
        for i in range(replicas):
            port = int(ep.serve["port"]) + i if ep.serve.get("port") else free_port()
            base = f"http://127.0.0.1:{port}/v1"
            log_path = work_dir / f"server_{ep.name}{f'_{i}' if i else ''}.log"
            log(f"serving {ep.serve['model_dir']} as {ep.model!r} at {base} (llamafactory-cli api, log: {log_path})")
            server = stack.enter_context(Serving(api_command(yaml_path), env={**env, "API_PORT": str(port)},
                                                 log_path=log_path))
            started.append((server, base))
        for server, base in started:   # started together, so they load their weights side by side
            wait_ready(server, base, float(ep.serve.get("startup_timeout_s") or 300))
        yield [base for _, base in started]


def wait_ready(server: Serving, base: str, timeout_s: float) -> None:
    """Until GET /models answers; a server that exits meanwhile fails with its last lines."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServeFailed(f"llamafactory-cli api exited with {server.proc.returncode} before serving; last lines:\n"
                              + "\n".join(server.tail))
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(READY_POLL_S)
    raise ServeFailed(f"llamafactory-cli api did not answer at {base} within {timeout_s:.0f} s; last lines:\n"
                      + "\n".join(server.tail))
