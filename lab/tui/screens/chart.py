"""Chart: mean t/s per model/quant for the most frequent tests, or speed against file size."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from lab.tui import data
from lab.tui.messages import ChartLoaded
from lab.tui.widgets.charts import BarChart, ScatterPlot
from lab.tui.widgets.keybar import KeyBar
from lab.tui.widgets.navbar import NavBar


class ChartScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("v", "toggle_view", "Bars/scatter"),
    ]

    def __init__(self, filters: dict[str, str]) -> None:
        super().__init__()
        self.filters = filters

    def compose(self) -> ComposeResult:
        yield NavBar("results", id="navbar")
        with Vertical(id="chart-main"):
            yield Static("Reading results…", id="chart-title", markup=False)
            with VerticalScroll(id="chart-bars-box"):
                yield BarChart(id="chart-bars")
            yield ScatterPlot(id="chart-scatter")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#chart-scatter").display = False
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _load(self) -> None:
        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            bars, n = data.chart_bars(store, self.filters)
            points = data.scatter_points(store, self.filters)
        finally:
            store.close()
        self.post_message(ChartLoaded(bars, n, points))

    def on_chart_loaded(self, message: ChartLoaded) -> None:
        scope = " ".join(f"{k}:{v}" for k, v in self.filters.items()) or "all results"
        capped = " (the newest 5,000)" if message.n_rows >= 5000 else ""
        self.query_one("#chart-title", Static).update(
            f"{scope}: {message.n_rows:,} results{capped} · v switches bars / speed against file size")
        self.query_one("#chart-bars", BarChart).set_data(message.bars)
        self.query_one("#chart-scatter", ScatterPlot).set_data(message.points, "tg t/s against file size")

    def action_toggle_view(self) -> None:
        box = self.query_one("#chart-bars-box")
        scatter = self.query_one("#chart-scatter")
        box.display, scatter.display = not box.display, not scatter.display
