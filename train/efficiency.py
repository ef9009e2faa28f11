"""Tokens a training stage computes, against the tokens its samples hold, with and without packing.

From the exact per-row length histogram data_prep writes (manifest `seq_len_histogram`, text +
visual tokens per row). Pure Python: `plan` imports it.

Unpacked: LLaMA-Factory pads every device batch of b rows to its longest row, rounded up to a
multiple of 8 (its SFT collator's pad_to_multiple_of), and draws rows in random order: a row
costs E[ceil8(max of b random rows)], from the histogram in closed form.

Packed (neat_packing): LLaMA-Factory packs each preprocessing batch of 1000 rows with its greedy
knapsack into rows of at most cutoff_len tokens (padded to cutoff_len + 1). Under flash attention
(a GPU run) the collator drops that padding, so a sample costs its own tokens; under sdpa/eager
(CPU) the padding is computed. The knapsack is replayed here (`greedy_knapsack`, checked equal to
LLaMA-Factory's by tests/test_efficiency.py) on up to SAMPLE_ROWS rows drawn from the histogram."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

PAD_MULTIPLE = 8          # LLaMA-Factory's SFT collator: pad_to_multiple_of=8 when training
LF_GROUP = 1000           # LLaMA-Factory's preprocessing_batch_size: the knapsack packs within one group
SAMPLE_ROWS = 20_000      # rows replayed through the knapsack (an estimate past this many)


@dataclass(frozen=True)
class Efficiency:
    useful: float              # tokens per sample (text + visual)
    unpacked: float            # tokens computed per sample, unpacked
    packed: float              # tokens computed per sample, packed, flash attention (padding dropped)
    packed_padded: float       # the same with the row padding computed (sdpa/eager)
    samples_per_row: float     # packed samples per cutoff_len row

    def padding(self, computed: float) -> float:
        """The fraction of computed tokens that are padding."""
        return 1.0 - self.useful / computed if computed else 0.0


def ceil_to(n: int, multiple: int = PAD_MULTIPLE) -> int:
    return -(-n // multiple) * multiple


def expected_padded_length(histogram: list[list[int]], batch: int) -> float:
    """E[ceil8(max length of `batch` rows drawn at random)]: what each row of a device batch costs."""
    total = sum(c for _, c in histogram)
    out, below = 0.0, 0
    for length, count in sorted(histogram):
        p_le, p_lt = (below + count) / total, below / total
        out += ceil_to(length) * (p_le ** batch - p_lt ** batch)   # P(max == length)
        below += count
    return out


def greedy_knapsack(numbers: list[int], capacity: int) -> list[list[int]]:
    """LLaMA-Factory 0.9.5 data/processor/processor_utils.py greedy_knapsack, the same steps."""
    numbers = sorted(numbers)
    knapsacks = []
    while numbers:
        current, remaining = [], capacity
        while True:
            index = bisect.bisect(numbers, remaining) - 1
            if index < 0:
                break
            remaining -= numbers[index]
            current.append(numbers.pop(index))
        knapsacks.append(current)
    return knapsacks


def _rows_sample(histogram: list[list[int]], seed: int) -> list[int]:
    """The rows' lengths in a random order: all of them, or SAMPLE_ROWS drawn in proportion."""
    rng = random.Random(seed)
    total = sum(c for _, c in histogram)
    if total <= SAMPLE_ROWS:
        rows = [n for n, c in histogram for _ in range(c)]
        rng.shuffle(rows)
        return rows
    lengths, weights = zip(*histogram)
    return rng.choices(lengths, weights=weights, k=SAMPLE_ROWS)


def packed_rows(lengths: list[int], cutoff_len: int) -> int:
    """Packed rows LLaMA-Factory makes of these rows, in their order, a group of LF_GROUP at a time."""
    return sum(len(greedy_knapsack(lengths[i:i + LF_GROUP], cutoff_len)) for i in range(0, len(lengths), LF_GROUP))


def efficiency(histogram: list[list[int]], per_device_batch: int, cutoff_len: int, seed: int = 0) -> Efficiency:
    rows = sum(c for _, c in histogram)
    useful = sum(n * c for n, c in histogram) / rows
    sample = _rows_sample(histogram, seed)
    per_row = len(sample) / packed_rows(sample, cutoff_len)
    return Efficiency(useful=useful, unpacked=expected_padded_length(histogram, per_device_batch),
                      packed=useful, packed_padded=ceil_to(cutoff_len + 1) / per_row, samples_per_row=per_row)


def summary(eff: Efficiency, per_device_batch: int) -> str:
    """One line for `plan`."""
    return (f"tokens per sample: {eff.useful:,.1f} useful; unpacked {eff.unpacked:,.1f} computed "
            f"({eff.padding(eff.unpacked):.1%} padding, device batch {per_device_batch}); packed "
            f"{eff.packed:,.1f} with flash attention, {eff.packed_padded:,.1f} with sdpa "
            f"({eff.padding(eff.packed_padded):.1%} padding), {eff.samples_per_row:.2f} samples per row")

