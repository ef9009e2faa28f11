"""The `captioner` config (configs/hydra/captioner/) and one OpenAI-compatible chat endpoint.

A captioner is whatever answers `POST {base_url}/chat/completions` with an image: vLLM serving
CapRL-3B (`vllm serve ... --served-model-name caprl`), LLaMA-Factory's `llamafactory-cli api`,
or any other OpenAI-compatible server. Prism's answer model is the same kind of endpoint, text only.

What decides the captions (fingerprinted): the model's identity, the prompt and the sampling.
How they are fetched (run-only): the URL or URLs (replicas, recaption/pool.py), the key's
variable, concurrency per endpoint, time-outs, retries and the failure budget: the same captioner
reached through another node's port, or through ten replicas instead of one, writes the same
captions. The API key is read from the variable named by `api_key_env` when a request is made;
it is never part of a config, a file or a log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recaption.cost import COST_DEFAULTS
from recaption.pool import POOL_DEFAULTS
from recaption.slurm import SLURM_DEFAULTS

# The one place a captioner's optional keys get their defaults (offered to the YAMLs as the
# base config `captioner_defaults`). Prompt and sampling are the paper's (Prism protocol).
CAPTIONER_DEFAULTS: dict[str, Any] = dict(
    label=None,
    base_url=None,             # e.g. http://gpu-node:8000/v1; null with `serve` (the harness serves it)
    identity=None,             # what the served weights are, e.g. internlm/CapRL-3B@<revision>
    prompt="Please describe this image in detail.",
    system_prompt=None,        # the paper sends none
    temperature=1.0,
    top_p=1.0,
    max_tokens=2048,
    repetition_penalty=1.0,
    seed=None,
    concurrency=16,
    timeout_s=600.0,
    retries=5,                 # attempts after the first, on time-outs, 5xx, 429 and lost connections
    backoff_s=1.0,             # first wait; doubles per attempt up to backoff_max_s
    backoff_max_s=60.0,
    api_key_env=None,          # name of the variable holding the key, e.g. CAPTIONER_API_KEY
    max_failed_fraction=0.01,  # the stage fails when more images than this finally fail
    progress_s=10.0,           # seconds between progress lines
    serve=None,                # {model_dir, template, port, replicas}: the harness starts llamafactory-cli api
    **POOL_DEFAULTS,           # endpoints (replicas of one model), eject_after, probe_s: recaption/pool.py
    slurm=None,                # {shards, gpus_per_task, ...}: one SLURM array task per replica (recaption/slurm.py)
    **COST_DEFAULTS,           # throughput_per_replica, gpus_per_replica: what `plan` estimates (recaption/cost.py)
)
# What decides the output; everything else in CAPTIONER_DEFAULTS is how it is fetched.
OUTPUT_KEYS = ("name", "model", "identity", "prompt", "system_prompt", "temperature", "top_p", "max_tokens",
               "repetition_penalty", "seed")
SERVE_KEYS = ("model_dir", "template", "port", "infer_backend", "startup_timeout_s", "replicas")
SERVE_OUTPUT_KEYS = ("model_dir", "template", "infer_backend")


class EndpointConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Endpoint:
    name: str
    model: str
    base_url: str | None
    prompt: str
    system_prompt: str | None
    sampling: Mapping[str, Any]
    api_key_env: str | None
    concurrency: int
    timeout_s: float
    retries: int
    backoff_s: float
    backoff_max_s: float
    max_failed_fraction: float
    progress_s: float
    serve: Mapping[str, Any] | None = None
    urls: tuple[str, ...] = ()     # base_url, or the endpoints (empty with serve: known once served)
    eject_after: int = 3
    probe_s: float = 10.0
    slurm: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def api_key(self) -> str | None:
        """The key, read when needed from the named variable (never stored)."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise EndpointConfigError(f"{self.name}: api_key_env names {self.api_key_env!r}, but that variable "
                                      "is not set in the environment")
        return key


