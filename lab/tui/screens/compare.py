"""Compare: selected results side by side, each against the first, with the difference in percent.

The sign of a difference says more or less; the words "better"/"worse" say which way is good for
that figure (higher t/s is better, lower memory and latency are better), so it reads in
monochrome too.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Static

from lab.tui import data
from lab.tui import format as fmt
from lab.tui.messages import CompareLoaded
from lab.tui.widgets.charts import BarChart
from lab.tui.widgets.keybar import KeyBar
from lab.tui.widgets.navbar import NavBar
from lab.tui.widgets.table import LabTable

_BYTES = {"peak_rss_bytes", "est_memory_bytes", "peak_vram_bytes", "model_size"}


def column_title(row: dict[str, Any], index: int) -> str:
    """``base: SmolLM2-135M-Instruct.Q4_1 tg128 @lab-box`` (A:, B: ... for the others)."""
    name = (row.get("model_filename") or "n/a").removesuffix(".gguf")
    quant = row.get("file_type")
    if quant and quant.lower() not in name.lower():
        name += f" {quant}"
    if len(name) > 32:
        name = name[:31] + "…"
    tag = "base" if index == 0 else chr(ord("A") + index - 1)
    return f"{tag}: {name} {row.get('test')} @{row.get('hostname') or 'n/a'}"


def cell(key: str, value: Any, base: Any, lower_better: bool | None, is_base: bool) -> Text:
    text = fmt.human_bytes(value) if key in _BYTES else fmt.num(value, 2 if key in ("cv", "j_per_token") else 1)
    if is_base or value is None:
        return Text(text, justify="right")
    diff = fmt.diff_pct(value, base)
    if diff is None:
        return Text(text, justify="right")
    good = (diff < 0) if lower_better else (diff > 0)
    verdict = "" if abs(diff) < 0.05 or lower_better is None else (" better" if good else " worse")
    out = Text(text + " ", justify="right")
    out.append(f"({diff:+.1f}%{verdict})", style=("green" if good else "red") if verdict else "")
    return out


class CompareScreen(Screen[None]):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, result_ids: list[str]) -> None:
        super().__init__()
        self.result_ids = result_ids

    def compose(self) -> ComposeResult:
        yield NavBar("results", id="navbar")
        with Vertical(id="compare-main"):
            yield Static(f"Comparing {len(self.result_ids)} results; differences are against 'base'.",
                         id="compare-title", markup=False)
            yield LabTable(id="compare", cursor_type="row", zebra_stripes=True)
            yield BarChart(id="compare-chart")
        yield KeyBar()

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _load(self) -> None:
        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            rows = data.results_by_id(store, self.result_ids)
        finally:
            store.close()
        self.post_message(CompareLoaded(rows))

    def on_compare_loaded(self, message: CompareLoaded) -> None:
        rows = message.rows
        table = self.query_one("#compare", DataTable)
        table.add_column("figure", key="figure")
        for i, row in enumerate(rows):
            table.add_column(column_title(row, i), key=row["id"])
        ident = [("machine", "hostname"), ("test", "test"), ("quant", "file_type"), ("threads", "n_threads"),
                 ("GPU layers", "n_gpu_layers"), ("batch/ubatch", None), ("repetitions", "repetitions"),
                 ("time (UTC)", "test_time")]
        for label, key in ident:
            values = []
            for r in rows:
                if key is None:
                    values.append(f"{fmt.num(r.get('n_batch'))}/{fmt.num(r.get('n_ubatch'))}")
                elif key == "test_time":
                    values.append(fmt.when(r.get(key)))
                else:
                    values.append(fmt.num(r.get(key)) if isinstance(r.get(key), (int, float)) else (r.get(key) or fmt.NA))
            table.add_row(label, *[Text(str(v), justify="right") for v in values])
        base = rows[0] if rows else {}
        for key, label, lower_better in data.COMPARE_METRICS:
            if all(r.get(key) is None for r in rows):
                continue  # a figure nobody has (e.g. power on a CPU-only machine) is left out
            table.add_row(label, *[cell(key, r.get(key), base.get(key), lower_better, i == 0)
                                   for i, r in enumerate(rows)])
        chart = [data.ChartBar(column_title(r, i), float(r["avg_ts"]), int(r.get("repetitions") or 0))
                 for i, r in enumerate(rows) if r.get("avg_ts") is not None]
        self.query_one("#compare-chart", BarChart).set_data({"t/s": chart} if chart else {})
        if len(rows) < len(self.result_ids):
            self.notify(f"{len(self.result_ids) - len(rows)} selected results no longer exist.", severity="warning")
        table.focus()
