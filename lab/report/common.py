"""What every part of the report shares: percent differences, memory sizes, figure formatting,
and the names imported llama-bench measurements are stored under."""

from __future__ import annotations

import math
import re
from typing import Any

from lab.errors import LabError

IMPORT_KIND = "llama-bench-import"
IMPORTED_MACHINE_PREFIX = "import-"


def pct_diff(value: float | None, baseline: float | None) -> float | None:
    """``(value - baseline) / baseline * 100``; None when either is unknown or the baseline is 0."""
    if value is None or baseline is None or baseline == 0:
        return None
    if isinstance(value, float) and math.isnan(value) or isinstance(baseline, float) and math.isnan(baseline):
        return None
    return (value - baseline) / baseline * 100.0


_BYTE_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 10**3, "kib": 1 << 10,
    "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
    "g": 1 << 30, "gb": 10**9, "gib": 1 << 30,
    "t": 1 << 40, "tb": 10**12, "tib": 1 << 40,
}


def parse_bytes(text: str | int | float) -> int:
    """``"2GiB"`` -> 2147483648. Binary units (KiB, MiB, GiB, TiB, and bare K, M, G, T) and
    decimal ones (KB, MB, GB, TB); a plain number is bytes. Raises LabError on anything else."""
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
        if not match or match.group(2).lower() not in _BYTE_UNITS:
            raise LabError(f"{text!r} is not a memory size; write e.g. 2GiB, 512MiB or 1500000000")
        value, unit = float(match.group(1)), match.group(2).lower()
    if value < 0:
        raise LabError(f"{text!r} is not a memory size; it must not be negative")
    return int(round(value * _BYTE_UNITS[unit]))


def fmt_bytes(n: float | None) -> str:
    """1536 -> "1.50 KiB"; None -> "n/a"."""
    if n is None:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"


def fmt_figure(value: float | None) -> str:
    """A figure for a sentence or a cell: whole numbers bare, others to 3-4 significant
    digits; None is "n/a"."""
    if value is None:
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.4g}"


def bool_or_none(value: Any) -> bool | None:
    """A stored 0/1 as a bool; None (never measured) stays None."""
    return None if value is None else bool(value)


