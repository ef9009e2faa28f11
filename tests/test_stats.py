"""The report's statistics against cases worked out by hand: a textbook McNemar table, Wilson
intervals, bootstrap intervals against the exact bootstrap distribution and the analytic standard
error, Holm's correction, and identical runs (delta 0, p = 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from report.stats import (
    bootstrap_mean_interval,
    discordant_counts,
    holm_adjust,
    is_binary,
    mcnemar_exact_p,
    mean_and_std,
    mean_of_means_interval,
    paired_bootstrap_interval,
    percentile_interval,
    resampled_means,
    sign_flip_p,
    wilson_interval,
    z_value,
)


def test_z_value_is_the_normal_975_quantile():
    assert z_value() == pytest.approx(1.959963984540054, abs=1e-12)


# --- McNemar ----------------------------------------------------------------------------------

def test_mcnemar_textbook_table_b10_c2():
    # 12 discordant questions, 2 going the rarer way: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12
    # = 2 * (1 + 12 + 66) / 4096 = 158 / 4096 = 0.03857421875 (the 0.0386 of the textbooks)
    assert mcnemar_exact_p(10, 2) == 0.03857421875
    assert mcnemar_exact_p(2, 10) == 0.03857421875


@pytest.mark.parametrize("b, c, expected", [
    (9, 1, 22 / 1024),      # 2 * (1 + 10) / 2^10
    (2, 0, 0.5),            # 2 * 1 / 4
    (0, 1, 1.0),            # 2 * 1 / 2, capped at 1
    (3, 3, 1.0),            # 2 * 42 / 64 = 1.3125, capped at 1
    (0, 0, 1.0),            # no discordant question: no evidence of any difference
])
def test_mcnemar_small_tables(b, c, expected):
    assert mcnemar_exact_p(b, c) == expected


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError, match="b=-1"):
        mcnemar_exact_p(-1, 3)


def test_discordant_counts():
    mine = [1, 1, 0, 0, 1]
    theirs = [0, 1, 1, 0, 0]
    assert discordant_counts(mine, theirs) == (2, 1)


# --- Wilson -----------------------------------------------------------------------------------

def test_wilson_interval_5_of_10():
    # z = 1.959964, z^2 = 3.841459; centre = (0.5 + z^2/20) / (1 + z^2/10) = 0.5;
    # half = z / 1.3841459 * sqrt(0.025 + z^2/400) = 1.416011 * 0.1860206 = 0.263407
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.23659, abs=1e-5) and hi == pytest.approx(0.76341, abs=1e-5)


def test_wilson_interval_at_zero_is_not_empty():
    # p = 0: lo = 0 and hi = z^2 / (n + z^2) = 3.841459 / 23.841459
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.161125), abs=1e-6)
    assert wilson_interval(20, 20) == pytest.approx((0.838875, 1.0), abs=1e-6)


def test_wilson_interval_of_the_fixture_cells():
    # 4/20, 12/20, 10/20 worked by hand in tests/data/report/expected/README.md
    assert wilson_interval(4, 20) == pytest.approx((0.08066, 0.41602), abs=1e-5)
    assert wilson_interval(12, 20) == pytest.approx((0.38658, 0.78119), abs=1e-5)
    assert wilson_interval(10, 20) == pytest.approx((0.29930, 0.70070), abs=1e-5)


@pytest.mark.parametrize("k, n", [(3, 2), (-1, 4), (0, 0)])
def test_wilson_interval_rejects_impossible_counts(k, n):
    with pytest.raises(ValueError, match=f"{k}/{n}"):
        wilson_interval(k, n)


# --- bootstrap --------------------------------------------------------------------------------

SEVEN_OF_TEN = [1.0] * 7 + [0.0] * 3


def test_bootstrap_interval_of_7_of_10_matches_the_exact_bootstrap_quantiles():
    # The bootstrap mean of this sample is Binomial(10, 0.7) / 10. By hand:
    # P(X <= 3) = 0.0106 and P(X <= 4) = 0.0473, so the 2.5% quantile is 4/10;
    # P(X <= 9) = 1 - 0.7^10 = 0.9718 < 0.975, so the 97.5% quantile is 10/10.
    cdf = lambda x: sum(math.comb(10, k) * 0.7 ** k * 0.3 ** (10 - k) for k in range(x + 1))
    assert round(cdf(3), 4) == 0.0106 and round(cdf(4), 4) == 0.0473 and round(cdf(9), 4) == 0.9718
    assert bootstrap_mean_interval(SEVEN_OF_TEN) == (0.4, 1.0)


def test_bootstrap_interval_of_many_distinct_values_matches_the_standard_error():
    # 0, 1/99, ..., 1: mean 0.5; population sd = sqrt((100^2 - 1) / 12) / 99 = 0.291576,
    # se = 0.0291576, 0.5 -/+ 1.96 se = [0.44285, 0.55715]. Seed 0 gives, pinned:
    lo, hi = bootstrap_mean_interval([i / 99 for i in range(100)])
    assert (lo, hi) == pytest.approx((0.443535, 0.557174), abs=1e-6)
    assert abs(lo - 0.44285) < 0.005 and abs(hi - 0.55715) < 0.005


def test_bootstrap_is_reproducible_and_seeded():
    values = [0.2, 0.9, 0.4, 0.4, 1.0, 0.0]
    assert np.array_equal(resampled_means(values, seed=3, resamples=50), resampled_means(values, seed=3, resamples=50))
    assert not np.array_equal(resampled_means(values, seed=3, resamples=50), resampled_means(values, seed=4, resamples=50))


def test_percentile_interval_interpolates_linearly():
    # 0..100: the 2.5% and 97.5% quantiles are 2.5 and 97.5
    assert percentile_interval(list(range(101))) == pytest.approx((2.5, 97.5), abs=1e-9)


def test_mean_of_means_interval_is_pinned():
    # each benchmark resampled on its own (seeds 0 and 1), then averaged per draw
    lo, hi = mean_of_means_interval([SEVEN_OF_TEN, [i / 99 for i in range(100)]])
    assert (lo, hi) == pytest.approx((0.445600, 0.733033), abs=1e-6)
    assert lo < (0.7 + 0.5) / 2 < hi


# --- paired tests -----------------------------------------------------------------------------

def test_identical_runs_give_delta_zero_and_p_one():
    run = [1.0, 0.0, 1.0, 1.0, 0.0, 0.5]
    assert paired_bootstrap_interval(run, run) == (0.0, 0.0)
    assert sign_flip_p(np.subtract(run, run)) == 1.0
    assert mcnemar_exact_p(*discordant_counts([1, 0, 1], [1, 0, 1])) == 1.0


def test_sign_flip_p_against_the_exact_permutation_distribution():
    # five +1 differences: of the 2^5 sign patterns only all-plus and all-minus reach |sum| = 5,
    # exact p = 2/32 = 0.0625; seed 0 with 10,000 flips gives, pinned:
    p = sign_flip_p([1.0] * 5)
    assert p == pytest.approx(0.0631937, abs=1e-7)
    assert abs(p - 0.0625) < 0.005
    assert sign_flip_p([1.0, -1.0, 1.0, -1.0]) == 1.0  # observed sum 0: every flip is as extreme


def test_paired_scores_must_cover_the_same_questions():
    with pytest.raises(ValueError, match="same questions"):
        paired_bootstrap_interval([1, 0], [1, 0, 1])


def test_holm_adjust_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, 1.0]) == [1.0, 1.0]
    assert holm_adjust([0.021484375]) == [0.021484375]  # one benchmark: nothing to correct
    assert holm_adjust([]) == []


def test_mean_and_std_over_seeds():
    mean, std = mean_and_std([20.0, 30.0])
    assert mean == 25.0 and std == pytest.approx(5 * math.sqrt(2))  # sqrt((25 + 25) / 1)
    assert mean_and_std([3.0]) == (3.0, None)


def test_is_binary():
    assert is_binary([0.0, 1.0, 1.0]) and not is_binary([0.0, 0.5])
