"""The bill before launching: tokens per training stage (from its data_prep manifest), training
FLOPs, and GPU-hours on a chosen GPU at an assumed utilisation (config node `cost`).

FLOPs use the usual dense-transformer estimate, 6 x parameters x tokens (forward + backward);
frozen parts still run forward and pass gradients back, so the estimate uses all parameters.
It is an estimate, printed as one, never a measurement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping


def stage_tokens(data_dir: Path, epochs: float) -> int | None:
    manifest = data_dir / "manifest.json"
    if not (data_dir / ".done.json").exists() or not manifest.exists():
        return None
    m = json.loads(manifest.read_text())
    return int((m.get("total_text_tokens", 0) + m.get("total_visual_tokens", 0)) * epochs)


def flops(params: float, tokens: int) -> float:
    return 6.0 * params * tokens


def gpu_hours(total_flops: float, cost: Mapping) -> float:
    return total_flops / (float(cost["peak_tflops"]) * 1e12 * float(cost["mfu"])) / 3600.0


def cost_line(data_dir: Path, epochs: float, backbone: Mapping, cost: Mapping) -> str:
    tokens = stage_tokens(data_dir, epochs)
    if tokens is None:
        return "cost: tokens unknown until its data_prep stage is done (run with until=<that stage>)"
    params = float(backbone["params"]["llm"]) + float(backbone["params"]["vit"])
    f = flops(params, tokens)
    return (f"cost: {tokens:,} tokens x {epochs:g} epoch(s) -> {f:.3g} FLOPs ~ {gpu_hours(f, cost):,.1f} "
            f"{cost['gpu']} GPU-hours at {float(cost['mfu']):.0%} utilisation (estimate)")
