"""Padding and packing arithmetic (train/efficiency.py) and what `plan`'s cost makes of it.

Exact values worked by hand; the knapsack replay against LLaMA-Factory's own greedy_knapsack
(imported from its processor_utils: the real code, ~5 s of imports).
Run: .venv/bin/python -m pytest tests/test_efficiency.py -q"""

from __future__ import annotations

import random

import pytest

from train.cost import stage_tokens
from train.efficiency import (
    ceil_to,
    efficiency,
    expected_padded_length,
    greedy_knapsack,
    packed_rows,
)


def test_padded_length_is_the_expected_rounded_maximum():
    # rows of 5 and 9 tokens, one each: rounded to 8 and 16
    h = [[5, 1], [9, 1]]
    assert expected_padded_length(h, 1) == pytest.approx(12.0)          # (8 + 16) / 2
    assert expected_padded_length(h, 2) == pytest.approx(14.0)          # 8 x 1/4 + 16 x 3/4
    assert expected_padded_length([[100, 7]], 4) == pytest.approx(104.0)  # no spread: rounding only
    assert ceil_to(17) == 24 and ceil_to(16) == 16


def test_knapsack_replays_llamafactory():
    from llamafactory.data.processor.processor_utils import (
        greedy_knapsack as lf_knapsack,
    )

    rng = random.Random(3)
    for cutoff in (64, 512, 4096):
        lengths = [rng.randint(1, cutoff) for _ in range(700)]
        assert greedy_knapsack(list(lengths), cutoff) == lf_knapsack(list(lengths), cutoff)


def test_packing_groups_rows_like_llamafactory_preprocessing_batches():
    # 1500 rows of 300 tokens, cutoff 1000: 3 per row within each group of 1000 rows
    # (334 rows for the first 1000, 167 for the other 500)
    assert packed_rows([300] * 1500, 1000) == 334 + 167


def test_efficiency_of_a_known_histogram():
    eff = efficiency([[100, 30], [300, 10]], per_device_batch=1, cutoff_len=1000)
    assert eff.useful == pytest.approx(150.0)                    # (100 x 30 + 300 x 10) / 40
    assert eff.unpacked == pytest.approx((104 * 30 + 304 * 10) / 40)
    # greedy knapsack, largest first: 3 rows of 3 x 300 + 100, one of 300 + 7 x 100, two of 10 x 100
    assert eff.samples_per_row == pytest.approx(40 / 6)
    assert eff.packed == eff.useful and eff.packed_padded == pytest.approx(1008 * 6 / 40)
    assert eff.padding(eff.packed) == 0.0


def test_cost_counts_computed_tokens_from_the_histogram():
    manifest = {"rows_kept": 40, "total_text_tokens": 5000, "total_visual_tokens": 1000,
                "seq_len_histogram": [[100, 30], [300, 10]]}
    common = {"max_steps": -1, "num_train_epochs": 1, "cutoff_len": 1000, "per_device_train_batch_size": 1}
    plain = stage_tokens(common, 4, manifest, {})
    assert plain.useful == pytest.approx(6000) and plain.llm == pytest.approx(104 * 30 + 304 * 10)
    packed = stage_tokens(common, 4, manifest, {}, packing=True)
    assert packed.llm == pytest.approx(6000) and packed.visual == pytest.approx(1000)
    # with max_steps a packed batch row holds samples_per_row samples
    steps = stage_tokens({**common, "max_steps": 10}, 4, manifest, {}, packing=True)
    assert steps.useful == pytest.approx(10 * 4 * (40 / 6) * 150)