def parse_endpoint(cfg: Mapping[str, Any], section: str = "captioner") -> Endpoint:
    """Check a captioner mapping; errors name the section and the key."""
    values = {**CAPTIONER_DEFAULTS, **dict(cfg)}
    known = {"name", "model", *CAPTIONER_DEFAULTS}
    unknown = sorted(set(values) - known)
    if unknown:
        raise EndpointConfigError(f"{section}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                                  f"valid keys: {', '.join(sorted(known))}")
    for key in ("name", "model"):
        if not values.get(key):
            raise EndpointConfigError(f"{section}.{key} is required")
    serve = dict(values["serve"]) if values["serve"] else None
    urls = _urls(values, section)
    if serve is None and not urls:
        raise EndpointConfigError(f"{section}: set base_url (e.g. http://host:8000/v1), endpoints (a list of such "
                                  "URLs, replicas of one model) or serve (the harness starts llamafactory-cli api)")
    if serve is not None and urls:
        raise EndpointConfigError(f"{section}: serve starts its own server; set base_url and endpoints to null")
    if serve is not None:
        _check_serve(serve, section)
    slurm = {**SLURM_DEFAULTS, **dict(values["slurm"])} if values.get("slurm") else None
    if slurm is not None:
        _check_slurm(slurm, serve, section)
    for key in ("concurrency", "retries", "eject_after"):
        if int(values[key]) < (0 if key == "retries" else 1):
            raise EndpointConfigError(f"{section}.{key}={values[key]!r} is too small")
    if not 0 <= float(values["max_failed_fraction"]) <= 1:
        raise EndpointConfigError(f"{section}.max_failed_fraction must be within [0, 1]")
    sampling = {"temperature": values["temperature"], "top_p": values["top_p"], "max_tokens": values["max_tokens"],
                "repetition_penalty": values["repetition_penalty"], "seed": values["seed"]}
    return Endpoint(name=values["name"], model=values["model"], base_url=values["base_url"], prompt=values["prompt"],
                    system_prompt=values["system_prompt"], sampling=sampling, api_key_env=values["api_key_env"],
                    concurrency=int(values["concurrency"]), timeout_s=float(values["timeout_s"]),
                    retries=int(values["retries"]), backoff_s=float(values["backoff_s"]),
                    backoff_max_s=float(values["backoff_max_s"]),
                    max_failed_fraction=float(values["max_failed_fraction"]), progress_s=float(values["progress_s"]),
                    serve=serve, urls=tuple(urls), eject_after=int(values["eject_after"]),
                    probe_s=float(values["probe_s"]), slurm=slurm)


def _urls(values: Mapping[str, Any], section: str) -> list[str]:
    """The one base_url, or the endpoints list; both set is a contradiction, said at once."""
    many = values.get("endpoints")
    if many is None:
        return [str(values["base_url"])] if values.get("base_url") else []
    if isinstance(many, str) or not all(isinstance(u, str) and u for u in many) or not many:
        raise EndpointConfigError(f"{section}.endpoints must be a list of base URLs, e.g. "
                                  f"[http://node1:8000/v1, http://node2:8000/v1]; got {many!r}")
    if values.get("base_url"):
        raise EndpointConfigError(f"{section}: set base_url (one endpoint) or endpoints (several), not both: "
                                  f"add {section}.base_url=null")
    if len(set(many)) < len(many):
        raise EndpointConfigError(f"{section}.endpoints lists a URL twice: {list(many)}")
    return list(many)


def _check_slurm(slurm: dict, serve: dict | None, section: str) -> None:
    unknown = sorted(set(slurm) - set(SLURM_DEFAULTS))
    if unknown:
        raise EndpointConfigError(f"{section}.slurm: unknown keys {', '.join(unknown)}; valid keys: "
                                  f"{', '.join(SLURM_DEFAULTS)}")
    if serve is None:
        raise EndpointConfigError(f"{section}.slurm: every array task serves its own replica; set {section}.serve "
                                  "(model_dir, template; infer_backend: vllm for vLLM)")
    for key in ("shards", "cpus_per_task", "timeout_min"):
        if int(slurm[key]) < 1:
            raise EndpointConfigError(f"{section}.slurm.{key}={slurm[key]!r} must be at least 1")


def _check_serve(serve: dict, section: str) -> None:
    if int(serve.get("replicas") or 1) < 1:
        raise EndpointConfigError(f"{section}.serve.replicas must be at least 1")
    unknown = sorted(set(serve) - set(SERVE_KEYS))
    if unknown:
        raise EndpointConfigError(f"{section}.serve: unknown keys {', '.join(unknown)}; valid keys: "
                                  f"{', '.join(SERVE_KEYS)}")
    if not serve.get("model_dir"):
        raise EndpointConfigError(f"{section}.serve.model_dir is required (the model folder to serve)")


def output_config(cfg: Mapping[str, Any]) -> dict:
    """The part of a captioner config that decides what it writes (a stage's fingerprint)."""
    values = {**CAPTIONER_DEFAULTS, **dict(cfg)}
    out = {k: values.get(k) for k in OUTPUT_KEYS}
    if values.get("serve"):
        out["served"] = {k: values["serve"].get(k) for k in SERVE_OUTPUT_KEYS}
    return out


def run_settings(cfg: Mapping[str, Any]) -> dict:
    """The rest: how the endpoint is reached (never fingerprinted)."""
    values = {**CAPTIONER_DEFAULTS, **dict(cfg)}
    return {k: v for k, v in values.items() if k not in OUTPUT_KEYS}


def endpoint_from(config: Mapping[str, Any], settings: Mapping[str, Any], section: str = "captioner") -> Endpoint:
    """The endpoint of a stage, from its fingerprinted half and its run-only half."""
    return parse_endpoint({**{k: v for k, v in config.items() if k != "served"}, **settings}, section)
