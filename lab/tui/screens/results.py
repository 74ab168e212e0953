"""Results: every stored result across runs and machines, filtered, sorted and paged in SQLite.

The table holds one page (200 rows); the store does the filtering, sorting and paging, so the
screen answers at once at 100k stored results. Selections survive paging; ``c`` compares them.
``m`` steps the machine filter through the hosts, ``G`` groups the rows by host (a header row
per host, still paged in SQLite) and ``M`` opens the Machines comparison of the highlighted row.
"""

from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static

from lab.errors import LabError
from lab.ids import short_id
from lab.tui import data
from lab.tui import format as fmt
from lab.tui.messages import ResultsFailed, ResultsPageLoaded
from lab.tui.screens.base import LabScreen
from lab.tui.widgets.table import LabTable

PAGE_SIZE = 200
RELOAD_DEBOUNCE_S = 0.08

# column key, title, the store's order column, right-aligned
COLUMNS: list[tuple[str, str, str | None, bool]] = [
    ("sel", " ", None, False),
    ("time", "time (UTC)", "test_time", False),
    ("machine", "machine", "hostname", False),
    ("model", "model file", "model_filename", False),
    ("quant", "quant", "file_type", False),
    ("test", "test", "test", False),
    ("ts", "t/s", "avg_ts", True),
    ("rss", "peak RSS", "peak_rss_bytes", True),
    ("est", "est. mem", "est_memory_bytes", True),
    ("threads", "thr", "n_threads", True),
    ("ngl", "ngl", "n_gpu_layers", True),
    # the model's newest figures, joined per page (not sortable: they are not results columns)
    ("kld", "KLD", None, True),
    ("acc", "acc", None, True),
    ("status", "run", "run_id", False),
]
SORTABLE = [c for c in COLUMNS if c[2]]
MARK = "●"
GROUP = "group:"  # row keys of the group header rows (no result behind them)


