"""What a captioning stage will cost before it is paid for (`plan`): images, requests, and from the
throughput one replica sustains (a measured figure the user sets: benchmarks/bench_recaption.py
prints it for a server) the wall-clock and GPU-hours on the configured replicas.

    completions = images x samples          (recaption: samples 1; Prism's captions: N per image;
                                             Prism's answers: questions x N, text only)
    wall-clock  = completions / (replicas x throughput_per_replica)
    GPU-hours   = wall-clock x replicas x gpus_per_replica

Replicas: the `endpoints` listed, else `serve.replicas`, else 1. Imports nothing heavy."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The captioner keys this module reads (offered with the other optional keys in CAPTIONER_DEFAULTS).
COST_DEFAULTS: dict[str, Any] = dict(
    throughput_per_replica=None,   # completions/s one replica sustains (images/s for recaption), measured
    gpus_per_replica=1,
)


def replicas(settings: Mapping) -> int:
    if settings.get("endpoints"):
        return len(settings["endpoints"])
    return int((settings.get("serve") or {}).get("replicas") or 1)


def recaption_cost(view) -> list[str]:
    """The recaption stage's plan line (its kind's `describe` hook; stagekit.plan.PlanView)."""
    images, how = recaption_images(view)
    return [cost_line("captioner", images, how, 1, view.settings["captioner"], "images")]


def prism_cost(view) -> list[str]:
    """A Prism stage's plan line: its captions (N per image) or its answers (N per question)."""
    from prism.files import PrismFileError

    try:
        questions = _questions(view.config)
    except PrismFileError as exc:
        return [f"cost: unknown until the Prism files can be read ({exc})"]
    if view.name == "prism.captions":
        return [cost_line("captioner", len({q.image for q in questions}), "in the Prism files",
                          int(view.config["samples"]), view.settings["captioner"], "images")]
    return [cost_line("prism.answerer", len(questions), "in the Prism files", int(view.config["samples"]),
                      view.settings["answerer"], "questions")]


def _questions(config: Mapping) -> list:
    from prism.stage import load_questions

    return load_questions(config)


def recaption_images(view) -> tuple[int | None, str]:
    """How many images the stage captions, and where the count comes from (an upper bound before
    the image set's data_prep has run)."""
    config = view.config
    if config.get("image_list"):
        from recaption.images import ImageSetError, listed_images

        try:
            return len(listed_images(config["image_list"], config["image_root"])), f"in {config['image_list']}"
        except (ImageSetError, OSError) as exc:
            return None, f"unknown ({exc})"
    manifest = Path(view.inputs["images"]) / "manifest.json"
    if (manifest.parent / ".done.json").exists() and manifest.exists():
        rows = int(json.loads(manifest.read_text())["rows_kept"])
        return rows, "at most: the rows data_prep kept"
    source = view.run_cfg["captions"]["recaption"]["images"]
    key = "subset_size" if source.get("subset_size") else "expected_rows"
    if source.get(key):
        return int(source[key]), f"at most: the source's {key}"
    return None, "unknown until data_prep.recaption_images is done (or set the source's subset_size)"


def cost_line(section: str, items: int | None, how: str, samples: int, settings: Mapping, what: str) -> str:
    n = replicas(settings)
    if items is None:
        return f"cost: {what} {how}"
    completions = items * samples
    head = (f"cost: {items:,} {what} ({how}), {completions:,} completions"
            + (f" ({items:,} x {samples} samples)" if samples > 1 else "") + f"; {n} replica{'s' if n > 1 else ''}")
    rate = settings.get("throughput_per_replica")
    if not rate:
        return (f"{head}; set {section}.throughput_per_replica (completions/s one replica sustains, measured: "
                "benchmarks/bench_recaption.py) for wall-clock and GPU-hours")
    hours = completions / (n * float(rate)) / 3600
    gpus = n * int(settings.get("gpus_per_replica") or 1)
    return (f"{head} x {float(rate):g}/s -> {_hours(hours)} h wall-clock, {_hours(hours * gpus)} GPU-hours "
            f"({gpus} GPU{'s' if gpus > 1 else ''}; estimate)")


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 10 else f"{h:.3g}"
