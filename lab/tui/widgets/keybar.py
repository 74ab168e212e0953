"""The footer: the focused screen's keys on one line, drawn by one widget.

Textual's Footer rebuilds a widget per key whenever the bindings change, which includes every
screen switch: measured here at about 80 ms of CPU per switch on the 2-core reference machine,
most of the cost of changing screens. This bar renders the same information as one line of
text and only repaints when the bindings change. Keys can be clicked.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.widget import Widget


class KeyBar(Widget):
    COMPONENT_CLASSES = {"keybar--key", "keybar--description", "keybar--disabled"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._spans: list[tuple[int, int, str, Any]] = []

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Any) -> None:
        if screen is self.screen:
            self.refresh()

    def _items(self) -> tuple[list[tuple[str, str, bool, str, Any]], tuple[str, str, Any] | None]:
        seen: set[str] = set()
        items = []
        palette = None
        palette_key = getattr(self.app, "COMMAND_PALETTE_BINDING", None)
        for key, active in self.screen.active_bindings.items():
            binding = active.binding
            if key == palette_key:
                palette = (self.app.get_key_display(binding), "palette", active.node)
                continue
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            items.append((self.app.get_key_display(binding), binding.description, active.enabled,
                          binding.action, active.node))
        return items, palette

    def render(self) -> Text:
        items, palette = self._items()
        key_style = self.get_component_rich_style("keybar--key")
        desc_style = self.get_component_rich_style("keybar--description")
        off_style = self.get_component_rich_style("keybar--disabled")
        text = Text(no_wrap=True, overflow="ellipsis")
        self._spans = []
        for key, description, enabled, action, node in items:
            start = text.cell_len
            text.append(f" {key} ", key_style if enabled else off_style)
            text.append(f"{description} ", desc_style if enabled else off_style)
            self._spans.append((start, text.cell_len, action, node))
        if palette is not None:
            label = Text.assemble((f" {palette[0]} ", key_style), (f"{palette[1]} ", desc_style))
            room = self.size.width - text.cell_len
            if room >= label.cell_len:
                start = self.size.width - label.cell_len
                text.append(" " * (room - label.cell_len))
                text.append_text(label)
                self._spans.append((start, self.size.width, "app.command_palette", self.app))
        return text

    async def on_click(self, event: events.Click) -> None:
        for start, end, action, node in self._spans:
            if start <= event.x < end:
                await self.app.run_action(action, node)
                return
