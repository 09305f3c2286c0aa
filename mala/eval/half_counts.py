"""Counts of values rounded to float16: F1-max thresholds and quantiles over more pixels than memory holds.

The pixel thresholds of all categories together (`thresholds.ThresholdsCollector`) need every pixel of every map.
Instead of keeping the maps, each value is rounded to float16 and counted in one of 65,536 bins, one per float16
bit pattern (`np.bincount`, 512 KiB a histogram however many pixels). The F1-max threshold and the quantile read
from the counts are then exactly those of `metrics.f1_max_threshold` and `np.quantile` on the rounded values:
the only approximation is the rounding, less than 2^-11 of a value's size (2^-25 absolute below 2^-14, where
float16 is subnormal; values beyond +-65504 count as infinite). A quantile of the rounded values is within that of
the exact one, since rounding keeps the values' order; an F1-max threshold is a rounded value of the data, but
where the F1 curve is flat rounding may move its maximum to another of its near-equal peaks.

Why not exact: that needs every value at once (sorted), the several GB that streaming the test set avoids; a
second pass over the data would mean predicting every map twice.
"""

from __future__ import annotations

import numpy as np

BINS = 1 << 16  # one per float16 bit pattern
SIGN = 0x8000


def _key_values() -> np.ndarray:
    """The float64 value of each key (`half_keys`), ascending; NaN patterns lie at both ends."""
    keys = np.arange(BINS, dtype=np.uint32)
    bits = np.where(keys >= SIGN, keys - SIGN, (BINS - 1) - keys).astype(np.uint16)
    return bits.view(np.float16).astype(np.float64)


KEY_VALUES = _key_values()


def half_keys(values: np.ndarray) -> np.ndarray:
    """Each value rounded to float16, as a uint16 key in the values' order: sign bit flipped for values >= 0, every
    bit flipped for negative ones (the order of their bit patterns is reversed)."""
    with np.errstate(over="ignore"):  # beyond +-65504: infinite, as the module says
        half = np.asarray(values, dtype=np.float16) + np.float16(0)  # -0 + 0 is +0: equal values share one key
    if np.isnan(half).any():
        raise ValueError("scores contain NaN")
    bits = half.view(np.uint16)
    return np.where(bits >= SIGN, ~bits, bits | SIGN)


class HalfCounts:
    """How many values fell on each float16 value (`half_keys`)."""

    def __init__(self) -> None:
        self.counts = np.zeros(BINS, dtype=np.int64)

    def add(self, keys: np.ndarray) -> None:
        self.counts += np.bincount(keys.ravel(), minlength=BINS)

    @property
    def size(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        """`np.quantile(values, q)` (linear interpolation) of the rounded values."""
        position = (self.size - 1) * q
        below = int(np.floor(position))
        ends = np.cumsum(self.counts)  # the value of order statistic k is at the first key whose end passes k
        low, high = KEY_VALUES[np.searchsorted(ends, [below, min(below + 1, self.size - 1)], side="right")]
        fraction = position - below
        return float(low) if fraction == 0 else float(low + fraction * (high - low))  # no inf - inf at an end


def f1_max_threshold(positives: HalfCounts, negatives: HalfCounts) -> float | None:
    """`metrics.f1_max_threshold` of the counted values: the highest of the positives' values with the largest
    F1 = 2 TP / (TP + FP + P); None when either class has no values."""
    if positives.size == 0 or negatives.size == 0:
        return None
    true_positives = np.cumsum(positives.counts[::-1])  # at or above each value, highest value first
    false_positives = np.cumsum(negatives.counts[::-1])
    candidates = np.flatnonzero(positives.counts[::-1])  # thresholds at the positives' values only, as there
    f1 = 2 * true_positives[candidates] / (true_positives[candidates] + false_positives[candidates] + positives.size)
    return float(KEY_VALUES[::-1][candidates[np.argmax(f1)]])
