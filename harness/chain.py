"""From a composed config to the ordered chain of stages of one run.

    pipeline=pretrain (Tables 1-2):
    world (embedded only) -> init_vlm -> data_prep.{align_data,captions,sft_data}
      [a recaptioned caption source: data_prep.recaption_images -> recaption -> data_prep.captions]
      -> train.alignment -> train.further_pretrain (not for vanilla) -> train.sft
      -> evaluate [-> evaluate.reference] -> report
    pipeline=prism (Table 3):
    world (embedded only) -> prism.captions -> prism -> report

Each kind module (harness/kinds.py) says which stages it has and what decides their output;
this module only puts them in order, and makes every stage whose config points into the
embedded world (world://) read the world stage.
"""

from __future__ import annotations

from typing import Any, Mapping

from harness.kinds import CHAIN_ORDER
from harness.stage import Stage
from stagekit import run_label  # noqa: F401 - the run's name, re-exported for the harness

WORLD_PREFIX = "world://"


def uses_world(node: Any) -> bool:
    if isinstance(node, str):
        return node.startswith(WORLD_PREFIX)
    if isinstance(node, Mapping):
        return any(uses_world(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(uses_world(v) for v in node)
    return False


def resolve_world(node: Any, world_dir: str | None) -> Any:
    """Replace world://x by <world_dir>/x everywhere in a config node."""
    if isinstance(node, str) and node.startswith(WORLD_PREFIX):
        if world_dir is None:
            raise ValueError(f"{node!r} needs the embedded world, but world.enabled is false")
        return f"{world_dir}/{node[len(WORLD_PREFIX):]}"
    if isinstance(node, Mapping):
        return {k: resolve_world(v, world_dir) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_world(v, world_dir) for v in node]
    return node


def build_chain(cfg: Mapping) -> list[Stage]:
    specs: list[dict] = []
    for kind in active_kinds(cfg):
        specs += [{**spec, "kind": kind.KIND, "version": kind.VERSION} for spec in kind.stages(cfg, list(specs))]
    stages = [_stage(spec) for spec in _reads_first(specs)]
    return _until(stages, cfg.get("until"))


def active_kinds(cfg: Mapping) -> list:
    """The kinds of this run's pipeline: `pretrain` (the paper's Table 1/2 chain) or `prism`
    (caption quality, Table 3). A kind lists the pipelines it takes part in (PIPELINES);
    without the attribute it belongs to `pretrain`."""
    pipeline = cfg.get("pipeline", "pretrain")
    return [k for k in CHAIN_ORDER if pipeline in getattr(k, "PIPELINES", ("pretrain",))]


def _reads_first(specs: list[dict]) -> list[dict]:
    """Kind order, except that a stage moves after a later kind's stage it reads (a recaptioned
    caption source: data_prep.captions reads recaption, which reads another data_prep stage)."""
    ordered: list[dict] = []
    waiting = list(specs)
    while waiting:
        placed = {s["name"] for s in ordered}
        ready = next((s for s in waiting if set((s.get("inputs") or {}).values()) <= placed), None)
        if ready is None:   # a cycle or a missing stage: chain_fingerprints names it
            return ordered + waiting
        ordered.append(ready)
        waiting.remove(ready)
    return ordered


def _stage(spec: dict) -> Stage:
    inputs = dict(spec.get("inputs") or {})
    if spec["name"] != "world" and uses_world(spec["config"]):   # world:// is the stage named world
        inputs["world"] = "world"
    return Stage(name=spec["name"], kind=spec["kind"], config=spec["config"], inputs=inputs,
                 resumable=spec.get("resumable", False), summary=spec.get("summary", ""),
                 settings=spec.get("settings") or {}, version=spec["version"],
                 every_node=spec.get("every_node", False), run_only_inputs=tuple(spec.get("run_only_inputs", ())))


def _until(stages: list[Stage], until: str | None) -> list[Stage]:
    if until is None:
        return stages
    names = [s.name for s in stages]
    if until not in names:
        raise ValueError(f"until={until!r} is not a stage of this run; stages: {', '.join(names)}")
    return stages[: names.index(until) + 1]
