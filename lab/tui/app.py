"""The Rightsizer app: six screens (modes), a command palette that reaches every action, help.

``RightsizerApp`` is also the factory the tests and the screenshot script use: everything that
would make a screen differ between runs (the library scan, the machine fingerprint, the live
machine readings, the clock) can be injected.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import var
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from lab.tui import data
from lab.tui.live import LiveRun
from lab.tui.messages import LibraryLoaded, MachineDetected
from lab.tui.screens.library import LibraryScreen

# Each mode's screen class. Only the first screen is imported before the first paint; the
# others (and the widgets they use) are imported and built, hidden, once the library is on
# screen: ~0.1 s less to wait at launch.
SCREEN_CLASSES = {
    "library": "lab.tui.screens.library:LibraryScreen", "run": "lab.tui.screens.run:RunScreen",
    "results": "lab.tui.screens.results:ResultsScreen", "machine": "lab.tui.screens.machine:MachineScreen",
    "hub": "lab.tui.screens.hub:HubScreen", "machines": "lab.tui.screens.machines:MachinesScreen",
}


def screen_class(mode: str) -> type[Screen[Any]]:
    """The class of a mode's screen, imported on first use."""
    module, _, name = SCREEN_CLASSES[mode].partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _screen_factory(mode: str) -> Callable[[], Screen[Any]]:
    return lambda: screen_class(mode)()

# Every action the palette offers: title, help, the screen (mode) it acts on, the action.
COMMANDS: list[tuple[str, str, str | None, str | None]] = [
    ("Library", "Local models, memory fit and last speeds (1)", "library", None),
    ("Run", "Configure and watch a benchmark (2)", "run", None),
    ("Load mode", "Switch the Run screen between a benchmark and a load run: users, rate, objective (ctrl+o)",
     "run", "toggle_mode"),
    ("Results", "Every stored result: filter, sort, compare (3)", "results", None),
    ("Machine", "Fingerprint and live CPU, memory and GPU gauges (4)", "machine", None),
    ("Hub", "Search and download GGUF models from the Hugging Face Hub (5)", "hub", None),
    ("Machines", "One model's test on every machine side by side, with each fingerprint (6)", "machines", None),
    ("Benchmark model", "Open the Run screen with the highlighted model (b)", "library", "benchmark"),
    ("Inspect model", "Every GGUF metadata key of the highlighted model (i)", "library", "inspect"),
    ("Delete model", "Delete the highlighted model's file, after confirmation (d)", "library", "delete"),
    ("Larger context", "Estimate memory at the next larger context (+)", "library", "context(1)"),
    ("Smaller context", "Estimate memory at the next smaller context (-)", "library", "context(-1)"),
    ("Rescan library", "Look for new or removed model files (R)", "library", "rescan"),
    ("Model across machines", "The highlighted model's tg128 on every machine that measured it (M)", "library",
     "machines"),
    ("Ladder view", "Every quant of the highlighted model's base: size, speed, KLD, accuracy (L)", "library", "ladder"),
    ("Right-size model", "Limits for the highlighted model, then the quant that meets them: measured as needed, "
     "with a verdict (r)", "library", "rightsize"),
    ("Start run", "Start the benchmark configured on the Run screen (ctrl+r)", "run", "start"),
    ("Cancel run", "Stop the running benchmark; finished tests are kept (c)", "run", "cancel"),
    ("Toggle log", "Show or hide llama.cpp's log on the Run screen (l)", "run", "toggle_log"),
    ("Filter results", "Focus the results filter (/)", "results", "focus_filter"),
    ("Sort results", "Sort by the next column (s)", "results", "sort"),
    ("Reverse sort", "Reverse the sort order (S)", "results", "reverse"),
    ("Select result", "Add or remove the highlighted result from the selection (space)", "results", "toggle_select"),
    ("Clear selection", "Unselect every result (x)", "results", "clear_selection"),
    ("Compare selected", "Selected results side by side with the difference in percent (c)", "results", "compare"),
    ("Chart results", "t/s per model and quant, and speed against file size (g)", "results", "chart"),
    ("Open run", "Config, samples and machine of the highlighted result's run (o)", "results", "open_run"),
    ("Filter by machine", "Show the next machine's results only; after the last, every machine (m)", "results",
     "next_machine"),
    ("Group by machine", "Keep each machine's results together under a header row (G)", "results",
     "group_machines"),
    ("Compare across machines", "The highlighted result's model and test on every machine (M)", "results",
     "machines"),
    ("Next page", "The next 200 results (n)", "results", "page(1)"),
    ("Previous page", "The previous 200 results (p)", "results", "page(-1)"),
    ("Pick model", "Choose the model compared across machines (m)", "machines", "pick_model"),
    ("Pick test", "Choose the test compared across machines (t)", "machines", "pick_test"),
    ("Same configuration", "Compare every machine at one configuration, or each at its best (a)", "machines",
     "same_config"),
    ("Search the Hub", "Focus the Hub search box; empty lists the Suggested models (/)", "hub", "focus_search"),
    ("Open repo", "The highlighted repo's quant files with size, memory and fit (o)", "hub", "open"),
    ("Download model", "Queue the highlighted file, or the repo's default quant (d)", "hub", "download"),
    ("Cancel download", "Stop the highlighted download; the partial is kept to resume (c)", "hub", "cancel"),
    ("Help", "Every key of every screen (?)", None, "app.help"),
]


