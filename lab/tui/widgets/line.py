"""One line of text that repaints without a layout pass.

``Static.update`` refreshes the layout of the whole screen (its size might change), which cost
~40 ms per call on the 2-core reference machine; the live dashboard changes several lines twice a
second. A fixed-height line only needs a repaint.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class Line(Widget):
    text = reactive("", layout=False)

    def __init__(self, text: str = "", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.text = text

    def update(self, text: str) -> None:
        self.text = text

    def render(self) -> Text:
        return Text(self.text, no_wrap=True, overflow="ellipsis")
