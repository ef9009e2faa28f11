"""The bill before launching: tokens per training stage, training FLOPs, and GPU-hours on a chosen
GPU at an assumed model-FLOPs utilisation (config node `cost`). An estimate, printed as one.

Tokens = samples trained on x tokens computed per sample.
- samples: max_steps x global batch when max_steps is set (the trainer cycles through the data
  as often as it takes; with packing a batch row holds several samples), else rows x num_train_epochs.
- tokens computed per sample from the data_prep manifest of the stage's data: from its per-row
  length histogram, what the device batches compute with their padding, unpacked or packed
  (train/efficiency.py); from its totals alone (a manifest written before the histogram), the
  tokens the samples hold, padding not counted. Before
  data_prep has run: at most cutoff_len (data_prep drops longer samples), with rows from the
  source's subset_size, else its expected_rows (the published size); printed as an upper bound.
  Without any of them: unknown.

FLOPs, a dense-transformer approximation (attention and the LM head ignored): a module of P
parameters that sees T tokens costs 2PT forward; backward costs 2PT for its weight gradients if
it trains, plus 2PT for activation gradients if it or any module before it trains (the gradient
must pass through it to reach trainable weights). Modules in forward order:
    ViT blocks  P = params.vit - params.projector   T = 4 x visual tokens (14-px patches, 2x2 merge)
    projector   P = params.projector (0 if the backbone does not give it: ~1% of the ViT)
                                                    T = visual tokens
    LLM         P = params.llm                      T = text + visual tokens
Everything trainable gives the familiar 6PT; stage 0 (projector only) costs 2PT in the ViT and
4PT in the LLM (forward, plus activation gradients down to the projector)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

PATCHES_PER_VISUAL_TOKEN = 4   # Qwen2.5-VL merges 2x2 ViT patches into one LLM token


def read_manifest(data_dir: Path) -> dict | None:
    """The manifest of a finished data_prep stage (None before): the one place here that knows
    where data_prep writes it (data_prep/outdir.py MANIFEST; not imported, plan stays light)."""
    path = Path(data_dir) / "manifest.json"
    if not (Path(data_dir) / ".done.json").exists() or not path.exists():
        return None
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Tokens:
    llm: float          # tokens through the LLM: text + visual
    visual: float       # visual tokens (after the 2x2 merge)
    how: str            # where the count comes from, printed with it
    upper_bound: bool = False
    useful: float | None = None   # tokens the samples hold (llm less the padding), when known
    efficiency: object = None     # train.efficiency.Efficiency per sample, when the histogram is known


def stage_tokens(common: Mapping, global_batch: int, manifest: dict | None, source: Mapping,
                 packing: bool = False) -> Tokens | None:
    rows, rows_how = _rows(manifest, source)
    eff = _efficiency(common, manifest)
    per_row = eff.samples_per_row if packing and eff is not None else 1.0
    samples = _samples(common, global_batch, rows, rows_how, per_row)
    if samples is None:
        return None
    samples, how = samples
    if manifest is not None:
        text, visual = (float(manifest[k]) / rows if rows else 0.0
                        for k in ("total_text_tokens", "total_visual_tokens"))
        if eff is None:
            return Tokens(samples * (text + visual), samples * visual,
                          f"{samples:,.0f} samples = {how}; {text + visual:,.1f} tokens per sample from data_prep")
        computed = eff.packed if packing else eff.unpacked
        return Tokens(samples * computed, samples * visual,
                      f"{samples:,.0f} samples = {how}; {computed:,.1f} tokens computed per sample "
                      f"{'packed' if packing else 'unpacked'} ({eff.padding(computed):.1%} padding) from data_prep",
                      useful=samples * eff.useful, efficiency=eff)
    # A sample never exceeds cutoff_len, so neither its LLM tokens nor its visual tokens do.
    cutoff = int(common["cutoff_len"])
    return Tokens(samples * cutoff, samples * cutoff, f"{samples:,.0f} samples = {how}, each at most cutoff_len "
                  f"{cutoff}; data_prep not done", upper_bound=True)


def _efficiency(common: Mapping, manifest: dict | None):
    if manifest is None or not manifest.get("seq_len_histogram"):
        return None
    from train.efficiency import efficiency

    return efficiency(manifest["seq_len_histogram"], int(common.get("per_device_train_batch_size", 1)),
                      int(common["cutoff_len"]))


def _rows(manifest: dict | None, source: Mapping) -> tuple[int | None, str]:
    """The rows of the stage's data: kept by data_prep, else what the source config says."""
    if manifest is not None:
        rows = int(manifest["rows_kept"])
        return rows, f"{rows:,} rows"
    key = "subset_size" if source.get("subset_size") else "expected_rows"
    rows = source.get(key)
    return (int(rows), f"{key} {int(rows):,}") if rows else (None, "")


