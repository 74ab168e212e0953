"""The app's own widgets, each in a one-widget app."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import DataTable

from lab.tui.widgets.table import LabTable

HEADERS = ("quant", "size", "pp t/s", "tg t/s")
ROW = ("Q4_K_M", "93.81 MiB", "452.3 ± 12.1", "121.4 ± 3.3")


class OneTable(App[None]):
    CSS = "DataTable { height: 1fr; }"  # its size is fixed by the layout, as every table's in the app

    def __init__(self, table: DataTable) -> None:  # type: ignore[type-arg]
        super().__init__()
        self.table = table

    def compose(self) -> ComposeResult:
        yield self.table


async def draw_a_row_before_it_is_measured(table: DataTable, width: int) -> tuple[str, str]:  # type: ignore[type-arg]
    """Add a row wider than its columns' headers and draw it at once, as a frame that comes
    before the table's next idle moment does; then let the table measure it and draw again."""
    app = OneTable(table)
    async with app.run_test(size=(width, 5)) as pilot:
        table.add_columns(*HEADERS)
        await pilot.pause()
        table.add_row(*ROW)
        early = table.render_line(1).text
        await pilot.pause(0.2)
        return early, table.render_line(1).text


async def test_a_row_drawn_before_it_was_measured_is_redrawn_at_its_columns_widths() -> None:
    for width in (24, 120):  # narrower and wider than the measured row
        early, settled = await draw_a_row_before_it_is_measured(LabTable(), width)
        assert early.split()[:2] == ["Q4_K_", "93.8"], early  # cut to the headers' widths: nothing measured yet
        assert settled.split()[:2] == ["Q4_K_M", "93.81"], settled
        if width == 120:
            assert settled.split() == "Q4_K_M 93.81 MiB 452.3 ± 12.1 121.4 ± 3.3".split()


async def test_textuals_data_table_keeps_such_a_row_cut() -> None:
    # what LabTable is for: if this starts failing, Textual has fixed it and LabTable can go
    early, settled = await draw_a_row_before_it_is_measured(DataTable(), 120)
    assert settled == early and settled.split()[:2] == ["Q4_K_", "93.8"]
