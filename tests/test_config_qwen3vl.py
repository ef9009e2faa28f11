"""Backbones carry their LLaMA-Factory template and lmms-eval model; the Qwen2.5-VL runs stay as they were."""

from __future__ import annotations

import pytest

from harness.chain import build_chain
from harness.config import compose_config, to_plain
from harness.stage import chain_fingerprints


def cfg_of(*overrides: str) -> dict:
    return to_plain(compose_config(list(overrides)))


@pytest.mark.parametrize("overrides, template, eval_model", [
    ((), "qwen2_vl", "qwen2_5_vl"),
    (("experiment=caprl2m",), "qwen2_vl", "qwen2_5_vl"),
    (("backbone=tiny-qwen3vl",), "qwen3_vl_nothink", "qwen3_vl"),
    (("experiment=caprl2m", "backbone=qwen3vl-4b"), "qwen3_vl_nothink", "qwen3_vl"),
    (("experiment=caprl2m", "backbone=qwen3vl-8b"), "qwen3_vl_nothink", "qwen3_vl"),
])
def test_template_and_eval_model_follow_the_backbone(results_dir, overrides, template, eval_model):
    cfg = cfg_of(*overrides)
    assert cfg["train"]["common"]["template"] == template
    assert cfg["eval"]["model"] == eval_model
    stages = {s.name: s for s in build_chain(cfg)}
    assert stages["train.alignment"].config["common"]["template"] == template
    assert stages["evaluate"].config["eval"]["model"] == eval_model


def test_only_the_tiny_qwen3vl_backbone_asks_the_world_for_its_sources(results_dir):
    assert "qwen3vl_sources" not in cfg_of()["world"]
    cfg = cfg_of("backbone=tiny-qwen3vl")
    assert cfg["world"]["qwen3vl_sources"] is True
    assert cfg["backbone"]["vit_source"].endswith("qwen3vl_vit_source")
    # Its world is another world (another fingerprint); the default chain's stages keep theirs.
    default, qwen3 = chain_fingerprints(build_chain(cfg_of())), chain_fingerprints(build_chain(cfg))
    assert default["world"] != qwen3["world"] and default["init_vlm"] != qwen3["init_vlm"]


def test_plan_prints_the_registering_command_for_qwen3vl_stages_only(results_dir):
    """Before any model folder exists, plan shows how each stage will be launched: Qwen3-VL stages
    through train/lf_train.py (DeepStack mergers registered as projector), Qwen2.5-VL's unchanged."""
    from harness.plan import render_plan

    for backbone, command in (("qwen3vl-4b", "python -m train.lf_train train "),
                              ("qwen2.5-3b", "llamafactory-cli train ")):
        plan = render_plan(cfg_of("experiment=caprl2m", f"backbone={backbone}"))
        block = plan.split(". train.alignment [")[1].split("\n\n")[0]
        launch = [line for line in block.splitlines() if "NNODES=" in line or "command: " in line]
        assert launch and all(command in line for line in launch), block
