"""One run: its config, its machine, its results, and its monitor samples as curves."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Static

from lab.tui import data
from lab.tui import format as fmt
from lab.tui.messages import RunDetailLoaded
from lab.tui.widgets.curve import Curve
from lab.tui.widgets.keybar import KeyBar
from lab.tui.widgets.navbar import NavBar
from lab.tui.widgets.table import LabTable

# sample column, title, scale, unit formatter
CURVES = [
    ("rss_bytes", "RSS", fmt.human_bytes),
    ("cpu_percent", "CPU", fmt.percent),
    ("tokens", "tokens", lambda v: fmt.num(v, 0)),
    ("gpu_proc_mem_bytes", "GPU mem (this run)", fmt.human_bytes),
    ("gpu_util", "GPU util", fmt.percent),
    ("gpu_power_w", "GPU power", lambda v: f"{fmt.num(v)} W"),
]

MACHINE_KEYS = ["hostname", "cpu_info", "cpu_cores", "cpu_threads", "ram_bytes", "gpu_info", "vram_bytes",
                "backends", "os", "kernel", "llama_cpp_version", "build_commit"]


def key_values(rows: list[tuple[str, Any]]) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, fmt.NA if value is None or value == "" else str(value))
    return grid


class RunDetailScreen(Screen[None]):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        yield NavBar("results", id="navbar")
        with Horizontal(id="detail-main"):
            with VerticalScroll(id="detail-info"):
                yield Static(f"Run {self.run_id}: reading…", id="detail-text")
            with Vertical(id="detail-right"):
                yield LabTable(id="detail-results", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="detail-curves"):
                    for key, title, _ in CURVES:
                        yield Curve(f"{title} n/a", id=f"curve-{key}", classes="detail-curve",
                                    top=100 if key == "gpu_util" else None)
        yield KeyBar()

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _load(self) -> None:
        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            detail = data.run_detail(store, self.run_id)
        finally:
            store.close()
        self.post_message(RunDetailLoaded(detail))

    def on_run_detail_loaded(self, message: RunDetailLoaded) -> None:
        detail = message.detail
        info = self.query_one("#detail-text", Static)
        if detail is None:
            info.update(f"Run {self.run_id} is not in this database.")
            return
        run, config, machine = detail["run"], detail["config"], detail["machine"] or {}
        head = [
            ("run", run["id"]), ("status", run.get("status")), ("error", run.get("error")),
            ("model", run.get("model_filename")), ("started (UTC)", fmt.when(run.get("started_at"))),
            ("finished (UTC)", fmt.when(run.get("finished_at"))),
            ("load", f"{fmt.num(run.get('load_ms'), 0)} ms"),
            ("est. memory", fmt.human_bytes(run.get("est_memory_bytes"))),
            ("peak RSS", fmt.human_bytes(run.get("peak_rss_bytes"))),
            ("peak VRAM", fmt.human_bytes(run.get("peak_vram_bytes"))),
            ("label", run.get("label")),
        ]
        model = config.get("model") or {}
        conf = [("tests", ", ".join(dict.fromkeys(config.get("tests") or [])) or None),
                ("repetitions", config.get("repetitions")), ("GPU layers", model.get("n_gpu_layers")),
                ("mmap", model.get("use_mmap")), ("timeout", config.get("timeout"))]
        items = config.get("items") or []
        for k in ("n_threads", "n_batch", "n_ubatch", "flash_attn", "type_k", "type_v"):
            values = list(dict.fromkeys(str(item.get(k)) for item in items if item.get(k) is not None))
            if values:
                conf.append((k, ", ".join(values)))  # a sweep lists every value
        mach = [(k, fmt.human_bytes(machine.get(k)) if k.endswith("bytes") else machine.get(k)) for k in MACHINE_KEYS]
        group = Table.grid()
        group.add_column()
        for title, rows in (("Run", head), ("Config", conf), ("Machine", mach)):
            group.add_row(Text(title, style="bold underline"))
            group.add_row(key_values(rows))
            group.add_row("")
        if run.get("log_tail"):
            group.add_row(Text("llama.cpp log (tail)", style="bold underline"))
            group.add_row(Text(run["log_tail"][-2000:]))
        info.update(group)
        table = self.query_one("#detail-results", DataTable)
        table.add_columns("test", "t/s", "reps", "peak RSS", "CPU %", "TTFT ms")
        for r in detail["results"]:
            table.add_row(r["test"], Text(fmt.ts_pm(r), justify="right"), Text(fmt.num(r.get("repetitions")), justify="right"),
                          Text(fmt.human_bytes(r.get("peak_rss_bytes")), justify="right"),
                          Text(fmt.num(r.get("mean_cpu_percent"), 0), justify="right"),
                          Text(fmt.num(r.get("ttft_ms")), justify="right"))
        samples = detail["samples"]
        for key, title, render in CURVES:
            values = data.series(samples, key)
            curve = self.query_one(f"#curve-{key}", Curve)
            if values is None:
                curve.set([], f"{title}: n/a")
            else:
                curve.set(values, f"{title}: last {render(values[-1])}, max {render(max(values))} ({len(values)} samples)")
