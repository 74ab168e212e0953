"""Statistics shared by the engine and the reports."""

from __future__ import annotations

import pytest

from lab import stats


def test_speed_stats_follow_llama_bench() -> None:
    # two repetitions of 128 tokens: 1.0 s and 0.5 s -> 128 and 256 t/s
    s = stats.speed_stats([1_000_000_000, 500_000_000], 128)
    assert s["samples_ts"] == [128.0, 256.0]
    assert s["avg_ts"] == 192.0  # mean of per-repetition speeds, not 256 / 1.5 s
    assert s["stddev_ts"] == pytest.approx(90.50966799, rel=1e-8)  # sample stddev (n-1)
    assert s["avg_ns"] == 750_000_000
    assert s["cv"] == pytest.approx(90.50966799 / 192.0, rel=1e-8)


def test_single_and_empty() -> None:
    assert stats.stddev([5.0]) == 0.0
    assert stats.mean([]) is None and stats.stddev([]) is None and stats.cv([]) is None


def test_percentile_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert stats.percentile(values, 50) == 3.0
    assert stats.percentile(values, 95) == pytest.approx(8.8)
    assert stats.percentile(values, 99) == pytest.approx(9.76)
    assert stats.percentile([], 50) is None


def test_median_interval_takes_the_order_statistics_that_cover_the_median() -> None:
    # nine values: 2nd and 8th cover the median with 1 - 2 * 10/512 = 96.1%; 3rd and 7th only 82%
    assert stats.median_interval([9, 1, 8, 2, 7, 3, 6, 4, 5]) == (2, 8)
    assert stats.median_interval(range(1, 7)) == (1, 6)  # six: the extremes, 96.9%
    assert stats.median_interval(range(1, 6)) is None  # five: the extremes cover only 93.8%
    assert stats.median_interval(range(1, 6), confidence=0.9) == (1, 5)
    assert stats.median_interval(range(1, 16)) == (4, 12)  # fifteen: 96.5% (5th and 11th: 88.2%)
