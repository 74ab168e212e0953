"""What every main screen shares: the navigation bar on top, the footer with its keys below."""

from __future__ import annotations

from typing import Any, Iterable

from textual import events
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

    _styled_as: Any = None  # the app's look when this screen was last shown

    def _look(self) -> tuple[str, frozenset[str]]:
        return self.app.theme, frozenset(self.app.pseudo_classes)

    def on_mount(self) -> None:
        # Textual re-parses the whole stylesheet when it shows a screen whose style count lags
        # the app's. A mode's screen mounts after switch_mode has looked at that count, so it
        # stays behind and its second visit pays a full re-parse (~130 ms; 300 ms during a
        # benchmark). Having just been styled from the current stylesheet, it is up to date.
        if hasattr(self, "_css_update_count"):
            self._css_update_count = self.app._css_update_count
        # For the same reason its first showing needs no restyle (see on_screen_resume); the
        # app builds screens hidden, ahead of their first visit.
        self._styled_as = self._look()

    def on_screen_suspend(self) -> None:
        self._styled_as = self._look()

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        # Textual restyles every widget of a screen it shows again, in case the app's theme or
        # pseudo-classes (dark, blur, ansi, ...) changed while it was hidden. On the Run screen
        # that costs ~70 ms of the UI thread per switch, twice that while a benchmark holds both
        # cores, so a key that switches screens would miss 100 ms. Classes changed on hidden
        # widgets restyle themselves, and a changed stylesheet is refreshed by switch_mode, so
        # the restyle is only needed when the look changed.
        if self._styled_as is not None and self._styled_as == self._look():
            event.refresh_styles = False

    def on_idle(self) -> None:
        # Textual lays out only the current screen and leaves a hidden one's layout to its next
        # showing. A screen built ahead of its first showing would then place and draw every
        # widget during that key press (0.2 s and more while a benchmark held both cores), so
        # until then it is laid out whenever its widgets ask (a table filled, a breakpoint
        # class). Once shown, a hidden screen waits as Textual has it: its next showing only
        # moves what changed, and a run's dashboard costs nothing while it is not seen.
        if self.stack_updates == 0 and not self.is_current and self._layout_required and self.is_attached:
            self.lay_out_hidden()

    def lay_out_hidden(self) -> None:
        """Lay this screen out at the terminal's size and render it into its widgets' caches,
        not to the terminal (it is not the current screen)."""
        self._refresh_layout(self.app.size)
        self._layout_required = False
        self._dirty_widgets.clear()
        self._compositor.render_update(full=True)

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
