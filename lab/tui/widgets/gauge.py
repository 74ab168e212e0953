"""A one-line gauge: ``label ▕█████▋     ▏ text``, drawn with Unicode eighth blocks."""

from __future__ import annotations

from textual.reactive import reactive

from lab.tui.widgets.strips import StripWidget

_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar_text(fraction: float | None, width: int) -> tuple[str, str]:
    """The filled and empty parts of a bar ``width`` cells wide; (``""``, dots) when unknown."""
    if width <= 0:
        return "", ""
    if fraction is None:
        return "", "·" * width
    fraction = min(1.0, max(0.0, fraction))
    eighths = int(round(fraction * width * 8))
    full, part = divmod(eighths, 8)
    filled = "█" * full + (_EIGHTHS[part] if part else "")
    return filled, " " * (width - len(filled))


class Gauge(StripWidget):
    """A labelled horizontal bar. ``fraction`` None means "n/a" (dotted, never an empty 0)."""

    COMPONENT_CLASSES = {"gauge--label", "gauge--bar", "gauge--high", "gauge--empty", "gauge--text"}

    label = reactive("")
    fraction: reactive[float | None] = reactive(None)
    text = reactive("")

    def __init__(self, label: str = "", *, label_width: int = 8, text_width: int = 0, high: float = 0.9,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.label = label
        self.label_width = label_width
        self.text_width = text_width
        self.high = high

    def set(self, fraction: float | None, text: str, label: str | None = None) -> None:
        """Update in place; a no-op when nothing changed (no repaint)."""
        if label is not None and label != self.label:
            self.label = label
        if fraction is not None:
            fraction = round(fraction, 3)
        if fraction != self.fraction:
            self.fraction = fraction
        if text != self.text:
            self.text = text

    def line_segments(self, y: int, width: int) -> list[tuple[str, str | None]]:
        if y != 0:
            return []
        label = self.label[: self.label_width].ljust(self.label_width) if self.label_width else ""
        text = self.text.rjust(self.text_width) if self.text_width else self.text
        filled, empty = bar_text(self.fraction, width - len(label) - len(text) - 3 - (1 if label else 0))
        high = self.fraction is not None and self.fraction >= self.high
        return [
            (label + " " if label else "", "gauge--label"), ("▕", "gauge--empty"),
            (filled, "gauge--high" if high else "gauge--bar"), (empty, "gauge--empty"), ("▏", "gauge--empty"),
            (" " + text, "gauge--text"),
        ]
