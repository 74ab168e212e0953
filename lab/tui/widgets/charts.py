"""Charts drawn in the terminal with Unicode blocks: grouped bars and a scatter plot.

Both render from plain data in ``render()`` at the widget's current size, so they follow the
terminal from 80 to 200 columns; nothing is precomputed for a width.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from rich.text import Text
from textual.widget import Widget

from lab.tui.format import human_bytes
from lab.tui.widgets.gauge import bar_text

_MARKS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class BarChart(Widget):
    """Horizontal bars grouped under titles: ``{"tg128": [bar, ...], ...}`` where each bar
    has ``label``, ``value`` and ``n``. Bars of one group share a scale."""

    COMPONENT_CLASSES = {"barchart--title", "barchart--label", "barchart--bar", "barchart--value"}

    def __init__(self, unit: str = "t/s", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.unit = unit
        self.groups: dict[str, list[Any]] = {}
        self.empty_text = "n/a: no results to chart"

    def set_data(self, groups: dict[str, list[Any]], empty_text: str | None = None) -> None:
        self.groups = groups
        if empty_text is not None:
            self.empty_text = empty_text
        self.refresh(layout=True)

    def get_content_height(self, container: Any, viewport: Any, width: int) -> int:
        if not self.groups:
            return 1
        return sum(1 + len(bars) + 1 for bars in self.groups.values())

    def render(self) -> Text:
        out = Text(no_wrap=True, overflow="crop")
        if not self.groups:
            out.append(self.empty_text)
            return out
        width = self.size.width
        labels = [b.label for bars in self.groups.values() for b in bars]
        label_w = min(max((len(x) for x in labels), default=8), max(12, width // 3))
        first = True
        for title, bars in self.groups.items():
            if not first:
                out.append("\n")
            first = False
            unit = next((b.unit for b in bars if getattr(b, "unit", None)), self.unit)
            out.append(f"{title} ({unit}, mean of n results)\n", self.get_component_rich_style("barchart--title"))
            top = max((b.value for b in bars), default=0.0) or 1.0
            for bar in bars:
                value = f" {bar.value:,.1f}  n={bar.n}"
                label = bar.label if len(bar.label) <= label_w else bar.label[: label_w - 1] + "…"
                bar_w = max(1, width - label_w - len(value) - 2)
                filled, empty = bar_text(bar.value / top, bar_w)
                out.append(label.ljust(label_w) + " ", self.get_component_rich_style("barchart--label"))
                out.append(filled, self.get_component_rich_style("barchart--bar"))
                out.append(empty)
                out.append(value + "\n", self.get_component_rich_style("barchart--value"))
        out.rstrip()
        return out


class ScatterPlot(Widget):
    """Points on a log-scaled x axis (file size) and a linear y axis (t/s), each marked with a
    letter explained in a legend below the plot."""

    COMPONENT_CLASSES = {"scatter--axis", "scatter--point", "scatter--legend"}

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.points: Sequence[Any] = []
        self.plot_title = "speed against file size"

    def set_data(self, points: Sequence[Any], title: str | None = None) -> None:
        self.points = list(points)[: len(_MARKS)]
        if title:
            self.plot_title = title
        self.refresh(layout=True)

    def render(self) -> Text:
        out = Text(no_wrap=True, overflow="crop")
        axis = self.get_component_rich_style("scatter--axis")
        if not self.points:
            out.append(f"{self.plot_title}: n/a (no results with a file size)")
            return out
        width, height = self.size.width, self.size.height
        legend_rows = math.ceil(len(self.points) / 2)
        plot_h = max(3, height - legend_rows - 3)
        y_w = 8
        plot_w = max(10, width - y_w - 2)
        xs = [math.log10(max(p.x, 1.0)) for p in self.points]
        ys = [p.y for p in self.points]
        x_lo, x_hi = min(xs), max(xs)
        if x_hi - x_lo < 1e-9:
            x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
        y_hi = max(ys) * 1.05 or 1.0
        grid = [[" "] * plot_w for _ in range(plot_h)]
        for i, (x, y) in enumerate(zip(xs, ys)):
            col = int(round((x - x_lo) / (x_hi - x_lo) * (plot_w - 1)))
            row = plot_h - 1 - int(round(y / y_hi * (plot_h - 1)))
            grid[row][col] = _MARKS[i] if grid[row][col] == " " else "*"
        out.append(f"{self.plot_title} (x: file size, log scale; y: t/s)\n", axis)
        for r, cells in enumerate(grid):
            value = y_hi * (plot_h - 1 - r) / (plot_h - 1)
            label = f"{value:7.0f} " if r in (0, plot_h // 2, plot_h - 1) else " " * y_w
            out.append(label + "│", axis)
            out.append("".join(cells) + "\n", self.get_component_rich_style("scatter--point"))
        out.append(" " * y_w + "└" + "─" * plot_w + "\n", axis)
        lo, hi = human_bytes(10 ** x_lo), human_bytes(10 ** x_hi)
        out.append(" " * (y_w + 1) + lo + " " * max(1, plot_w - len(lo) - len(hi)) + hi + "\n", axis)
        half = max(20, (width - 2) // 2)
        for i in range(0, len(self.points), 2):
            pair = self.points[i: i + 2]
            cells = [f"{_MARKS[i + j]} {p.label[: half - 16]} {p.y:.1f} t/s" for j, p in enumerate(pair)]
            out.append("".join(c.ljust(half) for c in cells).rstrip() + "\n", self.get_component_rich_style("scatter--legend"))
        out.rstrip()
        return out
