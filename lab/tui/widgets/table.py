"""The app's tables: Textual's DataTable, with rows never left drawn at stale column widths.

DataTable measures new rows' cells when it is next idle, and its caches of rendered cells,
rows and lines are not keyed on column widths. A frame drawn between ``add_row`` and that idle
moment (likely when messages queue up, as while a benchmark holds both cores) caches the rows
cut to the widths the columns had before. A table whose size is fixed by its layout (every
table here fills its pane) gets no resize to clear those caches, so the rows stayed cut until
something else changed, such as the cursor moving.
"""

from __future__ import annotations

from typing import Iterable

from textual.widgets import DataTable
from textual.widgets.data_table import RowKey


class LabTable(DataTable):  # type: ignore[type-arg]
    """A DataTable that redraws its rows when measuring new ones changes a column's width."""

    def _widths(self) -> list[int]:
        return [column.get_render_width(self) for column in self.columns.values()]

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        before = self._widths()
        super()._update_dimensions(new_rows)
        if self._widths() != before:
            self._update_count += 1  # every cached cell, row and line is stale
            self.refresh()
