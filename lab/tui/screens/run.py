"""Run: configure a benchmark or a load run with this machine's defaults, start it, and watch it live.

The run itself is ``lab.bench.run_bench`` (bench mode) or ``lab.load.run_load`` (Load mode) in a
thread worker, exactly what ``rightsizer bench`` and ``rightsizer load`` call. In Load mode the
dashboard shows the level being served (active sequences, queue, running TTFT/ITL percentiles)
and each finished level as a row. Its events land in the app's ``LiveRun`` (an append per event); a 2 Hz timer folds them
and updates the widgets in place. On two cores the UI competes with the benchmark for CPU, so
the dashboard repaints only when an event changed something (a repetition, a result) and
otherwise once a second, or every two seconds while a test is being timed; nothing is rebuilt
while a run is going.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Button, Checkbox, DataTable, Input, Label, Log, Static
from textual.worker import Worker, WorkerState

from lab.errors import LabError
from lab.tui import data
from lab.tui import format as fmt
from lab.tui.live import Drained, LiveRun
from lab.tui.messages import BenchFinished
from lab.tui.screens.base import LabScreen
from lab.tui.widgets.curve import Curve
from lab.tui.widgets.gauge import Gauge
from lab.tui.widgets.line import Line
from lab.tui.widgets.table import LabTable

REFRESH_S = 0.5  # events (a repetition done, a result) show at the next tick; see LiveRun.repaint_due

# field id, label, default, width class
FIELDS_TESTS = [("n_prompt", "pp", "512"), ("n_gen", "tg", "128"), ("pg", "pg", ""),
                ("n_depth", "depth", "0"), ("repetitions", "reps", "5")]
FIELDS_PARAMS = [("threads", "threads", ""), ("n_batch", "batch", "2048"), ("n_ubatch", "ubatch", "512"),
                 ("n_gpu_layers", "GPU layers", "-1")]  # -1: all layers, as on the CLI and llama-bench

RESULT_COLUMNS = [("model", "model"), ("test", "test"), ("ts", "t/s"), ("reps", "reps"),
                  ("rss", "peak RSS"), ("est", "est. mem"), ("cpu", "CPU %"), ("ttft", "TTFT ms")]
# a load level's row: column key, title, the stored row's key, format
LOAD_COLUMNS: list[tuple[str, str, str, Any]] = [
    ("level", "users|rate", "test", None), ("requests", "requests", "load_requests", fmt.num),
    ("completed", "done", "load_completed", fmt.num), ("failed", "failed", "load_failed", fmt.num),
    ("tps", "out t/s", "output_tps", fmt.num), ("ttft", "TTFT p95", "ttft_p95_ms", lambda v: fmt.num(v, 0)),
    ("itl", "ITL p95", "itl_p95_ms", fmt.num), ("goodput", "goodput/s", "goodput_rps", lambda v: fmt.num(v, 2)),
    ("slo", "SLO %", "slo_attainment", fmt.num), ("rss", "peak RSS", "peak_rss_bytes", fmt.human_bytes),
    ("kv", "KV", "kv_bytes", fmt.human_bytes),
]


def _ms(value: Any) -> str:
    return fmt.NA if value is None else f"{value:.0f}"


class RunScreen(LabScreen):
    MODE = "run"
    HELP = ("Fields take comma lists for sweeps, as on the CLI (pp 128,512 runs both). pg takes "
            "P,N pairs separated by ';'. ctrl+o switches to Load mode (rightsizer load): users or "
            "rate levels, seconds per level, an objective (SLO TTFT, ITL p95, e2e in ms) and find max. "
            "Every figure is stored as it arrives; a cancelled run keeps its finished tests and levels. "
            "Leaving this screen does not stop the run.")

    BINDINGS = [
        Binding("ctrl+r", "start", "Start run", priority=True),
        Binding("c", "cancel", "Cancel run"),
        Binding("ctrl+o", "toggle_mode", "Bench/Load", priority=True),
        Binding("l", "toggle_log", "Log"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, str] = {}  # text last written per widget id: skip same-text updates
        self._threads_touched = False
        self._columns: str | None = None  # which columns the results table has: "bench" or "load"

    @property
    def live(self) -> LiveRun:
        return self.app.live  # type: ignore[attr-defined]

    # -- layout
    def compose_body(self) -> Iterable[Widget]:
        with Vertical(id="run-form"):
            with Horizontal(classes="form-row"):
                yield Label("model", classes="field-label")
                yield self.make_input(placeholder="demo, a library name or a .gguf path (comma list)",
                                      id="f-models", classes="field wide")
                yield Button("Start ^R", id="start", compact=True, variant="primary")
                yield Checkbox("load: off", False, id="f-load", compact=True)
                yield Button("Cancel c", id="cancel", compact=True, variant="error", disabled=True)
            with Horizontal(classes="form-row extra bench-row"):
                for key, label, default in FIELDS_TESTS:
                    yield Label(label, classes="field-label")
                    yield self.make_input(default, id=f"f-{key}", classes="field", restrict=r"[0-9,; ]*")
                yield Checkbox("chat: on", True, id="f-chat", compact=True)
            with Horizontal(classes="form-row extra load-row"):
                for key, label, default, hint in data.LOAD_FIELDS:
                    yield Label(label, classes="field-label")
                    yield self.make_input(default, id=f"f-{key}", classes="field load-field", placeholder=hint,
                                          restrict=r"[0-9.,; ]*" if key == "rates" else r"[0-9, ]*")
            with Horizontal(classes="form-row extra load-row"):
                for key, label, default, hint in data.SLO_FIELDS:
                    yield Label(label, classes="field-label")
                    yield self.make_input(default, id=f"f-{key}", classes="field load-field", placeholder=hint,
                                          restrict=r"[0-9.]*")
                yield Checkbox("find max: off", False, id="f-find_max", compact=True)
            with Horizontal(classes="form-row extra"):
                for key, label, default in FIELDS_PARAMS:
                    gpu = key == "n_gpu_layers"
                    only = " gpu-only" if gpu else " bench-only" if key in ("n_batch", "n_ubatch") else ""
                    yield Label(label, classes="field-label" + only)
                    yield self.make_input(default, id=f"f-{key}", classes="field" + only,
                                          restrict=r"[-0-9, ]*" if gpu else r"[0-9, ]*",
                                          placeholder={"threads": "cores", "n_gpu_layers": "-1 all"}.get(key, ""))
        with Horizontal(id="run-dash"):
            with Vertical(id="run-left"):
                yield Line("Ready: ctrl+r starts the run.", id="run-title")
                yield Line("", id="run-speed")
                yield Gauge("test", id="g-test", label_width=7, text_width=16)
                yield Gauge("overall", id="g-overall", label_width=7, text_width=16)
                yield Line("", id="run-reps")
                yield Static("", id="run-error", markup=False)
            with Vertical(id="run-right"):
                yield Curve("RSS n/a", id="c-rss")
                yield Curve("CPU n/a", id="c-cpu")
                yield Line("GPU n/a", id="run-gpu")
        with Horizontal(id="run-bottom"):
            yield LabTable(id="run-results", cursor_type="row", zebra_stripes=True)
            yield Log(id="run-log", max_lines=500, auto_scroll=True)

    def on_mount(self) -> None:
        self._set_columns(self.live.kind if self.live.active else "bench")
        self._timer = self.set_interval(REFRESH_S, self._drain, pause=True)
        self.watch(self.app, "machine", self._machine_changed, init=True)
        self.watch(self.app, "library", self._library_changed, init=True)
        self.query_one("#run-log", Log).write_line("llama.cpp's log appears here during a run.")
        if self.live.active:
            self.query_one("#f-load", Checkbox).value = self.live.kind == "load"
            self._set_running(True)
        else:
            self.query_one("#start", Button).focus()

    def _machine_changed(self, machine: data.MachineContext | None) -> None:
        for widget in self.query(".gpu-only"):
            widget.display = bool(machine is not None and machine.gpu_offload)
        threads = self.query_one("#f-threads", Input)
        if machine is not None and not self._threads_touched and not threads.value:
            threads.value = str(machine.physical_cores)
        if machine is not None and not self.live.active and not self.live.last_sample:
            self._write("run-gpu", self._gpu_text({}))

    def _library_changed(self, entries: list[data.LibraryEntry] | None) -> None:
        field = self.query_one("#f-models", Input)
        names = ["demo"] if any(e.model.source == "demo" for e in entries or []) else []
        names += [e.model.name for e in entries or [] if e.model.source != "demo"]
        field.suggester = SuggestFromList(names, case_sensitive=False)
        if not field.value and entries:
            field.value = entries[0].bench_arg if not names or names[0] != "demo" else "demo"

    def prefill(self, model: str) -> None:
        """Called by the Library's benchmark action: put the model in and focus Start."""
        self.query_one("#f-models", Input).value = model
        if not self.live.active:
            self.query_one("#start", Button).focus()

    @on(Checkbox.Changed, "#f-chat")
    def _chat_toggled(self, event: Checkbox.Changed) -> None:
        # The box itself shows its state by colour only; the words keep it readable in NO_COLOR.
        event.checkbox.label = f"chat: {'on' if event.value else 'off'}"

    @on(Checkbox.Changed, "#f-find_max")
    def _find_max_toggled(self, event: Checkbox.Changed) -> None:
        event.checkbox.label = f"find max: {'on' if event.value else 'off'}"

    @on(Checkbox.Changed, "#f-load")
    def _mode_toggled(self, event: Checkbox.Changed) -> None:
        event.checkbox.label = f"load: {'on' if event.value else 'off'}"
        self.set_class(event.value, "-load")
        if not self.live.active:
            self._set_columns("load" if event.value else "bench")
            self._write("run-title", f"Ready: ctrl+r starts the {'load run' if event.value else 'run'}.")

    @property
    def load_mode(self) -> bool:
        return self.query_one("#f-load", Checkbox).value

    def action_toggle_mode(self) -> None:
        if self.live.active:
            self.notify("A run is going; switch modes once it ends.", severity="warning")
            return
        box = self.query_one("#f-load", Checkbox)
        box.value = not box.value

    def _set_columns(self, kind: str) -> None:
        if self._columns == kind:
            return
        table = self.query_one("#run-results", DataTable)
        table.clear(columns=True)
        for key, title in (RESULT_COLUMNS if kind == "bench" else [(c[0], c[1]) for c in LOAD_COLUMNS]):
            table.add_column(title, key=key)
        self._columns = kind

    @on(Input.Changed, "#f-threads")
    def _threads_edited(self, event: Input.Changed) -> None:
        if self.query_one("#f-threads", Input).has_focus:
            self._threads_touched = True

    # -- starting and stopping
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start":
            return not self.live.active
        if action == "cancel":
            return self.live.active and self.live.status != "cancelling"
        return True

    def form(self) -> dict[str, Any]:
        values: dict[str, Any] = {"models": self.query_one("#f-models", Input).value}
        for key in [f[0] for f in FIELDS_TESTS + FIELDS_PARAMS + data.LOAD_FIELDS + data.SLO_FIELDS]:
            values[key] = self.query_one(f"#f-{key}", Input).value
        values["chat"] = self.query_one("#f-chat", Checkbox).value
        values["find_max"] = self.query_one("#f-find_max", Checkbox).value
        # Without offload the field is hidden and keeps its default, -1, as the CLI's -ngl does:
        # the same run stores the same config from either face.
        return values

    @on(Button.Pressed, "#start")
    @on(Input.Submitted, ".field")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_start(self) -> None:
        if self.live.active:
            self.notify("A run is already going; cancel it first (c).", severity="warning")
            return
        if getattr(self.app, "rightsize_running", False):  # two runs at once would slow both figures
            self.notify("A right-size question is being answered; wait for its verdict or cancel it (Esc there).",
                        severity="warning")
            return
        load = self.load_mode
        try:
            options = data.build_load_options(self.form()) if load else data.build_options(self.form())
        except LabError as exc:
            self._show_error(str(exc))
            return
        self.app.settle_heap()  # type: ignore[attr-defined]
        if load:
            levels = 0 if options.find_max else len(options.users or options.rates)
            self.live.begin("load", levels, options.duration_s)
        else:
            self.live.begin()
        self.app.bench_cancel = threading.Event()  # type: ignore[attr-defined]
        self._set_columns("load" if load else "bench")
        self.query_one("#run-results", DataTable).clear()
        log = self.query_one("#run-log", Log)
        log.clear()
        self._write("run-error", "")
        self._write("run-title", f"Planning: {options.model if load else ', '.join(options.models)} …")
        self._set_running(True)
        self._bench(options, self.app.bench_cancel, load)  # type: ignore[attr-defined]

    def action_cancel(self) -> None:
        cancel = getattr(self.app, "bench_cancel", None)
        if not self.live.active or cancel is None:
            return
        cancel.set()
        self.live.status = "cancelling"
        kept = "levels" if self.live.kind == "load" else "tests"
        self._write("run-title", f"Cancelling… finished {kept} are kept.")
        self.app.run_status = "cancelling…"  # type: ignore[attr-defined]
        self.refresh_bindings()

    def action_toggle_log(self) -> None:
        log = self.query_one("#run-log", Log)
        log.display = not log.display

    def _set_running(self, running: bool) -> None:
        # While a run goes, the form folds to its first line: the dashboard needs the rows.
        self.set_class(running, "-running")
        self.query_one("#run-form").disabled = running
        cancel = self.query_one("#cancel", Button)
        cancel.disabled = not running
        self.query_one("#start", Button).disabled = running
        if running:
            self._timer.resume()
            self.query_one("#run-results", DataTable).focus()
        else:
            self._timer.pause()
        self.refresh_bindings()

    @work(thread=True, exclusive=True, exit_on_error=False, group="bench", name="bench")
    def _bench(self, options: Any, cancel: threading.Event, load: bool = False) -> None:
        """``run_bench`` (or ``run_load`` for a load run) on this thread, with its own store."""
        from lab.errors import Cancelled

        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            if load:
                from lab.load import run_load

                outcome = run_load(options, store, on_event=self.live.post, cancel=cancel)
            else:
                from lab.bench import plan, run_bench

                outcome = run_bench(options, store, on_event=self.live.post, cancel=cancel, plans=plan(options))
        except Cancelled as exc:  # recorded as cancelled, the finished tests or levels kept
            from lab.load import LoadOutcome

            outcome = LoadOutcome(status="cancelled", error=str(exc))
        except LabError as exc:
            self.post_message(BenchFinished(None, str(exc)))
            return
        finally:
            store.close()
        self.post_message(BenchFinished(outcome))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # A bug in the bench path must not take the app down: show it, keep going.
        if event.worker.name == "bench" and event.state == WorkerState.ERROR:
            error = event.worker.error
            self.post_message(BenchFinished(None, f"internal error: {type(error).__name__}: {error}"))

    def on_bench_finished(self, message: BenchFinished) -> None:
        self._drain()
        live = self.live
        outcome = message.outcome
        if outcome is None:
            live.status = "failed"
            live.error = message.error
        else:
            live.status = outcome.status
            live.error = outcome.error
        self._set_running(False)
        self._render_samples()
        self._render_progress()
        n = len(live.results)
        if live.kind == "load" and live.status in ("ok", "cancelled"):
            self._write("run-title", self._load_summary(n, outcome))
            self.notify("Load run finished: levels stored." if live.status == "ok" else
                        "Load run cancelled; finished levels are stored.",
                        severity="information" if live.status == "ok" else "warning")
        elif live.status == "ok":
            self._write("run-title", f"Done: {n} result{'s' if n != 1 else ''} stored.")
            self.notify(f"Run finished: {n} results stored.")
        elif live.status == "cancelled":
            self._write("run-title", f"Cancelled: {n} finished test{'s' if n != 1 else ''} kept.")
            self.notify("Run cancelled; finished tests are stored.", severity="warning")
        else:
            self._write("run-title", f"Failed after {n} result{'s' if n != 1 else ''}.")
            self._show_error(live.error or "the run failed")
        self.app.run_status = {"ok": "last run: ok", "cancelled": "last run: cancelled"}.get(  # type: ignore[attr-defined]
            live.status, "last run: FAILED")
        if n:
            self.app.results_changed()  # type: ignore[attr-defined]
        self.query_one("#start", Button).focus()

    def _load_summary(self, n: int, outcome: Any) -> str:
        levels = f"{n} level{'s' if n != 1 else ''}"
        if self.live.status == "cancelled":
            return f"Cancelled: {levels} kept."
        text = f"Done: {levels} stored."
        if getattr(outcome, "max_level", None) is not None:
            what = "users" if self.live.results and self.live.results[0].get("load_users") is not None else "requests/s"
            best = outcome.max_level
            text += (f" Max {what} at the objective: {best:g}" if best else
                     f" Max {what} at the objective: none (the smallest level fails it)")
            if outcome.max_kv_bytes:
                text += f" (KV cache {fmt.human_bytes(outcome.max_kv_bytes)})"
            text += "."
        return text

    def _show_error(self, text: str) -> None:
        self._write("run-error", f"Error: {text}")
        self.notify(text, severity="error", timeout=8)

    # -- the 2 Hz update
    def _drain(self) -> None:
        self._apply(self.live.drain())

    def _apply(self, drained: Drained) -> None:
        live = self.live
        paint = live.repaint_due(drained, time.monotonic())
        if drained.log_lines:
            log = self.query_one("#run-log", Log)
            if drained.dropped_log_lines:
                log.write_line(f"… {drained.dropped_log_lines} lines skipped")
            log.write_lines(drained.log_lines)
        for row in drained.results:
            self._add_result(row)
        for end in drained.run_ends:
            if end.get("status") == "failed":
                self._show_error(f"{self.live.model_filename}: {end.get('error')}")
        if paint:
            if live.samples_waiting:
                live.samples_waiting = False
                self._render_samples()
            self._render_progress()

    def _write(self, widget_id: str, text: str) -> None:
        if self._last.get(widget_id) != text:
            self._last[widget_id] = text
            self.query_one(f"#{widget_id}").update(text)  # type: ignore[attr-defined]

    def _render_progress(self) -> None:
        live = self.live
        if live.status == "planning":
            return
        if live.kind == "load":
            self._render_load()
            return
        if live.model_filename:
            parts = [live.model_filename, f"model {live.run_index + 1}/{live.n_runs}"]
            if live.test_name:
                parts.append(f"test {min(live.n_tests, (live.test_index or 0) + 1)}/{live.n_tests} {live.test_name}")
            elif live.active:
                parts.append("loading…" if live.load_ms is None else f"loaded in {live.load_ms:.0f} ms")
            if live.active:
                self._write("run-title", " · ".join(parts))
        if live.test_name:
            current = live.current_ts
            unit = "t/s"
            if live.chat_tokens is not None and live.test_name == "chat":
                extra = f"  prompt {live.reps_done + 1}: {live.chat_tokens} tokens"
            else:
                extra = ""
            mean = f"  mean {fmt.ts(live.mean_ts)}" if len(live.rep_ts) > 1 else ""
            self._write("run-speed", f"{live.test_name}  {fmt.ts(current)} {unit} (last rep){mean}{extra}")
            reps = "  ".join(f"{v:.1f}" for v in live.rep_ts[-8:])
            self._write("run-reps", f"reps  {reps}" if reps else "reps  warming up…")
        test_gauge = self.query_one("#g-test", Gauge)
        test_gauge.set(live.test_fraction() if live.test_name else None,
                       f"{live.reps_done}/{live.test_reps} ETA {fmt.seconds(live.test_eta())}"
                       if live.test_name else "n/a", label="test")
        overall = self.query_one("#g-overall", Gauge)
        overall.set(live.overall_fraction() if live.model_filename else None,
                    f"{live.overall_fraction() * 100:.0f}% ETA {fmt.seconds(live.overall_eta())}"
                    if live.model_filename else "n/a")
        if live.active:
            status = f"● {live.test_name or 'starting'} {live.reps_done}/{live.test_reps or '?'}"
            if live.current_ts is not None:
                status += f" {live.current_ts:.0f} t/s"
            if live.status == "cancelling":
                status = "cancelling…"
            self.app.run_status = status  # type: ignore[attr-defined]

    def _render_load(self) -> None:
        """The level being served: active sequences, queue, requests so far and the running
        TTFT/ITL percentiles of those finished (the child reports them four times a second)."""
        live, p = self.live, self.live.load
        n_done = len(live.results)
        of = f"/{live.n_levels}" if live.n_levels else ""
        if live.active and live.model_filename:
            where = f"level {n_done + 1}{of} {live.level}" if live.test_name else (
                "loading…" if not n_done else f"{n_done}{of} levels done")
            self._write("run-title", f"{live.model_filename} · load · {where}")
        if p:
            self._write("run-speed", f"{live.level}  active {p.get('active', 0)}  queue {p.get('queue', 0)}  "
                                     f"sent {p.get('sent', 0)}  done {p.get('completed', 0)}  failed {p.get('failed', 0)}")
            self._write("run-reps", f"TTFT p50/p95 {_ms(p.get('ttft_p50_ms'))}/{_ms(p.get('ttft_p95_ms'))} ms  "
                                    f"ITL p50/p95 {fmt.num(p.get('itl_p50_ms'))}/{fmt.num(p.get('itl_p95_ms'))} ms")
        elif live.test_name:
            self._write("run-speed", f"{live.level}  warming up…")
            self._write("run-reps", "TTFT and ITL: once requests finish")
        level = self.query_one("#g-test", Gauge)
        elapsed = p.get("elapsed_s") if live.test_name else None
        level.set(live.test_fraction() if live.test_name else None,
                  f"{elapsed or 0:.0f}/{live.duration_s:g} s" if live.test_name and live.duration_s else "n/a",
                  label="level")
        overall = self.query_one("#g-overall", Gauge)
        overall.set(live.overall_fraction() if live.n_levels else None,
                    f"{n_done}{of} levels" + (f" ETA {fmt.seconds(live.overall_eta())}" if live.n_levels else ""))
        if live.active:
            status = f"● load {live.level or 'starting'}"
            if p.get("active") is not None:
                status += f" active {p['active']} queue {p['queue']}"
            if live.status == "cancelling":
                status = "cancelling…"
            self.app.run_status = status  # type: ignore[attr-defined]

    def _render_samples(self) -> None:
        live = self.live
        s = live.last_sample
        self.query_one("#c-rss", Curve).set(
            list(live.rss), f"RSS {fmt.human_bytes(s.get('rss_bytes'))} (peak {fmt.human_bytes(live.peak_rss)})")
        self.query_one("#c-cpu", Curve).set(
            list(live.cpu), f"CPU {fmt.percent(s.get('cpu_percent'))} (100% = one core)")
        self._write("run-gpu", self._gpu_text(s))

    def _gpu_text(self, s: dict[str, Any]) -> str:
        machine = self.app.machine  # type: ignore[attr-defined]
        if not self.live.gpu_seen:
            if machine is not None and not machine.fingerprint.get("gpu_count"):
                return "GPU n/a (no NVIDIA GPU visible)"
            return "GPU n/a"
        return (f"GPU mem {fmt.human_bytes(s.get('gpu_mem_used_bytes'))} (this run "
                f"{fmt.human_bytes(s.get('gpu_proc_mem_bytes'))}) · util {fmt.percent(s.get('gpu_util'))} · "
                f"{fmt.num(s.get('gpu_power_w'))} W · {fmt.num(s.get('gpu_temp_c'), 0)} °C")

    def _add_result(self, row: dict[str, Any]) -> None:
        table = self.query_one("#run-results", DataTable)
        right = lambda v: Text(v, justify="right")  # noqa: E731
        key = row.get("id") or f"r{table.row_count}"
        if self._columns == "load":
            users = row.get("load_users")
            level = (f"{users} user{'s' if users != 1 else ''}" if users is not None else
                     f"{fmt.num(row.get('load_rate'))}/s" if row.get("load_rate") is not None else row.get("test") or fmt.NA)
            table.add_row(level, *[right(show(row.get(field))) for _, _, field, show in LOAD_COLUMNS[1:]], key=key)
            table.move_cursor(row=table.row_count - 1)
            return
        table.add_row(
            row.get("model_type") or row.get("model_filename") or fmt.NA, row.get("test") or fmt.NA,
            right(fmt.ts_pm(row)), right(fmt.num(row.get("repetitions"))),
            right(fmt.human_bytes(row.get("peak_rss_bytes"))), right(fmt.human_bytes(row.get("est_memory_bytes"))),
            right(fmt.num(row.get("mean_cpu_percent"), 0)), right(fmt.num(row.get("ttft_ms"))),
            key=key,
        )
        table.move_cursor(row=table.row_count - 1)
