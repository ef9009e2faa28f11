"""A stage kind describes itself: the harness loops over kinds and calls their hooks, so a new kind
needs its package, its config group and one line in harness/kinds.py, and nothing in harness/.
Shown with a kind that exists only in this test."""

from __future__ import annotations

import types

import pytest

import harness.chain
import harness.kinds
import harness.plan
from harness.config import compose_config, register_defaults, to_plain
from harness.plan import render_plan


def toy_kind() -> types.ModuleType:
    kind = types.ModuleType("toy.stage")
    kind.KIND, kind.VERSION = "toy", 1
    kind.CONFIG_DEFAULTS = {"toy_defaults": {"answer": 42}}

    def stages(cfg, upstream):
        return [{"name": "toy", "config": {"n": 1}, "inputs": {"model": "init_vlm"}, "summary": "a toy stage"}]

    def describe(view):
        return [f"toy reads {view.inputs['model'].parent.name}/ and n={view.config['n']}"]

    def plan_total(views):
        return [f"toy total: {len(views)} stage(s)"]

    kind.stages, kind.describe, kind.plan_total = stages, describe, plan_total
    return kind


@pytest.fixture
def with_toy(monkeypatch):
    toy = toy_kind()
    order = (*harness.kinds.CHAIN_ORDER, toy)
    for module in (harness.kinds, harness.chain, harness.plan):
        monkeypatch.setattr(module, "CHAIN_ORDER", order, raising=False)
    monkeypatch.setattr(harness.kinds, "KINDS", {k.KIND: k for k in order})
    monkeypatch.setattr(harness.plan, "KINDS", {k.KIND: k for k in order})
    return toy


def test_plan_prints_what_a_new_kind_says_of_its_stages(with_toy, results_dir):
    text = render_plan(to_plain(compose_config(["experiment=embedded"])))
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.endswith("toy [to do]  a toy stage"))
    assert lines[at + 2:at + 4] == ["   inputs: model <- init_vlm", "   toy reads init_vlm/ and n=1"]
    assert lines[-1] == "toy total: 1 stage(s)"


def test_a_new_kinds_python_defaults_reach_the_config_store(with_toy):
    from hydra.core.config_store import ConfigStore

    register_defaults()
    assert ConfigStore.instance().load("toy_defaults.yaml").node == {"answer": 42}


def test_no_module_of_the_harness_branches_on_a_kind_name():
    """The harness sequences; what a kind does and prints is the kind's (its hooks)."""
    import pathlib
    import re

    harness_dir = pathlib.Path(harness.plan.__file__).parent
    branches = [f"{p.name}: {line.strip()}" for p in sorted(harness_dir.glob("*.py"))
                for line in p.read_text().splitlines() if re.search(r"kind[\"'\]]*\s*(==|!=|in)\s*[\"'(\[]", line)]
    assert branches == []