class RightsizerApp(App[None]):
    """The terminal lab. Arguments other than ``db_path`` exist for tests and screenshots."""

    CSS_PATH = "lab.tcss"
    TITLE = "Rightsizer"
    MODES = {"library": LibraryScreen, **{mode: _screen_factory(mode) for mode in SCREEN_CLASSES if mode != "library"}}
    DEFAULT_MODE = "library"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        Binding("1", "switch_mode('library')", "Library", show=False),
        Binding("2", "switch_mode('run')", "Run", show=False),
        Binding("3", "switch_mode('results')", "Results", show=False),
        Binding("4", "switch_mode('machine')", "Machine", show=False),
        Binding("5", "switch_mode('hub')", "Hub", show=False),
        Binding("6", "switch_mode('machines')", "Machines", show=False),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    machine: var[data.MachineContext | None] = var(None)
    library: var[list[data.LibraryEntry] | None] = var(None, always_update=True)
    run_status = var("")
    results_version = var(0)
    screens_built = var(False)  # every mode's screen exists, laid out, shown or not

    def __init__(self, db_path: str | Path, *, models: list[Any] | None = None,
                 machine: data.MachineContext | None = None, probe: Any | None = None,
                 memory_available: int | None = None, clock: Callable[[], float] | None = None,
                 poll_interval: float = 1.0, context: int | None = None, cursor_blink: bool = True) -> None:
        super().__init__()
        self.db_path = Path(db_path)
        self._models = models
        self._injected_machine = machine
        self.probe = probe if probe is not None else data.SystemProbe()
        self._memory_available = memory_available
        self.live = LiveRun(clock or time.monotonic)
        self.bench_cancel: threading.Event | None = None
        self.rightsize_fields: dict[str, str] = {}  # the last right-size form, offered again
        self.rightsize_running = False  # a right-size question is being answered (one run at a time)
        self.rightsize_cancel: threading.Event | None = None  # set: the question stops, its figures kept
        self.poll_interval = poll_interval
        self.cursor_blink = cursor_blink
        self.default_context = context or self._settings_context()

    @staticmethod
    def _settings_context() -> int:
        from lab.config import ConfigError, Settings

        try:
            return Settings.load().context
        except ConfigError:
            return 4096

    # -- shared state
    def open_store(self) -> Any:
        """A Store for the calling thread (SQLite connections are not shared across threads)."""
        from lab.store import Store

        return Store(self.db_path)

    def memory_available(self) -> int | None:
        if self._memory_available is not None:
            return self._memory_available
        return self.probe.memory_available()

    def on_mount(self) -> None:
        if self._injected_machine is not None:
            self.machine = self._injected_machine
        # After the first paint: these workers import llama.cpp and parse headers, and would
        # hold the GIL while the first screen is being drawn.
        self.call_after_refresh(self._start_loading)

    def _start_loading(self) -> None:
        if self._injected_machine is None:
            self._detect_machine()
        self.rescan_library()

    @work(exclusive=True, exit_on_error=False, group="screens")
    async def _build_screens(self) -> None:
        """Build every other screen, hidden, while the user reads the first, then settle the heap.

        A screen's first visit would otherwise import, compose, mount, style and lay it out:
        measured in tmux during tg on the demo model, 0.56 to 0.85 s from the key to the screen
        on the terminal; built ahead, 0.10 to 0.14 s (a later visit: 0.08 to 0.11 s). One
        screen at a time, each imported on a thread, so that a key typed meanwhile waits for
        one mount at most."""
        for mode in SCREEN_CLASSES:
            cls = await asyncio.to_thread(screen_class, mode)
            if not self.is_running:  # the app is closing its screens
                return
            if mode in self._screen_stacks:  # shown already
                continue
            # what switch_mode does for a mode it shows the first time, without showing it
            screen, mounted = self._get_screen(cls())
            self._screen_stacks[mode] = [screen]
            self._load_screen_css(screen)
            await mounted
            # laid out twice: the second time its widgets have taken focus (a focused table
            # draws differently)
            for pause in (0.0, 0.1):
                await asyncio.sleep(pause)
                if not self.is_running:
                    return
                screen.lay_out_hidden()  # type: ignore[attr-defined]
        self.settle_heap()
        self.screens_built = True

    @work(thread=True, exclusive=True, exit_on_error=False, group="machine")
    def _detect_machine(self) -> None:
        self.post_message(MachineDetected(data.detect_machine()))

    def on_machine_detected(self, message: MachineDetected) -> None:
        self.machine = message.machine

    def rescan_library(self) -> None:
        self._scan_library(self._models)

    @work(thread=True, exclusive=True, exit_on_error=False, group="library")
    def _scan_library(self, models: list[Any] | None) -> None:
        store = self.open_store()
        try:
            entries = data.load_library(store, models)
        finally:
            store.close()
        self.post_message(LibraryLoaded(entries))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Workers run with exit_on_error=False so that a failure never takes the app down; it
        # must not pass silently either. (The Run screen explains its own failures.)
        if event.state == WorkerState.ERROR and event.worker.name != "bench":
            error = event.worker.error
            self.notify(f"{event.worker.name or 'worker'} failed: {type(error).__name__}: {error}",
                        severity="error", timeout=10)

    def on_library_loaded(self, message: LibraryLoaded) -> None:
        first = self.library is None
        self.library = message.entries
        if first:
            self.call_after_refresh(self._build_screens)

    @staticmethod
    def settle_heap() -> None:
        """Collect garbage once, then exempt every object alive now from later collections.

        The app's heap (Textual, llama.cpp's bindings, numpy, huggingface_hub) is a few hundred
        thousand objects; a full collection walks them all and stalls the UI for ~150 ms, over
        300 ms while a benchmark holds both cores: a key press missed its 100 ms. Called once the
        startup imports are done and again when a run starts, so collections during a run only
        walk what was made since (cheap: the frozen objects are not walked again).
        """
        gc.collect()
        gc.freeze()

    def results_changed(self) -> None:
        """New results were stored: screens showing results reload when next shown."""
        self.results_version += 1

    def open_machines(self, model_id: str, test: str | None = None) -> None:
        """The Results' and Library's M: the Machines comparison of this model (and test)."""
        def show() -> None:
            if isinstance(self.screen, screen_class("machines")):
                self.screen.show(model_id, test)

        self.switch_mode("machines")
        self.call_after_refresh(show)

    def open_run_with(self, model: str) -> None:
        """The Library's benchmark action: the Run screen with this model filled in."""
        def prefill() -> None:
            if isinstance(self.screen, screen_class("run")):
                self.screen.prefill(model)

        self.switch_mode("run")
        self.call_after_refresh(prefill)

    # -- palette and help
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for title, help_text, mode, action in COMMANDS:
            yield SystemCommand(title, help_text, self._command(mode, action))
        yield from super().get_system_commands(screen)

    def _command(self, mode: str | None, action: str | None) -> Callable[[], Any]:
        async def run() -> None:
            if mode is not None and self.current_mode != mode:
                await self.switch_mode(mode)
            if action is not None:
                await self.run_action(action, self.screen)
        return run

    def help_sections(self) -> list[tuple[str, str, list[tuple[str, str]]]]:
        def keys(bindings: Iterable[Any]) -> list[tuple[str, str]]:
            out = []
            for b in bindings:
                b = b if isinstance(b, Binding) else Binding(*b)
                out.append((b.key_display or b.key.replace(",", " / "), b.description or b.action))
            return out

        general = [("1 2 3 4 5 6", "Library, Run, Results, Machine, Hub, Machines"), ("ctrl+p", "command palette: every action by name"),
                   ("?", "this help"), ("q / ctrl+q", "quit (asks first while a run is going)"),
                   ("tab / shift+tab", "move between fields"), ("Esc", "back / close")]
        sections = [("Everywhere", "Figures this machine cannot give are shown as n/a, never as 0.", general)]
        for cls in map(screen_class, SCREEN_CLASSES):
            sections.append((cls.MODE.capitalize(), cls.HELP, keys(cls.BINDINGS)))
        from lab.tui.screens.ladder import LadderScreen

        sections.append(("Ladder (L in the Library)", LadderScreen.HELP, keys(LadderScreen.BINDINGS)))
        from lab.tui.screens.rightsize import RightsizeFormScreen, RightsizeRunScreen
        from lab.tui.screens.verdict import VerdictScreen

        sections.append(("Right-size (r in the Library)", RightsizeFormScreen.HELP,
                         keys(RightsizeFormScreen.BINDINGS)))
        sections.append(("Right-size: progress", RightsizeRunScreen.HELP, keys(RightsizeRunScreen.BINDINGS)))
        sections.append(("Verdict", VerdictScreen.HELP, keys(VerdictScreen.BINDINGS)))
        return sections

    def action_help(self) -> None:
        from lab.tui.screens.dialogs import HelpScreen

        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.help_sections()))

    # -- leaving
    async def action_quit(self) -> None:
        if not self.live.active and not self.rightsize_running:
            self.exit()
            return
        from lab.tui.screens.dialogs import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self.stop_run()
                self.exit()

        if self.live.active:
            question, yes = "A benchmark is running. Cancel it and quit? Finished tests are kept.", "Cancel run and quit"
        else:
            question = "A right-size question is being answered. Stop it and quit? Figures measured so far are kept."
            yes = "Stop and quit"
        self.push_screen(ConfirmScreen(question, yes=yes, no="Keep running"), answered)

    def stop_run(self) -> None:
        """Ask the bench thread and the right-size question to stop their engine children (they
        record their runs as cancelled)."""
        if self.bench_cancel is not None:
            self.bench_cancel.set()
        if self.rightsize_cancel is not None:
            self.rightsize_cancel.set()

    def on_unmount(self) -> None:
        # However the app ends, no engine child outlives it.
        self.stop_run()
