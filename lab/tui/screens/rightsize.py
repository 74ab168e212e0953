"""Right-size from the Library (r): a form with the limits ``rightsizer rightsize`` takes, then
the question answered live — the candidate and stage being measured, what was skipped and why —
and, at the end, the verdict screen (:mod:`lab.tui.screens.verdict`).

The question runs as ``lab.rightsize.rightsize`` in a thread worker, exactly what the CLI calls,
with its progress lines posted back as messages. Esc stops it through the cancel event the
domain takes: the engine child is stopped, the run is recorded as cancelled, and every figure
already stored is kept (asking again goes on from there).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Input, Label, Log, Select, Static
from textual.worker import Worker, WorkerState

from lab.errors import LabError
from lab.tui import data
from lab.tui.data.forms import limits_text
from lab.tui.messages import RightsizeFinished, RightsizeProgress
from lab.tui.widgets.keybar import KeyBar
from lab.tui.widgets.navbar import NavBar
from lab.tui.widgets.table import LabTable

PREFER_CHOICES = ("smallest", "fastest", "quality", "cheapest")
# The form's fields after the limits: key, label, placeholder (the defaults are data.RIGHTSIZE_DEFAULTS).
OTHER_FIELDS = [("suite", "suite", "demo or a .jsonl file"), ("text", "text", "bundled text"),
                ("threads", "threads", "cores"), ("repetitions", "repetitions", "at least 2"),
                ("n_prompt", "pp tokens", "512"), ("n_gen", "tg tokens", "128")]
STAGES = ("memory", "quality", "speed", "suite")
NOW_WIDTH = 64  # a candidate's "now" cell; a 120-column screen shows it beside a ladder file's name
# "<file>.gguf: <what>" — a line about one candidate
_CANDIDATE_LINE = re.compile(r"^(?P<name>\S+\.gguf): (?P<what>.+)$")


def _field(screen: Screen[Any], value: str = "", **kwargs: Any) -> Input:
    field = Input(value, compact=True, **kwargs)
    field.cursor_blink = getattr(screen.app, "cursor_blink", True)
    return field


class RightsizeFormScreen(Screen[None]):
    """The limits of a right-size question for one model, checked before anything runs."""

    HELP = ("Every limit rightsizer rightsize takes; a blank limit is no limit. Candidates are the quant "
            "types built from the model (none: the model alone). Each goes through memory, quality, "
            "speed and the task suite, cheapest first, and stops at the first limit it fails. "
            "ctrl+r (or Enter) asks the question.")

    BINDINGS = [Binding("ctrl+r", "start", "Right-size", priority=True), Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, model: str, threads: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.threads = threads

    def compose(self) -> ComposeResult:
        yield NavBar("library", id="navbar")
        with Vertical(id="rs-form-main"):
            yield Static(f"Right-size {self.model}: the smallest, fastest, best or cheapest quant that meets "
                         "every limit below (blank: no limit)", id="rs-form-title", markup=False)
            with Grid(id="rs-form"):
                # the last question's fields, asked again of another model, else the CLI's defaults
                last = getattr(self.app, "rightsize_fields", None) or {}
                defaults = {**data.RIGHTSIZE_DEFAULTS, "threads": str(self.threads or ""), **last}
                yield Label("model", classes="field-label")
                yield _field(self, self.model, id="rs-model", classes="rs-field")
                yield Label("quant types", classes="field-label")
                yield _field(self, defaults["types"], id="rs-types", classes="rs-field",
                             placeholder="none: the model alone")
                for key, label, hint in data.LIMIT_FIELDS:
                    yield Label(label, classes="field-label")
                    yield _field(self, defaults.get(key, ""), id=f"rs-{key}", classes="rs-field rs-limit",
                                 placeholder=hint)
                yield Label("prefer", classes="field-label")
                yield Select([(p, p) for p in PREFER_CHOICES], value=defaults["prefer"], allow_blank=False,
                             compact=True, id="rs-prefer")
                for key, label, hint in OTHER_FIELDS:
                    yield Label(label, classes="field-label")
                    yield _field(self, defaults[key], id=f"rs-{key}", classes="rs-field", placeholder=hint)
            yield Static("", id="rs-form-error", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#rs-min_tg", Input).focus()

    def form(self) -> dict[str, Any]:
        """The fields as strings, keyed as ``data.build_question`` reads them."""
        values: dict[str, Any] = {key: self.query_one(f"#rs-{key}", Input).value
                                  for key in ("model", "types", *(k for k, _, _ in data.LIMIT_FIELDS),
                                              *(k for k, _, _ in OTHER_FIELDS))}
        values["prefer"] = str(self.query_one("#rs-prefer", Select).value)
        return values

    @on(Input.Submitted, ".rs-field")
    def _submitted(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        try:
            question = data.build_question(self.form())
        except LabError as exc:
            self.query_one("#rs-form-error", Static).update(f"Error: {exc}")
            return
        if getattr(self.app, "live", None) is not None and self.app.live.active:  # type: ignore[attr-defined]
            self.query_one("#rs-form-error", Static).update(
                "Error: a benchmark is running on the Run screen; wait for it or cancel it first")
            return
        if getattr(self.app, "rightsize_running", False):
            self.query_one("#rs-form-error", Static).update(
                "Error: another right-size question is still being answered; cancel it first")
            return
        self.app.rightsize_fields = {k: v for k, v in self.form().items() if k != "model"}  # type: ignore[attr-defined]
        self.app.switch_screen(RightsizeRunScreen(question))


class RightsizeRunScreen(Screen[None]):
    """A right-size question being answered: each candidate's stage as it goes, every progress
    line in the log; the verdict screen replaces this one when it is done."""

    HELP = ("The question is answered as rightsizer rightsize answers it: each candidate's stage, "
            "what was skipped and why. Esc stops it; what was measured is stored and reused when "
            "the same question is asked again.")

    BINDINGS = [Binding("escape", "cancel_or_back", "Cancel / back")]

    def __init__(self, question: Any) -> None:
        super().__init__()
        self.question = question
        self.cancel = threading.Event()
        self.running = False
        self.started = time.monotonic()
        self.candidate: str | None = None
        self.stage: str | None = None
        self.skipped: list[str] = []
        self.now: dict[str, str] = {}  # candidate -> what its row says
        self.stage_started = self.started
        self.lines: list[str] = []

    def compose(self) -> ComposeResult:
        q = self.question
        yield NavBar("library", id="navbar")
        with Vertical(id="rs-run-main"):
            yield Static(f"Right-sizing {q.model} · prefer {q.prefer} · {limits_text(q)}", id="rs-run-title",
                         markup=False)
            yield Static("Starting…", id="rs-run-now", markup=False)
            yield Static("", id="rs-run-skipped", markup=False)
            yield LabTable(id="rs-candidates", cursor_type="row", zebra_stripes=True)
            yield Log(id="rs-log", max_lines=1000, auto_scroll=True)
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one("#rs-candidates", DataTable)
        table.add_column("candidate", key="name")
        table.add_column("now", key="now")
        self._set_running(True)
        self._ask(self.question, self.cancel)
        self.set_interval(1.0, self._tick)

    def on_unmount(self) -> None:
        # however this screen goes (the app quits), no engine child outlives it
        self.cancel.set()

    def _set_running(self, running: bool, status: str = "") -> None:
        self.running = running
        self.app.rightsize_running = running  # type: ignore[attr-defined]
        self.app.rightsize_cancel = self.cancel if running else None  # type: ignore[attr-defined]
        self.app.run_status = "● right-sizing" if running else status  # type: ignore[attr-defined]

    @work(thread=True, exclusive=True, exit_on_error=False, group="rightsize", name="rightsize")
    def _ask(self, question: Any, cancel: threading.Event) -> None:
        from lab.errors import Cancelled
        from lab.rightsize import rightsize

        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            outcome = rightsize(store, question, on_progress=lambda line: self.post_message(RightsizeProgress(line)),
                                cancel=cancel)
        except Cancelled as exc:
            self.post_message(RightsizeFinished(None, str(exc), cancelled=True))
            return
        except LabError as exc:
            self.post_message(RightsizeFinished(None, str(exc), cancelled=cancel.is_set()))
            return
        finally:
            store.close()
        self.post_message(RightsizeFinished(outcome))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # a bug must not leave the screen waiting: say so, and let Esc go back
        if event.worker.name == "rightsize" and event.state == WorkerState.ERROR:
            error = event.worker.error
            self.post_message(RightsizeFinished(None, f"internal error: {type(error).__name__}: {error}"))

    # -- progress
    def on_rightsize_progress(self, message: RightsizeProgress) -> None:
        line = message.line
        self.lines.append(line)
        self.query_one("#rs-log", Log).write_line(line)
        if line.startswith("stages: "):
            skipped = line.partition("; skipped: ")[2]
            if skipped and skipped != "none":
                self.skipped.append(skipped)
        match = _CANDIDATE_LINE.match(line.strip())
        if match is None:
            self._show_now()
            return
        name, what = match["name"], match["what"]
        if what in STAGES:
            previous = self.candidate
            if previous is not None and previous != name and self.now.get(previous, "").startswith("measuring: "):
                # it went through that stage without a limit to judge there: done, waiting for the next
                self._set_row(previous, f"{self.stage} done")
            self.candidate, self.stage, self.stage_started = name, what, time.monotonic()
            now = f"measuring: {what}"
        elif what.startswith("FAIL at "):
            now = "FAIL: " + what.partition(": ")[2]
        else:  # a stage passed, borderline, skipped (and why), an error, a ladder step
            now = what
            if what.startswith("skipped"):
                self.skipped.append(f"{name} {what}")
        self._set_row(name, now)
        self._show_now()

    def _set_row(self, name: str, now: str) -> None:
        self.now[name] = now
        if len(now) > NOW_WIDTH:  # in full in the log below
            now = now[:NOW_WIDTH - 1] + "…"
        table = self.query_one("#rs-candidates", DataTable)
        if name in {k.value for k in table.rows}:
            table.update_cell(name, "now", now, update_width=True)
        else:
            table.add_row(name, now, key=name)

    def _tick(self) -> None:
        if self.running:
            self._show_now()

    def _show_now(self) -> None:
        elapsed = f"{time.monotonic() - self.started:.0f} s"
        if not self.running:
            return
        if self.cancel.is_set():
            text = f"Cancelling… figures measured so far are kept ({elapsed})"
        elif self.candidate:
            text = (f"Now: {self.candidate} · {self.stage} for {time.monotonic() - self.stage_started:.0f} s · "
                    f"{elapsed} in all (Esc cancels)")
        else:
            text = f"{self.lines[-1] if self.lines else 'Starting…'} · {elapsed} (Esc cancels)"
        self.query_one("#rs-run-now", Static).update(text)
        skipped = self.query_one("#rs-run-skipped", Static)
        skipped.display = bool(self.skipped)
        skipped.update("Skipped: " + "; ".join(self.skipped))

    # -- the end
    def on_rightsize_finished(self, message: RightsizeFinished) -> None:
        outcome = message.outcome
        self._set_running(False, "last right-size: " + ("cancelled" if message.cancelled else "FAILED" if outcome is None
                                                        else "no pick" if outcome.pick is None else "pick"))
        self.app.results_changed()  # type: ignore[attr-defined]
        self.app.rescan_library()  # type: ignore[attr-defined]  # (built quants are new files)
        self.query_one("#rs-candidates", DataTable).focus()
        if message.outcome is not None:
            from lab.tui.screens.verdict import VerdictScreen

            self.app.switch_screen(VerdictScreen(message.outcome))
            return
        now = self.query_one("#rs-run-now", Static)
        if message.cancelled:
            now.update(Text("Cancelled: figures measured so far are stored; ask again (r) to go on from there. "
                            "Esc goes back.", style="bold"))
        else:
            now.update(Text(f"Error: {message.error}. Esc goes back.", style="bold"))
            self.notify(message.error or "right-size failed", severity="error", timeout=8)
        self.query_one(KeyBar).refresh()

    def action_cancel_or_back(self) -> None:
        if self.running:
            self.cancel.set()
            self._show_now()
            return
        self.app.pop_screen()
