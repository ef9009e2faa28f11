"""`python -m harness plan`: the chain a run would execute, without executing it.

For every stage: whether it is already done (by fingerprint, in the store), where its output
lives, what it reads, and what its kind says of it (harness/kinds.py `describe`: key settings,
exact external commands per node, cost), then each kind's closing lines over its stages
(`plan_total`: training's bill). The harness only loops; it knows no kind's internals. Imports
nothing heavy (no torch), so it answers in about a second."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from harness.chain import build_chain, resolve_world, run_label
from harness.kinds import CHAIN_ORDER, KINDS
from harness.runner import why_redo
from harness.stage import chain_fingerprints
from harness.store import Store
from stagekit.plan import PlanView


def render_plan(cfg: Mapping) -> str:
    chain = build_chain(cfg)
    fps = chain_fingerprints(chain)
    store = Store(Path(cfg["paths"]["store_dir"]))
    dirs = {s.name: store.dir_for(s.kind, fps[s.name]) for s in chain}
    world = str(dirs["world"]) if "world" in dirs else None
    lines = [f"run {run_label(cfg)}  (store: {store.root})", ""]
    views: dict[str, list[PlanView]] = {}
    for i, stage in enumerate(chain, 1):
        reason = why_redo(store, stage, fps, dirs)
        state = "done" if reason is None else "to do" if reason == "not done" else f"to redo: {reason}"
        lines.append(f"{i}. {stage.name} [{state}]  {stage.summary}")
        lines.append(f"   output: {dirs[stage.name]}")
        if stage.inputs:
            lines.append("   inputs: " + ", ".join(f"{r} <- {n}" for r, n in stage.inputs.items()))
        view = PlanView(name=stage.name, config=resolve_world(dict(stage.config), world), settings=stage.settings,
                        out_dir=dirs[stage.name], inputs={r: dirs[n] for r, n in stage.inputs.items()},
                        run_cfg=cfg, redo=reason)
        views.setdefault(stage.kind, []).append(view)
        describe = getattr(KINDS[stage.kind], "describe", None)
        lines += [f"   {line}" for line in (describe(view) if describe else [])]
        lines.append("")
    for kind in CHAIN_ORDER:
        if kind.KIND in views and hasattr(kind, "plan_total"):
            lines += kind.plan_total(views[kind.KIND])
    return "\n".join(lines)
