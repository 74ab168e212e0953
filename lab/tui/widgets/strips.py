"""A base for the dashboard's small widgets that draw their lines directly (Textual's line API).

A widget whose ``render`` returns Rich Text goes through Textual's visual pipeline (Text to
Content, wrapping, formatting, strips) and looks up its component styles on every repaint: about
1 ms per repaint for a one-line gauge and 2 ms for a four-line curve on the 2-core reference
machine. The live dashboard repaints several of them every second while llama.cpp holds both
cores, and on two cores each millisecond the UI thread runs is a millisecond one of llama.cpp's
threads waits. Drawing each line as a Strip of Segments with styles resolved once costs a
fraction of that.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget


class StripWidget(Widget):
    """Subclasses implement ``line_segments(y, width)``: the (text, component class or None)
    pieces of line ``y``; this class styles, pads and crops them."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._style_cache: dict[str | None, Style] = {}

    def notify_style_update(self) -> None:
        # The theme or the CSS changed: resolve the styles again at the next repaint.
        self._style_cache.clear()
        super().notify_style_update()

    def part_style(self, component: str | None) -> Style:
        """The widget's own style, with a component class's on top (None: the widget's)."""
        style = self._style_cache.get(component)
        if style is None:
            style = self.rich_style
            if component is not None:
                style = style + self.get_component_rich_style(component)
            self._style_cache[component] = style
        return style

    def line_segments(self, y: int, width: int) -> list[tuple[str, str | None]]:
        raise NotImplementedError

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.part_style(None)
        segments = [Segment(text, self.part_style(part)) for text, part in self.line_segments(y, width) if text]
        length = sum(cell_len(s.text) for s in segments)
        return Strip(segments, length).adjust_cell_length(width, base)


def ellipsize(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells, ending in "…" when it was longer."""
    if cell_len(text) <= width:
        return text
    if width <= 0:
        return ""
    out = ""
    for ch in text:
        if cell_len(out + ch) > width - 1:
            break
        out += ch
    return out + "…"
