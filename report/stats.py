"""The statistics behind the report's intervals and significance marks, on per-question scores.

Every random draw comes from a generator seeded here, so the same logs give the same report.
Questions are the sampling unit: a benchmark is a sample of questions, and a 1-3 point
difference between caption sources means nothing unless it stands out from that sampling noise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000
SEED = 0
ALPHA = 0.05
# Few distinct scores (0/1, -1/0/+1 differences, a few partial-credit levels): drawing how many
# times each value is picked is the same bootstrap as drawing question indices, and costs
# O(resamples x values) instead of O(resamples x questions).
_FEW_VALUES = 64
_CHUNK_CELLS = 4_000_000  # bounds memory of one block of resamples (resamples x questions)


def z_value(level: float = LEVEL) -> float:
    """The two-sided standard normal quantile: 1.959963984540054 for 95%."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion (as fractions). Unlike p ± z·se it stays inside
    [0, 1] and is not empty at 0 or n successes, which matters on small benchmarks."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    z2 = z_value(level) ** 2
    p = successes / n
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = math.sqrt(z2) / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def is_binary(values: Sequence[float] | np.ndarray) -> bool:
    return bool(np.isin(np.asarray(values, dtype=float), (0.0, 1.0)).all())


def resampled_means(values, *, seed: int = SEED, resamples: int = RESAMPLES) -> np.ndarray:
    """The means of `resamples` bootstrap samples (n draws with replacement) of `values`."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no values to resample")
    rng = np.random.default_rng(seed)
    distinct, counts = np.unique(x, return_counts=True)
    if distinct.size <= _FEW_VALUES:
        picks = rng.multinomial(x.size, counts / x.size, size=resamples)
        return picks @ distinct / x.size
    chunk = max(1, _CHUNK_CELLS // x.size)
    blocks = [x[rng.integers(0, x.size, size=(min(chunk, resamples - start), x.size))].mean(axis=1)
              for start in range(0, resamples, chunk)]
    return np.concatenate(blocks)


def percentile_interval(draws, level: float = LEVEL) -> tuple[float, float]:
    """The (1-level)/2 and (1+level)/2 quantiles of the draws (numpy's default, linear)."""
    lo, hi = np.quantile(np.asarray(draws, dtype=float), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_mean_interval(values, *, seed: int = SEED, resamples: int = RESAMPLES,
                            level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling questions."""
    return percentile_interval(resampled_means(values, seed=seed, resamples=resamples), level)


def paired_differences(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need the same questions, got shapes {a.shape} and {b.shape}")
    return a - b


def paired_bootstrap_interval(a, b, *, seed: int = SEED, resamples: int = RESAMPLES,
                              level: float = LEVEL) -> tuple[float, float]:
    """Interval of mean(a) - mean(b) for two runs on the same questions: resampling questions
    keeps each question's pair together, so what both runs find hard cancels out."""
    return bootstrap_mean_interval(paired_differences(a, b), seed=seed, resamples=resamples, level=level)


def mean_of_means_interval(samples: Sequence, *, seed: int = SEED, resamples: int = RESAMPLES,
                           level: float = LEVEL) -> tuple[float, float]:
    """Interval of the average over benchmarks of each benchmark's mean: each benchmark's
    questions are resampled on their own (they are separate samples), then averaged per draw."""
    draws = [resampled_means(s, seed=seed + i, resamples=resamples) for i, s in enumerate(samples)]
    return percentile_interval(np.mean(draws, axis=0), level)


def discordant_counts(a, b) -> tuple[int, int]:
    """McNemar's b and c for 0/1 scores: questions only `a` gets right, questions only `b` does."""
    d = paired_differences(a, b)
    return int((d > 0).sum()), int((d < 0).sum())


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: under no difference each discordant question is a fair
    coin, so p = 2 · P(Binomial(b+c, 1/2) <= min(b, c)), capped at 1; no discordant pair, p = 1."""
    n = b + c
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def sign_flip_p(differences, *, seed: int = SEED, resamples: int = RESAMPLES) -> float:
    """Two-sided paired permutation test: under no difference each question's difference is as
    likely to have the other sign. p = (1 + #{|flipped mean| >= |observed mean|}) / (1 + resamples),
    so it is never 0 and equals 1 when every difference is 0."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError("no differences to test")
    observed = abs(d.sum())
    flipped = _flipped_sums(d, np.random.default_rng(seed), resamples)
    # a relative tolerance: a flip that reproduces the observed sum must count despite float noise
    hits = int((np.abs(flipped) >= observed - 1e-9 * max(1.0, observed)).sum())
    return (1 + hits) / (1 + resamples)


def _flipped_sums(d: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    distinct, counts = np.unique(d, return_counts=True)
    if distinct.size <= _FEW_VALUES:  # m signs of one value sum to 2·Binomial(m, 1/2) - m
        positives = rng.binomial(counts, 0.5, size=(resamples, distinct.size))
        return (2 * positives - counts) @ distinct
    chunk = max(1, _CHUNK_CELLS // d.size)
    blocks = [(rng.integers(0, 2, size=(min(chunk, resamples - start), d.size)) * 2 - 1) @ d
              for start in range(0, resamples, chunk)]
    return np.concatenate(blocks)


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order: the i-th smallest of m is multiplied
    by (m - i + 1), made non-decreasing in that order and capped at 1. Compare them with ALPHA."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [0.0] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def mean_and_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1) over seeds; no std from a single seed."""
    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else None
