"""The verdict of a right-size question: every candidate with its figures, the word for what
was decided (PICK, FAIL and the first limit it failed, borderline with the figure and its
interval, skipped and why), the pick's exact ``llama-server`` command line and the run's id.

The rows are the CLI's verdict table (``lab.report.verdict``), so both faces say the same.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Static

from lab.report.verdict import pick_lines, verdict_columns, verdict_rows
from lab.tui import format as fmt
from lab.tui.data.forms import limits_text
from lab.tui.widgets.keybar import KeyBar
from lab.tui.widgets.navbar import NavBar
from lab.tui.widgets.table import LabTable

# The wide text columns are left to the line under the table (the highlighted row in full); the
# memory estimate is shown when a memory limit is asked (120 columns hold the rest).
TABLE_SKIP = ("why", "measured", "reused")
STATUS_STYLE = {"PICK": "bold reverse", "FAIL": "bold", "borderline": "bold italic", "error": "bold"}


def cell(value: Any, kind: str) -> Text | str:
    """One verdict cell: sizes and fractions formatted, figures right-aligned, None as "n/a"."""
    if kind == "bytes":
        return Text(fmt.human_bytes(value), justify="right")
    if kind == "fraction":
        return Text(fmt.share(value, 1), justify="right")
    if value is None:
        return Text(fmt.NA, justify="right")
    return str(value)


def row_detail(row: dict[str, Any]) -> str:
    """The line under the table for the highlighted candidate: its verdict and why, in full, and
    what was measured now or reused."""
    text = f"{row['file']}: {row['status']}"
    if row.get("why"):
        text += f" — {row['why']}"
    done = [f"measured now: {row['measured']}" if row.get("measured") else "",
            f"reused: {row['reused']}" if row.get("reused") else ""]
    done = [d for d in done if d]
    return text + (f" · {' · '.join(done)}" if done else "")


class VerdictScreen(Screen[None]):
    """A right-size outcome, replacing its progress screen (Esc goes back to the Library)."""

    HELP = ("Every candidate of the right-size question, in preference order: PICK, FAIL with the first "
            "limit it failed, borderline (the figure's 95% interval holds the limit even after measuring "
            "again), skipped (a candidate ranked before it was picked) and error. The line under the "
            "table gives the highlighted candidate's reason in full. y copies the pick's command line.")

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back"), Binding("y", "copy", "Copy command")]

    def __init__(self, outcome: Any) -> None:
        super().__init__()
        self.outcome = outcome
        self.rows = verdict_rows(outcome)

    def compose(self) -> ComposeResult:
        out = self.outcome
        q = out.question
        if out.pick is not None:
            title = f"Verdict: {out.pick.name} ({out.pick.quant}), the {q.prefer} of those meeting every limit"
        else:
            title = "Verdict: no candidate meets every limit"
        yield NavBar("library", id="navbar")
        with Vertical(id="verdict-main"):
            yield Static(title, id="verdict-title", markup=False)
            config = out.config
            yield Static(f"{q.model} · {limits_text(q)} · judged at -t {config.get('n_threads')} "
                         f"-ngl {config.get('n_gpu_layers')} ({q.test_pp} / {q.test_tg}, -r {q.repetitions} first)",
                         id="verdict-question", markup=False)
            yield LabTable(id="verdict", cursor_type="row", zebra_stripes=True)
            yield Static("", id="verdict-row", markup=False)
            yield Static(self._footer_text(), id="verdict-pick", markup=False)
        yield KeyBar()

    def _footer_text(self) -> Text:
        out = self.outcome
        text = Text()
        # why each other candidate is not the pick: the first limit it failed, or its figure and interval
        others = [row for row in self.rows if row["status"] != "PICK"]
        for row in others:
            text.append(row["status"], STATUS_STYLE.get(row["status"], "")).append(f" {row['file']}: {row['why']}\n")
        if others:
            text.append("\n")
        for note in out.notes:
            text.append(f"note: {note}\n")
        lines = pick_lines(out)
        if out.pick is not None:
            text.append(lines[0] + "\n")
            text.append("llama-server command:\n", "bold")
            text.append(lines[1].strip() + "\n", "bold")
        else:
            text.append(lines[0] + "\n", "bold")
        text.append(f"run: {out.run_id} (rightsizer report --run {out.run_id} -o report.html)")
        return text

    def on_mount(self) -> None:
        table = self.query_one("#verdict", DataTable)
        q = self.outcome.question
        skip = TABLE_SKIP if {"max_memory_bytes", "max_vram_bytes"} & set(q.limits) else (*TABLE_SKIP, "est")
        columns = [c for c in verdict_columns(self.rows, q.test_pp, q.test_tg) if c[0] not in skip]
        # the verdict first: a ladder's file names are long, and the figures may scroll off a narrow screen
        self.columns = sorted(columns, key=lambda c: c[0] != "status")
        for key, title, kind in self.columns:
            table.add_column(Text(title, justify="left" if kind == "text" else "right"), key=key)
        for i, row in enumerate(self.rows):
            cells: list[Any] = []
            for key, _, kind in self.columns:
                value = cell(row.get(key), kind)
                if key == "status":
                    value = Text(row["status"], style=STATUS_STYLE.get(row["status"], ""))
                cells.append(value)
            table.add_row(*cells, key=str(i))
        pick = next((i for i, r in enumerate(self.rows) if r["status"] == "PICK"), 0)
        table.move_cursor(row=pick)
        table.focus()
        self._show_row()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_row()

    def _show_row(self) -> None:
        if not self.rows:
            return
        table = self.query_one("#verdict", DataTable)
        index = min(max(table.cursor_row, 0), len(self.rows) - 1)
        self.query_one("#verdict-row", Static).update(row_detail(self.rows[index]))

    def action_copy(self) -> None:
        commands = self.outcome.commands()
        if not commands:
            self.notify("No pick: there is no command line to copy.", severity="warning")
            return
        self.app.copy_to_clipboard(commands["llama-server"])
        self.notify("llama-server command line copied.")
