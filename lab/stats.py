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


# Student's t, two-sided 95%, by degrees of freedom (1.96 beyond the table).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def mean_interval(samples: list[float]) -> tuple[float, float, float] | None:
    """Mean of the samples and its 95% t-interval (None without samples; a single sample has
    no spread, so its interval is unbounded)."""
    if not samples:
        return None
    n = len(samples)
    m = sum(samples) / n
    if n == 1:
        return m, -math.inf, math.inf
    sd = math.sqrt(sum((x - m) ** 2 for x in samples) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return m, m - half, m + half


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval for the median: the k-th smallest and the k-th largest
    value, k as large as keeps the chance that the interval covers the median (binomial
    counts, p = 1/2) at ``confidence`` or more. None when even the extremes cannot (5 values
    or fewer at 95%)."""
    v = sorted(values)
    n = len(v)
    best, below = 0, 0  # below: ways for at most k - 1 values to fall under the median
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1)
        if 1 - 2 * below / 2 ** n < confidence:
            break
        best = k
    return (v[best - 1], v[n - best]) if best else None
