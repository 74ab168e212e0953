"""How figures are written on screen. ``None`` is always "n/a", never 0.

Bytes and counts come from :mod:`lab.units`, which the CLI writes through too, so a number read
in the app and one read in a terminal table look the same.
"""

from __future__ import annotations

from typing import Any

from lab.units import NA, human_bytes, human_count
from lab.units import missing as _missing

__all__ = ["NA", "human_bytes", "human_count", "ts", "ts_pm", "pct", "diff_pct", "seconds", "mib",
           "num", "when", "percent", "share", "kld", "ratio", "accuracy"]


def ts(value: float | None) -> str:
    """Tokens per second: ``172.4``."""
    return NA if _missing(value) else f"{value:.1f}"


def ts_pm(row: dict[str, Any]) -> str:
    """``mean ± stddev`` of a result row's t/s, llama-bench style; ``noisy``, ``swapped`` and
    ``throttled`` marked in words."""
    if _missing(row.get("avg_ts")):
        return NA
    text = f"{row['avg_ts']:.2f} ± {(row.get('stddev_ts') or 0.0):.2f}"
    flags = [flag for flag in ("noisy", "swapped", "throttled") if row.get(flag)]
    return " ".join([text, *flags])


def pct(value: float | None, digits: int = 0) -> str:
    return NA if _missing(value) else f"{value:.{digits}f}%"


def percent(value: float | None) -> str:
    """A utilisation that is already in percent (psutil, NVML)."""
    return NA if _missing(value) else f"{value:.0f}%"


def diff_pct(value: float | None, base: float | None) -> float | None:
    """Relative difference in percent of ``value`` against ``base``; None when undefined."""
    if _missing(value) or _missing(base) or base == 0:
        return None
    return (float(value) - float(base)) / abs(float(base)) * 100.0  # type: ignore[arg-type]


def signed_pct(value: float | None) -> str:
    return NA if value is None else f"{value:+.1f}%"


def seconds(value: float | None) -> str:
    """A duration for an ETA: ``42s``, ``3m05s``, ``1h02m``."""
    if _missing(value):
        return NA
    s = max(0, int(round(value)))  # type: ignore[arg-type]
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def mib(value: float | None) -> str:
    return NA if _missing(value) else f"{value / 2**20:.0f} MiB"


def num(value: Any, digits: int = 1) -> str:
    if _missing(value):
        return NA
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def when(iso: str | None) -> str:
    """A stored UTC timestamp as ``2025-06-01 12:34``."""
    return NA if not iso else iso[:16].replace("T", " ")


def share(value: float | None, digits: int = 0) -> str:
    """A fraction 0..1 (accuracy, format-valid rate, same-top rate) as a percent: ``62%``."""
    return NA if _missing(value) else f"{value * 100:.{digits}f}%"


def kld(value: float | None) -> str:
    """A KL-divergence in nats; four decimals, since a good quant sits near 0.001."""
    return NA if _missing(value) else f"{value:.4f}"


def ratio(value: float | None) -> str:
    """A ratio near 1 (perplexity against the reference): ``1.021``."""
    return NA if _missing(value) else f"{value:.3f}"


def accuracy(value: float | None, low: float | None = None, high: float | None = None) -> str:
    """Accuracy with its 95% interval: ``62% (48–74)``; the interval is left out when unknown."""
    if _missing(value):
        return NA
    if _missing(low) or _missing(high):
        return share(value)
    return f"{share(value)} ({low * 100:.0f}–{high * 100:.0f})"  # type: ignore[operator]
