"""A titled curve of recent values, drawn with Unicode eighth blocks on a scale that starts at 0.

Textual's Sparkline stretches its data between the minimum and the maximum, so a memory line
moving from 171 to 172 MiB fills the whole height. A monitor must not exaggerate: this curve's
floor is 0 and its ceiling is the largest value (or a fixed ``top``, e.g. 100 for percentages).
"""

from __future__ import annotations

from typing import Sequence

from lab.tui.widgets.strips import StripWidget

_BLOCKS = " ▁▂▃▄▅▆▇█"


def columns(values: Sequence[float], width: int) -> list[float]:
    """``values`` fitted to ``width`` columns: the max of each bucket when there are more
    values than columns (peaks stay visible), the newest values right-aligned otherwise."""
    if width <= 0 or not values:
        return []
    if len(values) <= width:
        return list(values)
    out = []
    for i in range(width):
        lo = i * len(values) // width
        hi = max(lo + 1, (i + 1) * len(values) // width)
        out.append(max(values[lo:hi]))
    return out


def render_rows(values: Sequence[float], width: int, height: int, top: float | None) -> list[str]:
    """``height`` text rows, top row first, of block columns scaled from 0 to ``top``."""
    cols = columns(values, width)
    ceiling = top if top else max(cols, default=0.0)
    scale = 0.0 if ceiling <= 0 else height * 8 / ceiling
    eighths = [int(round(max(0.0, min(v, ceiling)) * scale)) for v in cols]
    return ["".join(_BLOCKS[min(8, max(0, e - r * 8))] for e in eighths).rjust(width)
            for r in range(height - 1, -1, -1)]


class Curve(StripWidget):
    """Title on the first line, the curve below it. Updated in place with :meth:`set`."""

    COMPONENT_CLASSES = {"curve--title", "curve--line"}

    def __init__(self, title: str, *, top: float | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.title_text = title
        self.top = top
        self.values: list[float] = []
        self._rows: tuple[tuple[int, int], list[str]] | None = None  # (width, height) -> rows

    def set(self, values: Sequence[float] | None, title: str) -> None:
        values = list(values) if values else []
        if title == self.title_text and values == self.values:
            return
        self.title_text, self.values = title, values
        self._rows = None
        self.refresh()

    def rows(self, width: int, height: int) -> list[str]:
        """The curve's text rows at this size (computed once per change, not once per line)."""
        if self._rows is None or self._rows[0] != (width, height):
            self._rows = ((width, height), render_rows(self.values, width, height, self.top))
        return self._rows[1]

    def line_segments(self, y: int, width: int) -> list[tuple[str, str | None]]:
        if y == 0:
            return [(self.title_text[:width], "curve--title")]
        rows = self.rows(width, self.size.height - 1)
        return [(rows[y - 1], "curve--line")] if 0 < y <= len(rows) else []
