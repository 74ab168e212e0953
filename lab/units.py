"""Numbers as people read them, the same in both faces: bytes, counts, and "n/a" for a figure
the machine could not give (None or NaN, never 0).

The CLI (:mod:`lab.cli.output`) and the app (:mod:`lab.tui.format`) both write through these,
so a number read in a terminal table and one read in the app look the same; neither face
imports the other.
"""

from __future__ import annotations

import math
from typing import Any

NA = "n/a"

__all__ = ["NA", "human_bytes", "human_count", "missing"]


def missing(value: Any) -> bool:
    """True for a figure that is not there: None or NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def human_bytes(n: float | None) -> str:
    """1536 -> '1.50 KiB'; None -> 'n/a'."""
    if missing(n):
        return NA
    value = float(n)  # type: ignore[arg-type]
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"


def human_count(n: float | None) -> str:
    """134515008 -> '134.52 M' (llama-bench writes params this way)."""
    if missing(n):
        return NA
    value = float(n)  # type: ignore[arg-type]
    for unit in ("", " K", " M", " B", " T"):
        if abs(value) < 1000 or unit == " T":
            return f"{value:.2f}{unit}" if unit else f"{value:.0f}"
        value /= 1000
    return f"{value:.2f} T"
