"""The cost estimate `plan` prints (train/cost.py): tokens, FLOPs by what trains, GPU-hours,
and the total, checked on exact numbers with fake data_prep manifests."""

from __future__ import annotations

import json

import pytest

from harness.chain import build_chain
from harness.config import compose_config, to_plain
from train.cost import (
    StageCost,
    Tokens,
    cost_line,
    gpu_hours,
    read_manifest,
    stage_tokens,
    total_line,
    train_flops,
)
from harness.plan import render_plan
from harness.stage import chain_fingerprints
from harness.store import Store

H100 = {"gpu": "H100", "peak_tflops": 989, "mfu": 0.35}
# 10 rows: 80 text + 20 visual tokens each
MANIFEST = {"rows_kept": 10, "total_text_tokens": 800, "total_visual_tokens": 200}


def common(**kw):
    return {"max_steps": -1, "num_train_epochs": 1, "cutoff_len": 512, **kw}


def fake_data_prep(folder, manifest=MANIFEST):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".done.json").write_text(json.dumps({"fingerprint": "x"}))
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_manifest_is_read_only_from_a_finished_data_prep(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(MANIFEST))
    assert read_manifest(tmp_path) is None       # not done yet: could be partial
    fake_data_prep(tmp_path)
    assert read_manifest(tmp_path) == MANIFEST


def test_max_steps_counts_steps_times_global_batch_not_one_epoch():
    t = stage_tokens(common(max_steps=200), 4, MANIFEST, {})
    assert (t.llm, t.visual, t.upper_bound) == (80_000, 16_000, False)    # 800 samples x 100 tokens
    assert t.how == "800 samples = 200 steps x global batch 4; 100.0 tokens per sample from data_prep"


def test_epochs_count_every_row_each_epoch():
    t = stage_tokens(common(num_train_epochs=3), 256, MANIFEST, {})
    assert (t.llm, t.visual) == (3_000, 600)


def test_without_a_manifest_the_config_gives_an_upper_bound():
    t = stage_tokens(common(max_steps=10), 4, None, {"subset_size": None})
    assert (t.llm, t.visual, t.upper_bound) == (40 * 512, 40 * 512, True)
    t = stage_tokens(common(num_train_epochs=2), 256, None, {"subset_size": 1000})
    assert t.llm == 2000 * 512 and "subset_size 1,000 x 2 epoch(s)" in t.how
    assert stage_tokens(common(), 256, None, {"subset_size": None}) is None
    # the published size of a full source stands in for its row count (subset_size wins)
    t = stage_tokens(common(), 256, None, {"subset_size": None, "expected_rows": 558128})
    assert t.llm == 558128 * 512 and t.upper_bound and "expected_rows 558,128 x 1 epoch(s)" in t.how
    t = stage_tokens(common(), 256, None, {"subset_size": 1000, "expected_rows": 558128})
    assert t.llm == 1000 * 512


PARAMS = {"llm": 1e9, "vit": 1e8, "projector": 1e7}
T = Tokens(llm=1000, visual=200, how="")
FREEZE = {  # freeze flags (vision, projector, language) per `trainable`
    "projector": (True, False, True), "projector+llm": (True, False, False), "all": (False, False, False)}


def spec(trainable):
    v, p, lang = FREEZE[trainable]
    return {"freeze_vision_tower": v, "freeze_multi_modal_projector": p, "freeze_language_model": lang}


def test_everything_trainable_is_6pt_with_the_vit_on_4_patches_per_visual_token():
    assert train_flops(PARAMS, spec("all"), T) == 6 * 9e7 * 800 + 6 * 1e7 * 200 + 6 * 1e9 * 1000


def test_projector_only_costs_no_weight_gradients_in_the_frozen_parts():
    # ViT: forward only; projector: trains (6PT); LLM: forward + activation grads down to the projector
    assert train_flops(PARAMS, spec("projector"), T) == 2 * 9e7 * 800 + 6 * 1e7 * 200 + 4 * 1e9 * 1000


def test_scalecap_frozen_vit_runs_forward_only():
    assert train_flops(PARAMS, spec("projector+llm"), T) == 2 * 9e7 * 800 + 6 * 1e7 * 200 + 6 * 1e9 * 1000


def test_backbones_without_a_projector_count_keep_it_inside_the_vit():
    assert train_flops({"llm": 1e9, "vit": 1e8}, spec("projector"), T) == 2 * 1e8 * 800 + 4 * 1e9 * 1000


def test_gpu_hours_at_the_configured_peak_and_mfu():
    assert gpu_hours(989e12 * 0.35 * 3600 * 5, H100) == pytest.approx(5.0)


def test_stage_and_total_lines():
    one = 989e12 * 0.35 * 3600 * 64           # 64 GPU-hours
    a = StageCost("train.alignment", Tokens(1e6, 1e5, "from data_prep"), one)
    b = StageCost("train.sft", Tokens(3e6, 1e5, "bound", upper_bound=True), 2 * one)
    c = StageCost("train.further_pretrain", None, None)
    assert cost_line(a, H100) == ("cost: 1,000,000 tokens (from data_prep) -> 7.98e+19 FLOPs ~ 64.0 H100 GPU-hours "
                                  "at 35% MFU (estimate)")
    assert cost_line(b, H100).startswith("cost: at most 3,000,000 tokens (bound)")
    assert "tokens unknown until its data_prep stage is done" in cost_line(c, H100)
    assert total_line([a, c], H100, 32) == (
        "total training cost (1 stage(s), without train.further_pretrain): 1,000,000 tokens -> 7.98e+19 FLOPs ~ "
        "64.0 H100 GPU-hours at 35% MFU, ~2 h wall-clock on 32 GPU(s) (estimate)")
    assert total_line([a, b], H100, 32).startswith("total training cost (2 stage(s)): at most 4,000,000 tokens -> "
                                                   "2.39e+20 FLOPs ~ 192.0 H100 GPU-hours")


def test_plan_prints_each_stage_and_the_total_from_the_manifests(results_dir):
    cfg = to_plain(compose_config([]))   # embedded: 3 epochs of each stage's rows
    chain = build_chain(cfg)
    fps = chain_fingerprints(chain)
    store = Store(results_dir / "store")
    for s in chain:
        if s.kind == "data_prep":
            fake_data_prep(store.dir_for(s.kind, fps[s.name]))
    plan = render_plan(cfg)
    lines = [line.strip() for line in plan.splitlines() if line.strip().startswith("cost:")]
    assert len(lines) == 3 and all(line.startswith(
        "cost: 3,000 tokens (30 samples = 10 rows x 3 epoch(s); 100.0 tokens per sample from data_prep)")
        for line in lines)
    assert plan.splitlines()[-1].startswith("total training cost (3 stage(s)): 9,000 tokens -> ")
    assert "H100 GPU-hours at 35% MFU" in plan.splitlines()[-1]