def _samples(common: Mapping, global_batch: int, rows: int | None, rows_how: str,
             per_row: float = 1.0) -> tuple[float, str] | None:
    """per_row: samples per batch row (packing puts several in one)."""
    steps = int(common.get("max_steps") or -1)
    if steps > 0:  # the trainer cycles through the data as often as it takes
        packed = f" rows x {per_row:.2f} samples per packed row" if per_row != 1.0 else ""
        return steps * global_batch * per_row, f"{steps} steps x global batch {global_batch}{packed}"
    if rows is None:
        return None
    epochs = float(common["num_train_epochs"])
    return rows * epochs, f"{rows_how} x {epochs:g} epoch(s)"


def train_flops(params: Mapping, spec: Mapping, tokens: Tokens) -> float:
    projector = float(params.get("projector", 0.0))
    modules = [  # forward order: (parameters, tokens seen, trains)
        (float(params["vit"]) - projector, PATCHES_PER_VISUAL_TOKEN * tokens.visual, not spec["freeze_vision_tower"]),
        (projector, tokens.visual, not spec["freeze_multi_modal_projector"]),
        (float(params["llm"]), tokens.llm, not spec["freeze_language_model"]),
    ]
    total, upstream_trains = 0.0, False
    for p, t, trains in modules:
        upstream_trains = upstream_trains or trains
        total += 2 * p * t * (1 + trains + upstream_trains)
    return total


@dataclass(frozen=True)
class StageCost:
    stage: str
    tokens: Tokens | None
    flops: float | None


def stage_cost(stage: str, stage_config: Mapping, data_dir: Path, cfg: Mapping) -> StageCost:
    """The estimate of one training stage (its chain config) on the data in data_dir."""
    from train.render import packs

    spec = stage_config["stage"]
    tokens = stage_tokens(stage_config["common"], int(spec["global_batch_size"]), read_manifest(data_dir),
                          cfg[spec["data"]], packing=packs(stage_config))
    return StageCost(stage, tokens, None if tokens is None else train_flops(cfg["backbone"]["params"], spec, tokens))


def gpu_hours(total_flops: float, cost: Mapping) -> float:
    return total_flops / (float(cost["peak_tflops"]) * 1e12 * float(cost["mfu"])) / 3600.0


def _bill(flops: float, cost: Mapping) -> str:
    hours = gpu_hours(flops, cost)
    return (f"{flops:.3g} FLOPs ~ {hours:,.1f}" if hours >= 10 else f"{flops:.3g} FLOPs ~ {hours:.3g}") + \
        f" {cost['gpu']} GPU-hours at {float(cost['mfu']):.0%} MFU"


def cost_line(est: StageCost, cost: Mapping) -> str:
    if est.tokens is None:
        return ("cost: tokens unknown until its data_prep stage is done (set train.common.max_steps, or the "
                "source's subset_size or expected_rows, for an upper bound)")
    t = est.tokens
    if t.upper_bound:
        return f"cost: at most {t.llm:,.0f} tokens ({t.how}) -> {_bill(est.flops, cost)} (upper bound)"
    return f"cost: {t.llm:,.0f} tokens ({t.how}) -> {_bill(est.flops, cost)} (estimate)"


def total_line(estimates: Sequence[StageCost], cost: Mapping, world_size: int) -> str:
    known = [e for e in estimates if e.tokens is not None]
    if not known:
        return "total training cost: unknown until the data_prep stages are done"
    flops = sum(e.flops for e in known)
    bound = any(e.tokens.upper_bound for e in known)
    unknown = [e.stage for e in estimates if e.tokens is None]
    wall = gpu_hours(flops, cost) / world_size
    return (f"total training cost ({len(known)} stage(s){', without ' + ', '.join(unknown) if unknown else ''}): "
            f"{'at most ' if bound else ''}{sum(e.tokens.llm for e in known):,.0f} tokens -> {_bill(flops, cost)}"
            f", ~{wall:.3g} h wall-clock on {world_size} GPU(s) ({'upper bound' if bound else 'estimate'})")