class ResultsScreen(LabScreen):
    MODE = "results"
    HELP = ("Filter with words and keys: 'smol quant:Q4_1 test:tg128 machine:host since:2025-06-01 "
            "run:ab12'. Bare words match the model file. m steps the machine filter through every host, "
            "G groups rows by host, M compares the highlighted model's test across machines. Space "
            "selects rows (kept across pages); c compares the selection side by side with the "
            "difference in percent. KLD and acc are the model's newest KLD against its reference "
            "and task accuracy.")

    BINDINGS = [
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", key_display="S", show=False),
        Binding("space", "toggle_select", "Select"),
        Binding("c", "compare", "Compare"),
        Binding("g", "chart", "Chart"),
        Binding("o", "open_run", "Open run"),
        Binding("n,right_square_bracket", "page(1)", "Next page", key_display="n"),
        Binding("p,left_square_bracket", "page(-1)", "Previous page", key_display="p", show=False),
        Binding("x", "clear_selection", "Clear sel.", show=False),
        Binding("m", "next_machine", "Machine"),
        Binding("G", "group_machines", "Group by machine", key_display="G", show=False),
        Binding("M", "machines", "Machines", key_display="M", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filters: dict[str, str] = {}
        self.order = "test_time"
        self.descending = True
        self.page_offset = 0
        self.total: int | None = None
        self.has_more = False
        self.rows: dict[str, dict[str, Any]] = {}
        self.selected: list[str] = []
        self.generation = 0
        self.loaded_version = -1
        self._reload_timer: Timer | None = None
        self.by_machine = False
        self.machines: list[data.MachineSummary] | None = None  # every host with results
        self.machines_version = -1

    def compose_body(self) -> Iterable[Widget]:
        with Vertical(id="results-main"):
            with Horizontal(id="results-bar"):
                yield self.make_input(placeholder="/ filter: model quant:Q4_1 test:tg128 machine:host since:2025-06-01",
                                      id="filter")
            yield Static("Loading results…", id="results-status", markup=False)
            yield LabTable(id="results", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#results", DataTable)
        for key, title, _, _ in COLUMNS:
            table.add_column(title, key=key)
        table.focus()
        self.watch(self.app, "results_version", self._results_changed, init=False)
        self.reload()  # built hidden ahead of its first visit, it is filled by then

    def _results_changed(self, version: int) -> None:
        if self.is_current:
            self.reload()

    def on_screen_resume(self) -> None:
        if self.loaded_version != self.app.results_version:  # type: ignore[attr-defined]
            self.reload()

    # -- loading
    def reload(self) -> None:
        """Ask for the current page. Requests within 80 ms coalesce (five quick presses of s
        run one query, not five: a thread worker cannot be interrupted mid-query)."""
        self.generation += 1
        self.loaded_version = self.app.results_version  # type: ignore[attr-defined]
        if self._reload_timer is not None:
            self._reload_timer.stop()
        self._reload_timer = self.set_timer(RELOAD_DEBOUNCE_S, self._reload_now)

    def _reload_now(self) -> None:
        self._reload_timer = None
        # the hosts are read again only when results changed, and only once they are used
        hosts = (self.by_machine or "machine" in self.filters) and self.machines_version != self.loaded_version
        self._load(dict(self.filters), self.order, self.descending, self.page_offset, self.generation,
                   self.by_machine, hosts)

    @work(thread=True, exclusive=True, exit_on_error=False, group="results")
    def _load(self, filters: dict[str, str], order: str, descending: bool, offset: int, generation: int,
              by_machine: bool = False, hosts: bool = False) -> None:
        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            rows, has_more = data.results_page(store, filters, order, descending, PAGE_SIZE, offset, by_machine)
            data.attach_model_figures(store, rows)
            total = data.count_results(store, filters)
            machines = data.machine_list(store) if hosts else None
        except (LabError, ValueError) as exc:
            self.post_message(ResultsFailed(str(exc)))
            return
        finally:
            store.close()
        self.post_message(ResultsPageLoaded(rows, has_more, total, generation, machines))

    def on_results_failed(self, message: ResultsFailed) -> None:
        self.notify(message.error, severity="error")

    def on_results_page_loaded(self, message: ResultsPageLoaded) -> None:
        if message.generation != self.generation:
            return  # a newer request is on its way
        if message.machines is not None:
            self.machines, self.machines_version = message.machines, self.loaded_version
        table = self.query_one("#results", DataTable)
        cursor = table.cursor_row
        table.clear()
        self.rows = {}
        right = lambda v: Text(v, justify="right")  # noqa: E731
        summaries = {m.hostname: m for m in self.machines or []}
        host = None
        for row in message.rows:
            rid = row["id"]
            self.rows[rid] = row
            if self.by_machine and (row.get("hostname") or row.get("machine_id") or fmt.NA) != host:
                host = row.get("hostname") or row.get("machine_id") or fmt.NA
                about = summaries.get(host)
                summary = about.summary if about else ""
                if len(summary) > 32:  # no wider than a model file name: the columns keep their widths
                    summary = summary[:31] + "…"
                # the host's count over every result (a filter narrows the rows, not this count)
                count = f"▸ {about.results:,} {'in all' if self.filters else 'results'}" if about else "▸"
                table.add_row("", Text(count, style="bold"),
                              Text(host, style="bold"), Text(summary, style="italic"),
                              *[""] * (len(COLUMNS) - 4), key=GROUP + host)
            table.add_row(
                MARK if rid in self.selected else " ", fmt.when(row.get("test_time")),
                row.get("hostname") or fmt.NA, row.get("model_filename") or fmt.NA,
                row.get("file_type") or fmt.NA, row.get("test") or fmt.NA, right(fmt.ts_pm(row)),
                right(fmt.human_bytes(row.get("peak_rss_bytes"))),
                right(fmt.human_bytes(row.get("est_memory_bytes"))),
                right(fmt.num(row.get("n_threads"))), right(fmt.num(row.get("n_gpu_layers"))),
                right(fmt.kld(row.get("model_kld"))), right(fmt.share(row.get("model_accuracy"))),
                short_id(row.get("run_id") or "") + ("" if row.get("run_status") in (None, "ok") else f" {row['run_status']}"),
                key=rid,
            )
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))
        self.has_more = message.has_more
        self.total = message.total
        self._update_status()

    def _update_status(self) -> None:
        n = len(self.rows)
        if n == 0:
            text = "No results" + (" match the filter." if self.filters else " yet: run a benchmark (2).")
        else:
            total = f"{self.total:,}" if self.total is not None else (f"{self.page_offset + n:,}+" if self.has_more else f"{self.page_offset + n:,}")
            text = f"rows {self.page_offset + 1:,}–{self.page_offset + n:,} of {total}"
        title = next(c[1] for c in COLUMNS if c[2] == self.order)
        text += f" · sorted by {title} {'↓ desc' if self.descending else '↑ asc'}"
        if self.by_machine:
            text += " · grouped by machine"
        if self.filters:
            text += " · filter " + " ".join(f"{k}:{v}" for k, v in self.filters.items())
        if self.selected:
            text += f" · {len(self.selected)} selected (c compare, x clear)"
        self.query_one("#results-status", Static).update(text)

    # -- filter, sort, page
    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        try:
            self.filters = data.parse_filter(event.value)
        except LabError as exc:
            self.notify(str(exc), severity="error")
            return
        self.page_offset = 0
        self.reload()
        self.query_one("#results", DataTable).focus()

    def on_key(self, event: Any) -> None:
        if event.key == "escape" and self.query_one("#filter", Input).has_focus:
            self.query_one("#results", DataTable).focus()
            event.stop()

    def set_sort(self, order: str, descending: bool | None = None) -> None:
        if descending is None:
            descending = not self.descending if order == self.order else order in ("test_time", "avg_ts")
        self.order, self.descending, self.page_offset = order, descending, 0
        self.reload()

    def action_sort(self) -> None:
        orders = [c[2] for c in SORTABLE]
        self.set_sort(orders[(orders.index(self.order) + 1) % len(orders)])

    def action_reverse(self) -> None:
        self.set_sort(self.order, not self.descending)

    @on(DataTable.HeaderSelected, "#results")
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        order = next((c[2] for c in COLUMNS if c[0] == event.column_key.value), None)
        if order:
            self.set_sort(order)

    def action_next_machine(self) -> None:
        """Filter by the next host in name order (after the last: every machine again)."""
        if self.machines is None or self.machines_version != self.app.results_version:  # type: ignore[attr-defined]
            self._load_machines_then_step()
            return
        hosts = [m.hostname for m in self.machines]
        if not hosts:
            self.notify("No results yet: run a benchmark (2).")
            return
        current = self.filters.get("machine")
        index = hosts.index(current) + 1 if current in hosts else 0
        if index < len(hosts):
            self.filters["machine"] = hosts[index]
        else:
            self.filters.pop("machine", None)
        self.query_one("#filter", Input).value = " ".join(
            v if k == "model" else f"{k}:{v}" for k, v in self.filters.items())
        self.page_offset = 0
        self.reload()

    @work(thread=True, exclusive=True, exit_on_error=False, group="results-hosts")
    def _load_machines_then_step(self) -> None:
        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            machines = data.machine_list(store)
        finally:
            store.close()
        self.app.call_from_thread(self._machines_read, machines)

    def _machines_read(self, machines: list[data.MachineSummary]) -> None:
        self.machines, self.machines_version = machines, self.app.results_version  # type: ignore[attr-defined]
        self.action_next_machine()

    def action_group_machines(self) -> None:
        self.by_machine = not self.by_machine
        self.page_offset = 0
        self.reload()

    def action_machines(self) -> None:
        """The Machines comparison of the highlighted result's model and test."""
        rid = self._cursor_id()
        row = self.rows.get(rid) if rid else None
        if row is None or not row.get("model_id"):
            self.notify("Highlight a result of a known model, then press M.", severity="warning")
            return
        self.app.open_machines(row["model_id"], row.get("test"))  # type: ignore[attr-defined]

    def action_page(self, step: int) -> None:
        if step > 0 and not self.has_more:
            self.notify("This is the last page.")
            return
        if step < 0 and self.page_offset == 0:
            return
        self.page_offset = max(0, self.page_offset + step * PAGE_SIZE)
        self.reload()

    # -- selection and drill-down
    def _cursor_id(self) -> str | None:
        table = self.query_one("#results", DataTable)
        if table.row_count == 0:
            return None
        key = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        return None if key.startswith(GROUP) else key

    def action_toggle_select(self) -> None:
        rid = self._cursor_id()
        table = self.query_one("#results", DataTable)
        if rid is None:
            if table.row_count and table.cursor_row < table.row_count - 1:  # a group header: step over
                table.move_cursor(row=table.cursor_row + 1)
            return
        if rid in self.selected:
            self.selected.remove(rid)
            table.update_cell(rid, "sel", " ")
        else:
            self.selected.append(rid)
            table.update_cell(rid, "sel", MARK)
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1)
        self._update_status()

    def action_clear_selection(self) -> None:
        table = self.query_one("#results", DataTable)
        for rid in self.selected:
            if rid in self.rows:
                table.update_cell(rid, "sel", " ")
        self.selected = []
        self._update_status()

    def action_compare(self) -> None:
        from lab.tui.screens.compare import CompareScreen

        ids = list(self.selected)
        if len(ids) < 2:
            rid = self._cursor_id()
            if rid and rid not in ids:
                ids.append(rid)
        if len(ids) < 2:
            self.notify("Select at least two results with space, then press c.", severity="warning")
            return
        self.app.push_screen(CompareScreen(ids))

    def action_chart(self) -> None:
        from lab.tui.screens.chart import ChartScreen

        self.app.push_screen(ChartScreen(dict(self.filters)))

    def action_open_run(self) -> None:
        from lab.tui.screens.run_detail import RunDetailScreen

        rid = self._cursor_id()
        if rid is None:
            return
        self.app.push_screen(RunDetailScreen(self.rows[rid]["run_id"]))

    @on(DataTable.RowSelected, "#results")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_run()
