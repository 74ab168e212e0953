"""The top line of every screen: where you are, how to get elsewhere, and what a run is doing."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

SCREENS = [("library", "1", "Library"), ("run", "2", "Run"), ("results", "3", "Results"), ("machine", "4", "Machine"),
           ("hub", "5", "Hub"), ("machines", "6", "Machines")]


class NavBar(Widget):
    """``Rightsizer  1 Library  2 Run  3 Results  4 Machine        ● tg128 3/5 171 t/s``.

    The current screen is bracketed as well as highlighted, so it reads without colour.
    """

    COMPONENT_CLASSES = {"navbar--brand", "navbar--tab", "navbar--current", "navbar--status"}

    status = reactive("")

    def __init__(self, current: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.current = current

    def on_mount(self) -> None:
        # Follows the app's one-line run status from any screen.
        self.watch(self.app, "run_status", self._on_run_status, init=True)

    def _on_run_status(self, value: str) -> None:
        self.status = value

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" Rightsizer ", self.get_component_rich_style("navbar--brand"))
        for mode, key, title in SCREENS:
            if mode == self.current:
                text.append(f"[{key} {title}]", self.get_component_rich_style("navbar--current"))
            else:
                text.append(f" {key} {title} ", self.get_component_rich_style("navbar--tab"))
        if self.status:
            status = Text(self.status, style=self.get_component_rich_style("navbar--status"))
            room = self.size.width - text.cell_len - 1
            if room > 8:
                status.truncate(room, overflow="ellipsis")
                text.append(" " * max(1, room - status.cell_len))
                text.append_text(status)
        return text

    async def on_click(self, event: object) -> None:
        # Clicking a tab switches screen: find which label the x offset falls in.
        x = getattr(event, "x", 0)
        pos = len(" Rightsizer ")
        for mode, key, title in SCREENS:
            width = len(f" {key} {title} ")
            if pos <= x < pos + width:
                self.app.switch_mode(mode)
                return
            pos += width
