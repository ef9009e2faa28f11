"""Packing is correct in the pinned LLaMA-Factory for Qwen2.5-VL: decided by measurement.

The embedded world's tiny Qwen2.5-VL (init_vlm) and its prepared caption data (data_prep), run
through LLaMA-Factory's own preprocessing, collator and model loading in-process
(train/packing_check.py), fp32 on CPU:
- every sample's loss in a neat-packed batch equals its loss unpacked, within 1e-5 (measured
  2026-11-30: max 4.8e-7 over 48 samples, losses ~6.45; fp32 summation order is the only difference);
- two controls show the comparison can fail: attention leaking across packed samples moves the
  losses by ~1e-2;
- on a GPU the flash-attention path has no mask: the samples are found where the text position
  ids restart at 0. The boundaries transformers derives from the collated batch equal the packed
  samples'; with position ids that run on across the pack (the M-RoPE bug fixed upstream) they
  do not. (On the CPU path a constant position offset per sample cancels in RoPE, so only the
  flash-attention boundaries can show that bug.)
~2 min on 2 shared cores (the world, LLaMA-Factory imports, three forward passes over 48 samples).
Run: .venv/bin/python -m pytest tests/test_train_packing.py -q"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SMALL_WORLD, run_harness

pytestmark = pytest.mark.slow   # builds a small world through the harness, then LLaMA-Factory in-process

TOLERANCE = 1e-5          # per-sample mean loss, fp32
LEAK_MIN_EFFECT = 1e-3    # what a real error does to the same losses (measured ~1e-2)
CUTOFF = 512              # 2-4 caption samples per packed row


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    """(the tiny model folder, the prepared caption data folder) of a small embedded world."""
    import json

    results = tmp_path_factory.mktemp("packing") / "results"
    run_harness(results, "run", "until=data_prep.captions", *SMALL_WORLD)
    store = results / "store"
    model = next((store / "init_vlm").glob("*/model"))
    data = next(d for d in (store / "data_prep").glob("*/manifest.json")
                if json.loads(d.read_text())["dataset"] == "synthetic_dense").parent
    return model, data


@pytest.fixture(scope="module")
def lf(world, tmp_path_factory):
    import os

    from train.packing_check import lf_modules

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")   # the embedded data is local; never ask the hub

    model, data = world
    work = tmp_path_factory.mktemp("packing")
    return {mode: lf_modules(model, data, "synthetic_dense", packing=mode, cutoff_len=CUTOFF,
                             work_dir=work / str(mode))
            for mode in (None, "neat")}


@pytest.fixture(scope="module")
def unpacked(lf) -> dict:
    from train.packing_check import per_sample_losses

    return per_sample_losses(lf[None], batch_size=4)


def test_packed_rows_hold_several_samples(lf, world):
    import json

    from train.efficiency import efficiency

    rows = [len(r["packing_params"]["sequence_boundaries"]) - 2 for r in lf["neat"]["dataset"]]
    assert len(lf[None]["dataset"]) == sum(rows) == 48
    assert max(rows) >= 3   # packing is exercised, not one sample per row
    # plan's packing estimate (train/efficiency.py, from data_prep's length histogram) is exact here
    histogram = json.loads((world[1] / "manifest.json").read_text())["seq_len_histogram"]
    assert efficiency(histogram, 1, CUTOFF).samples_per_row == pytest.approx(48 / len(rows))


def test_packed_losses_equal_unpacked(lf, unpacked):
    from train.packing_check import per_sample_losses

    packed = per_sample_losses(lf["neat"], batch_size=2)
    assert set(packed) == set(unpacked)
    worst = max(abs(packed[k] - unpacked[k]) for k in unpacked)
    assert worst < TOLERANCE, f"packed vs unpacked per-sample loss differs by {worst:.3g}"


def test_control_attention_across_samples_is_detected(lf, unpacked):
    from train.packing_check import attention_leaks, per_sample_losses

    leaked = per_sample_losses(lf["neat"], batch_size=2, edit_batch=attention_leaks)
    assert max(abs(leaked[k] - unpacked[k]) for k in unpacked) > LEAK_MIN_EFFECT


def test_flash_attention_sees_the_packed_samples(lf):
    from train.packing_check import flash_attention_spans, positions_run_on

    for derived, expected in flash_attention_spans(lf["neat"]):
        assert derived == expected
    for derived, expected in flash_attention_spans(lf["neat"], edit_batch=positions_run_on):
        if len(expected) > 2:
            assert derived != expected
