"""Small modal screens: help, a yes/no question, deleting a model, inspecting a model."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Static

from lab.tui import format as fmt
from lab.tui.widgets.table import LabTable


class HelpScreen(ModalScreen[None]):
    """Every key of every screen, generated from the bindings so it cannot drift."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, sections: list[tuple[str, str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box", classes="dialog"):
            yield Static("Rightsizer: keys and screens   (Esc closes)", classes="dialog-title")
            with VerticalScroll(id="help-scroll"):
                for title, text, keys in self.sections:
                    table = Table.grid(padding=(0, 2))
                    table.add_column(style="bold", no_wrap=True)
                    table.add_column()
                    for key, description in keys:
                        table.add_row(key, description)
                    yield Static(Text(title, style="bold underline"), classes="help-title")
                    if text:
                        yield Static(text, classes="help-text", markup=False)
                    yield Static(table, classes="help-keys")

    def action_dismiss(self, result: Any = None) -> None:  # type: ignore[override]
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; ``y``/``n`` answer, Esc says no."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button(f"{self.no} (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class DeleteScreen(ModalScreen[bool]):
    """Says exactly what goes and what stays, and why, before anything is deleted: the plan
    ``rightsizer models rm`` prints. A file outside the models folder and the HF cache gets a
    warning and a button that says so."""

    BINDINGS = [Binding("escape,n", "dismiss_no", "Cancel")]

    def __init__(self, plan: Any) -> None:  # lab.library.DeletionPlan
        super().__init__()
        self.plan = plan

    def compose(self) -> ComposeResult:
        p = self.plan
        with Vertical(classes="dialog"):
            yield Static(f"Delete {p.entry_name}?", classes="dialog-title", markup=False)
            if not p.allowed:
                yield Static(p.reason or "This model cannot be deleted here.", classes="dialog-text", markup=False)
                with Horizontal(classes="dialog-buttons"):
                    yield Button("Close (Esc)", id="no")
                return
            yield Static("\n".join(p.lines(fmt.human_bytes)), classes="dialog-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                label = "Delete file outside the models folder" if p.outside_models_dir else "Delete"
                yield Button(label, variant="error", id="yes")
                yield Button("Cancel (Esc)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_dismiss_no(self) -> None:
        self.dismiss(False)


class InspectScreen(ModalScreen[None]):
    """Every GGUF metadata key of a model, with its summary and memory estimate."""

    BINDINGS = [Binding("escape,q,i", "close", "Close")]

    def __init__(self, title: str, summary_rows: list[tuple[str, str]], metadata: dict[str, Any]) -> None:
        super().__init__()
        self.title_text = title
        self.summary_rows = summary_rows
        self.metadata = metadata

    def compose(self) -> ComposeResult:
        with Vertical(id="inspect-box", classes="dialog"):
            yield Static(f"{self.title_text}   (Esc closes)", classes="dialog-title", markup=False)
            yield LabTable(id="inspect-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        tables = self.query(DataTable)
        if not tables:  # pushed while the app was already exiting: nothing to fill
            return
        table = tables.first()
        table.add_columns("key", "value")
        for key, value in self.summary_rows:
            table.add_row(key, value)
        table.add_row("", "")
        for key, value in self.metadata.items():
            table.add_row(key, str(value))
        table.focus()

    def action_close(self) -> None:
        self.dismiss(None)
