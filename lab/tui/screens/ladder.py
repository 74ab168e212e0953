"""Ladder: one row per quantization of a base model, largest first, with every figure a user
right-sizes by — size, speed, memory, fidelity against the reference and task accuracy.

Speed and memory are this machine's; KLD, PPL ratio and accuracy come from any machine (they
belong to the file). Rows on the size / mean-KLD Pareto front are marked "front": no other
quant is both smaller and closer to the reference.
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
from lab.tui.messages import LadderLoaded
from lab.tui.widgets.keybar import KeyBar
from lab.tui.widgets.navbar import NavBar
from lab.tui.widgets.table import LabTable

# column key, title, right-aligned. Two-line titles keep every column as narrow as its figures,
# so the whole table fits 120 columns; the highlighted row's file name and the configuration its
# speed was measured at are shown under the table, not in a column a long stem would cut.
COLUMNS: list[tuple[str, str, bool]] = [
    ("mark", " ", False),
    ("quant", "quant", False),
    ("file_size", "file\nsize", True),
    ("pp", "pp\nt/s", True),
    ("tg", "tg\nt/s", True),
    ("cost", "USD/\n1M", True),
    ("rss", "peak\nRSS", True),
    ("est", "est/\nRSS", True),
    ("kld", "KLD\nmean", True),
    ("kld_p99", "KLD\np99", True),
    ("ppl_ratio", "PPL\nratio", True),
    ("same_top", "same\ntop", True),
    ("acc", "accuracy\n(95% CI)", True),
    ("valid", "fmt\nvalid", True),
    ("fallback", "fall-\nback", True),
]


def usd(value: float | None) -> str:
    """USD per 1M tokens to three significant digits; None is "n/a"."""
    if value is None:
        return fmt.NA
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def short_bytes(value: float | None) -> str:
    """A memory size to three significant digits ("172 MiB", "93.8 MiB"): a measured peak
    moves by more than that between runs, and the narrower cell leaves room for the cost."""
    text = fmt.human_bytes(value)
    if value is None or " " not in text:
        return text
    number, unit = text.split(" ", 1)
    return f"{float(number):.3g} {unit}"


def row_cells(row: dict[str, Any], front: set[str], reference_id: str | None = None) -> list[Any]:
    """The table cells of one ladder row (a ``lab.ladder.ladder_table`` dict): the first marks
    the base, the reference the KLD was measured against (when another file: a ladder built
    from a quant has its F16 as reference) and the Pareto front."""
    right = lambda v: Text(v, justify="right")  # noqa: E731
    if row.get("is_base"):
        mark = Text("base", style="bold")
    elif row["model_id"] == reference_id:
        mark = Text("ref", style="bold")
    elif row["model_id"] in front:
        mark = Text("front")
    else:
        mark = Text("")
    return [
        mark,
        row.get("file_type") or fmt.NA,
        right(fmt.human_bytes(row.get("file_size"))),
        right(fmt.ts(row.get("pp"))),
        right(fmt.ts(row.get("tg"))),
        right(usd(row.get("usd_per_mtok"))),
        right(short_bytes(row.get("peak_rss_bytes"))),
        right(fmt.ratio(row.get("est_rss_ratio"))),
        right(fmt.kld(row.get("kld_mean"))),
        right(fmt.kld(row.get("kld_p99"))),
        right(fmt.ratio(row.get("ppl_ratio"))),
        right(fmt.share(row.get("same_top_p"), 1)),
        right(fmt.accuracy(row.get("accuracy"), row.get("accuracy_ci_low"), row.get("accuracy_ci_high"))),
        right(fmt.share(row.get("format_valid_rate"))),
        right(fmt.num(row.get("n_fallback"))),
    ]


def baseline_cells(base: dict[str, Any]) -> list[Any]:
    """The cells of an endpoint's baseline row: its accuracy on the ladder's suite, format-valid
    rate and cost per 1M tokens from its prices; what a remote API cannot have (size, this
    machine's speed and memory, KLD) is "n/a". Its latency is in the line under the table."""
    right = lambda v: Text(v, justify="right")  # noqa: E731
    na = right(fmt.NA)
    return [
        Text("baseline", style="bold"), base.get("model_filename") or fmt.NA, na, na, na,
        right(usd(base.get("usd_per_mtok"))), na, na, na, na, na, na,
        right(fmt.accuracy(base.get("accuracy"), base.get("accuracy_ci_low"), base.get("accuracy_ci_high"))),
        right(fmt.share(base.get("format_valid_rate"))), na,
    ]


def baseline_detail(base: dict[str, Any]) -> str:
    """The line under the table for a baseline row: its latency (the newest chat test against
    it), where its accuracy and cost come from."""
    ttft, e2e = base.get("ttft_ms"), base.get("e2e_ms")
    latency = (f"TTFT {fmt.num(ttft, 0)} ms, e2e {fmt.num(e2e, 0)} ms, "
               f"{fmt.ts(base.get('chat_ts'))} t/s (chat)") if ttft is not None or e2e is not None else \
        "latency n/a (no chat test: rightsizer bench endpoint:NAME --chat)"
    cost = "USD/1M from its prices and the eval's tokens" if base.get("usd_per_mtok") is not None else \
        f"USD/1M n/a ({'; '.join(base.get('cost_missing') or []) or 'no prices'})"
    return (f"{base.get('model_filename')}: {latency} · accuracy on suite {base.get('eval_suite')}, "
            f"{fmt.num(base.get('n_items'))} items · {cost}")


def versus(base: dict[str, Any], model_id: str) -> str:
    """A rung against one baseline, as ``recommend --baseline`` puts it."""
    from lab.report.baseline import baseline_cells as compared

    cells = compared(base["vs"].get(model_id) or {"vs_baseline": None})
    return (f"vs {base.get('model_filename')}: accuracy {cells['vs_accuracy']}, {cells['vs_verdict']}; "
            f"latency × {cells['vs_latency']}; cost × {cells['vs_cost']}")


def legend(ladder: data.Ladder, hostname: str | None) -> str:
    """What the figures are measured on and against, in a line or two."""
    rows = ladder.rows
    parts = [f"speed and memory on {hostname or 'this machine'}"]
    configs = {r["config"] for r in rows if r.get("config")}
    if configs:
        tests = sorted({t for r in rows for t in (r.get("pp_test"), r.get("tg_test")) if t})
        parts[0] += f" at {', '.join(sorted(configs))} ({' / '.join(tests)})"
    ref = ladder.reference
    if ref is not None:
        what = "the base" if ref.get("id") == ladder.base_model_id else ref.get("model_filename") or fmt.NA
        parts.append(f"KLD vs {what} ({ref.get('file_type') or fmt.NA}{', ref' if what != 'the base' else ''})")
    elif any(r.get("reference_model_id") for r in rows):
        parts.append("KLD vs more than one reference")
    suites = {(r.get("eval_suite"), r.get("eval_constrained")) for r in rows if r.get("eval_suite")}
    if len(suites) == 1:
        suite, constrained = next(iter(suites))
        parts.append(f"accuracy on suite {suite}{', constrained' if constrained else ''}")
    elif suites:
        parts.append("accuracy: newest run per quant (suites differ)")
    if any(r.get("tg") for r in rows):
        costed = any(r.get("usd_per_mtok") is not None for r in rows)
        parts.append("USD/1M: cost per 1M generated tokens, machine cost settings at the tg speed" if costed
                     else "USD/1M: n/a until `rightsizer machine set --price ...`")
    if ladder.front:
        parts.append("front: no smaller quant has a lower KLD")
    if ladder.baselines:
        parts.append("baseline: an endpoint with an eval run on the same suite")
    return " · ".join(parts)


def row_detail(row: dict[str, Any]) -> str:
    """The line under the table for the highlighted row: its file, and the configurations its
    speed was not taken from (never mixed into one row)."""
    text = f"file: {row.get('model_filename') or fmt.NA}"
    others = row.get("other_configs") or 0
    if others:
        text += (f" · also measured at {others} other configuration{'s' if others != 1 else ''} "
                 "(see Results)")
    return text


class LadderScreen(Screen[None]):
    """Every quant of one base model, pushed from the Library (L)."""

    HELP = ("One row per quant of the highlighted model's base, largest first: size, speed and "
            "peak RSS on this machine, KLD and PPL ratio against the reference, task accuracy "
            "with its 95% interval, format-valid rate and tensors that fell back to another type. "
            "'front' marks quants no other quant beats on both size and KLD. An endpoint with an eval "
            "run on the same suite is shown as a baseline row (accuracy, cost per 1M tokens); the "
            "line under the table gives its latency, and each quant's difference from it.")

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, base_model_id: str) -> None:
        super().__init__()
        self.base_model_id = base_model_id
        self.ladder: data.Ladder | None = None

    def compose(self) -> ComposeResult:
        yield NavBar("library", id="navbar")
        with Vertical(id="ladder-main"):
            yield Static("Ladder: loading…", id="ladder-title", markup=False)
            yield Static("", id="ladder-legend", markup=False)
            yield LabTable(id="ladder", cursor_type="row", zebra_stripes=True, header_height=2)
            yield Static("", id="ladder-row", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one("#ladder", DataTable)
        for key, title, right in COLUMNS:
            table.add_column(Text(title, justify="right" if right else "left"), key=key)
        table.focus()
        machine = self.app.machine  # type: ignore[attr-defined]
        self._load(self.base_model_id, machine.id if machine is not None else None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="ladder")
    def _load(self, base_model_id: str, machine_id: str | None) -> None:
        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            ladder = data.load_ladder(store, base_model_id, machine_id)
        finally:
            store.close()
        self.post_message(LadderLoaded(ladder))

    def on_ladder_loaded(self, message: LadderLoaded) -> None:
        ladder = self.ladder = message.ladder
        table = self.query_one("#ladder", DataTable)
        table.clear()
        for row in ladder.rows:
            reference_id = ladder.reference.get("id") if ladder.reference else None
            table.add_row(*row_cells(row, ladder.front, reference_id), key=row["model_id"])
        for base in ladder.baselines:
            table.add_row(*baseline_cells(base), key=f"baseline:{base['model_id']}")
        base = ladder.base.get("model_filename") if ladder.base else ladder.base_model_id[:12]
        n = len(ladder.rows) - (1 if ladder.base else 0)
        built = f"{n} quant{'s' if n != 1 else ''} built from it"
        self.query_one("#ladder-title", Static).update(
            f"Ladder of {base}: the base and {built}" if ladder.base else f"Ladder of {base}: {built}")
        machine = self.app.machine  # type: ignore[attr-defined]
        hostname = machine.fingerprint.get("hostname") if machine is not None else None
        self.query_one("#ladder-legend", Static).update(legend(ladder, hostname))
        self._show_row()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_row()

    def _show_row(self) -> None:
        ladder = self.ladder
        if ladder is None or not ladder.rows:
            return
        table = self.query_one("#ladder", DataTable)
        index = min(max(table.cursor_row, 0), len(ladder.rows) + len(ladder.baselines) - 1)
        if index >= len(ladder.rows):
            text = baseline_detail(ladder.baselines[index - len(ladder.rows)])
        else:
            model_id = ladder.rows[index]["model_id"]
            text = "\n".join([row_detail(ladder.rows[index]), *(versus(b, model_id) for b in ladder.baselines)])
        self.query_one("#ladder-row", Static).update(text)
