"""Small statistics shared by the engine, the store and the reports (no numpy needed)."""

from __future__ import annotations

import math
from typing import Sequence

NOISY_CV = 0.05  # a result whose coefficient of variation exceeds 5% is flagged as noisy


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def stddev(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n-1), as llama-bench reports; 0 for a single value."""
    n = len(values)
    if n == 0:
        return None
    if n == 1:
        return 0.0
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))


def cv(values: Sequence[float]) -> float | None:
    """Coefficient of variation: stddev / mean."""
    m, s = mean(values), stddev(values)
    if m is None or s is None or m == 0:
        return None
    return s / m


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), like numpy's default."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def speed_stats(samples_ns: Sequence[int], n_tokens: int) -> dict[str, float | list[float] | None]:
    """llama-bench's figures from per-repetition times: t/s is computed per repetition, then
    averaged (avg_ts is the mean of the per-repetition speeds, not tokens / mean time)."""
    ts = [n_tokens * 1e9 / ns for ns in samples_ns if ns > 0]
    return {
        "avg_ns": mean([float(x) for x in samples_ns]),
        "stddev_ns": stddev([float(x) for x in samples_ns]),
        "avg_ts": mean(ts),
        "stddev_ts": stddev(ts),
        "samples_ts": ts,
        "cv": cv(ts),
    }
