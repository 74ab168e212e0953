"""One line of text that repaints without a layout pass.

``Static.update`` refreshes the layout of the whole screen (its size might change), which cost
~40 ms per call on the 2-core reference machine; the live dashboard changes several lines twice a
second. A fixed-height line only needs a repaint, and draws itself as one strip.
"""

from __future__ import annotations

from textual.reactive import reactive

from lab.tui.widgets.strips import StripWidget, ellipsize


class Line(StripWidget):
    text = reactive("", layout=False)

    def __init__(self, text: str = "", **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.text = text

    def update(self, text: str) -> None:
        self.text = text

    def line_segments(self, y: int, width: int) -> list[tuple[str, str | None]]:
        return [(ellipsize(self.text, width), None)] if y == 0 else []
