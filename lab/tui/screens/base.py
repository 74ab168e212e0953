"""What every main screen shares: the navigation bar on top, the footer with its keys below."""

from __future__ import annotations

from typing import Iterable

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input

from lab.tui.widgets.keybar import KeyBar
from lab.tui.widgets.navbar import NavBar


class LabScreen(Screen[None]):
    """A main screen (one per app mode). Subclasses yield their body from ``compose_body``."""

    MODE = ""
    HELP = ""  # one paragraph for the help screen

    def compose(self) -> ComposeResult:
        yield NavBar(self.MODE, id="navbar")
        yield from self.compose_body()
        yield KeyBar()

    def compose_body(self) -> Iterable[Widget]:
        return []

    def make_input(self, value: str = "", **kwargs: object) -> Input:
        """A compact Input whose cursor blinks unless the app says not to (snapshot tests)."""
        field = Input(value, compact=True, **kwargs)  # type: ignore[arg-type]
        field.cursor_blink = getattr(self.app, "cursor_blink", True)
        return field
