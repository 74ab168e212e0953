"""A titled curve of recent values, drawn with Unicode eighth blocks on a scale that starts at 0.

Textual's Sparkline stretches its data between the minimum and the maximum, so a memory line
moving from 171 to 172 MiB fills the whole height. A monitor must not exaggerate: this curve's
floor is 0 and its ceiling is the largest value (or a fixed ``top``, e.g. 100 for percentages).
"""

from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.widget import Widget

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
    rows = []
    for r in range(height - 1, -1, -1):
        line = []
        for v in cols:
            eighths = 0 if ceiling <= 0 else int(round(max(0.0, min(v, ceiling)) / ceiling * height * 8))
            cell = min(8, max(0, eighths - r * 8))
            line.append(_BLOCKS[cell])
        rows.append("".join(line).rjust(width))
    return rows


class Curve(Widget):
    """Title on the first line, the curve below it. Updated in place with :meth:`set`."""

    COMPONENT_CLASSES = {"curve--title", "curve--line"}

    def __init__(self, title: str, *, top: float | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.title_text = title
        self.top = top
        self.values: list[float] = []

    def set(self, values: Sequence[float] | None, title: str) -> None:
        values = list(values) if values else []
        if title == self.title_text and values == self.values:
            return
        self.title_text, self.values = title, values
        self.refresh()

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        out = Text(no_wrap=True, overflow="crop")
        out.append(self.title_text[:width], self.get_component_rich_style("curve--title"))
        if height > 1:
            style = self.get_component_rich_style("curve--line")
            for row in render_rows(self.values, width, height - 1, self.top):
                out.append("\n")
                out.append(row, style)
        return out
