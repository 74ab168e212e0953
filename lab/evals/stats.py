"""Run-level figures of an eval: accuracy with a Wilson 95% interval, format validity,
failure counts and latency percentiles."""

from __future__ import annotations

import math
from typing import Any, Sequence

from lab.stats import percentile

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion (None when n == 0).

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0% or
    100%, which small suites hit often: 30/30 correct gives [0.886, 1.0], not [1, 1]."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} outside 0..{n}")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)  # exact at the ends, not 0.9999999
    return lo, hi


def summarize(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Figures of one run from its per-item rows (``correct``, ``format_valid``, ``status``,
    ``output``, ``latency_ms``). Every item counts in the accuracy: an error or a timeout is
    an item the model did not answer correctly. ``format_valid_rate`` is over the items whose
    scorer asks a format (None when none does)."""
    n = len(items)
    n_correct = sum(1 for r in items if r.get("correct"))
    with_format = [r for r in items if r.get("format_valid") is not None]
    ci = wilson_interval(n_correct, n)
    latencies = [float(r["latency_ms"]) for r in items if r.get("latency_ms") is not None]
    return {
        "n_items": n,
        "n_correct": n_correct,
        "accuracy": n_correct / n if n else None,
        "accuracy_ci_low": ci[0] if ci else None,
        "accuracy_ci_high": ci[1] if ci else None,
        "format_valid_rate": (sum(1 for r in with_format if r["format_valid"]) / len(with_format)) if with_format else None,
        "n_format_checked": len(with_format),
        "n_empty": sum(1 for r in items if r.get("status") == "ok" and not (r.get("output") or "").strip()),
        "n_timeout": sum(1 for r in items if r.get("status") == "timeout"),
        "n_error": sum(1 for r in items if r.get("status") == "error"),
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p95_ms": percentile(latencies, 95),
    }
