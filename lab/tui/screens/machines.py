"""Machines: one model's test on every machine that measured it, side by side, with each
machine's fingerprint and the difference in percent against the first (this machine when it
measured the model).

Every column's figures come from one configuration, the one ``lab.select`` picks on that
machine (its best measured; ``a`` asks for one configuration on every machine instead), and
the table names it: threads, GPU layers, batch, flash attention and KV types per machine.
"""

from __future__ import annotations

from typing import Any, Iterable

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Select, Static

from lab.errors import LabError
from lab.select import FLASH_ATTN_WORDS
from lab.tui import data
from lab.tui import format as fmt
from lab.tui.messages import MachinesChoicesLoaded, MachinesCompared
from lab.tui.screens.base import LabScreen
from lab.tui.screens.compare import cell
from lab.tui.widgets.table import LabTable

# figure rows: result key, label, lower is better (None: neither); t/s, peak RSS and J/token are
# always shown (n/a where a machine cannot give them), the others when some machine has them
FIGURES: list[tuple[str, str, bool | None, bool]] = [
    ("avg_ts", "t/s vs base", False, True),
    ("peak_rss_bytes", "peak RSS", True, True),
    ("est_memory_bytes", "est. memory", True, False),
    ("peak_vram_bytes", "peak VRAM", True, False),
    ("mean_power_w", "mean power W", True, False),
    ("j_per_token", "J/token", True, True),
    ("ttft_ms", "TTFT ms", True, False),
    ("mean_cpu_percent", "mean CPU %", None, False),
]


def config_rows(figures: list[data.MachineFigure]) -> list[tuple[str, list[str]]]:
    """Each machine's configuration (the one its figure comes from), one setting per row."""
    def fa(value: int | None) -> str:
        return fmt.NA if value is None else FLASH_ATTN_WORDS.get(value, str(value))

    cfgs = [f.selection.config for f in figures]
    return [
        ("threads", [fmt.num(c.n_threads) for c in cfgs]),
        ("GPU layers", [fmt.num(c.n_gpu_layers) for c in cfgs]),
        ("batch / ubatch", [f"{fmt.num(c.n_batch)} / {fmt.num(c.n_ubatch)}" for c in cfgs]),
        ("flash attn", [fa(c.flash_attn) for c in cfgs]),
        ("KV cache", [f"{c.type_k or fmt.NA} / {c.type_v or fmt.NA}" for c in cfgs]),
        ("other configs", [str(f.selection.other_configs) for f in figures]),
    ]


def column_titles(figures: list[data.MachineFigure]) -> list[str]:
    """``lab-box (base)``, ``big-box``; a host with two fingerprints (a new llama.cpp build) gets
    the start of each id."""
    hosts = [f.machine.get("hostname") or fmt.NA for f in figures]
    titles = []
    for i, (host, f) in enumerate(zip(hosts, figures)):
        title = host if hosts.count(host) == 1 else f"{host} {(f.machine.get('id') or '')[:6]}"
        titles.append(title + (" (base)" if i == 0 else ""))
    return titles


class MachinesScreen(LabScreen):
    MODE = "machines"
    HELP = ("One model's test on every machine that measured it, side by side: the figure (t/s ± sd, "
            "flagged noisy, swapped or throttled), memory and energy with the difference in percent "
            "against the first machine (this one, when it measured the model), the configuration each "
            "figure was measured at, and each machine's fingerprint. m picks the model, t the test; "
            "a compares every machine at one configuration instead of each at its best. Merge "
            "other machines' databases with 'rightsizer merge'.")

    BINDINGS = [
        Binding("m", "pick_model", "Model"),
        Binding("t", "pick_test", "Test"),
        Binding("a", "same_config", "Same config"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.choices: dict[str, data.ModelTests] = {}
        self.wanted: tuple[str, str | None] | None = None  # asked for before the choices were read
        self.same_config = False
        self.comparison: data.MachineComparison | None = None
        self.generation = 0
        self.loaded_version = -1

    def compose_body(self) -> Iterable[Widget]:
        with Vertical(id="machines-main"):
            with Horizontal(id="machines-bar"):
                yield Select([], prompt="model", id="machines-model", compact=True, allow_blank=True)
                yield Select([], prompt="test", id="machines-test", compact=True, allow_blank=True)
            yield Static("Reading the machines…", id="machines-status", markup=False)
            yield LabTable(id="machines", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.watch(self.app, "results_version", self._results_changed, init=False)
        self.query_one("#machines", DataTable).focus()
        # the choices are read when the screen is first shown (it is built, hidden, at launch:
        # a user who never looks across machines pays for no query)

    def _results_changed(self, version: int) -> None:
        if self.is_current:
            self._load_choices()

    def on_screen_resume(self) -> None:
        if self.loaded_version != self.app.results_version:  # type: ignore[attr-defined]
            self._load_choices()

    # -- choosing
    def show(self, model_id: str, test: str | None = None) -> None:
        """Compare ``model_id``'s ``test`` (default: tg128, else its first test)."""
        self.wanted = (model_id, test)
        if self.choices and self.loaded_version == self.app.results_version:  # type: ignore[attr-defined]
            self._apply_wanted()
        else:
            self._load_choices()

    def _load_choices(self) -> None:
        self.loaded_version = self.app.results_version  # type: ignore[attr-defined]
        self._read_choices()

    @work(thread=True, exclusive=True, exit_on_error=False, group="machines-choices")
    def _read_choices(self) -> None:
        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            models = data.comparable_models(store)
        finally:
            store.close()
        self.post_message(MachinesChoicesLoaded(models))

    def on_machines_choices_loaded(self, message: MachinesChoicesLoaded) -> None:
        self.choices = {m.model_id: m for m in message.models}
        model_select = self.query_one("#machines-model", Select)
        current = model_select.value
        with self.prevent(Select.Changed):
            model_select.set_options([(f"{m.label} · {m.machines} machine{'s' if m.machines != 1 else ''}", m.model_id)
                                      for m in message.models])
        if not self.choices:
            self.query_one("#machines-status", Static).update(
                "No results yet: run a benchmark (2), or merge other machines' databases (rightsizer merge).")
            return
        if self.wanted is None:
            keep = current if current in self.choices else message.models[0].model_id
            test = self.query_one("#machines-test", Select).value
            self.wanted = (keep, test if isinstance(test, str) else None)  # type: ignore[assignment]
        self._apply_wanted()

    def _apply_wanted(self) -> None:
        assert self.wanted is not None
        model_id, test = self.wanted
        self.wanted = None
        entry = self.choices.get(model_id)
        if entry is None:
            self.notify("That model has no figures to compare across machines (depth-0 pp, tg or chat).",
                        severity="warning")
            return
        if test not in entry.tests:
            if test is not None:
                self.notify(f"{test} cannot be compared across machines; showing {data.default_test(entry.tests)}.")
            test = data.default_test(entry.tests)
        with self.prevent(Select.Changed):
            self.query_one("#machines-model", Select).value = model_id
            tests = self.query_one("#machines-test", Select)
            tests.set_options([(t, t) for t in entry.tests])
            tests.value = test
        self._compare()

    @on(Select.Changed, "#machines-model")
    def _model_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.show(event.value, None)

    @on(Select.Changed, "#machines-test")
    def _test_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self._compare()

    def action_pick_model(self) -> None:
        self.query_one("#machines-model", Select).action_show_overlay()

    def action_pick_test(self) -> None:
        self.query_one("#machines-test", Select).action_show_overlay()

    def action_same_config(self) -> None:
        self.same_config = not self.same_config
        self._compare()

    # -- comparing
    def _compare(self) -> None:
        model_id = self.query_one("#machines-model", Select).value
        test = self.query_one("#machines-test", Select).value
        if not isinstance(model_id, str) or not isinstance(test, str):
            return
        self.generation += 1
        machine = self.app.machine  # type: ignore[attr-defined]
        self._read_comparison(model_id, test, machine.id if machine is not None else None, self.same_config,
                              self.generation)

    @work(thread=True, exclusive=True, exit_on_error=False, group="machines-compare")
    def _read_comparison(self, model_id: str, test: str, first: str | None, same: bool, generation: int) -> None:
        store = self.app.open_store()  # type: ignore[attr-defined]
        try:
            comparison = data.compare_machines(store, model_id, test, first_machine_id=first, same_config=same)
        except LabError as exc:
            self.post_message(MachinesCompared(None, str(exc)))
            return
        finally:
            store.close()
        if generation == self.generation:
            self.post_message(MachinesCompared(comparison))

    def on_machines_compared(self, message: MachinesCompared) -> None:
        if message.comparison is None:
            self.notify(message.error or "Nothing to compare.", severity="error")
            return
        self.comparison = c = message.comparison
        figures = c.figures
        table = self.query_one("#machines", DataTable)
        table.clear(columns=True)
        table.add_column("", key="figure")
        for i, title in enumerate(column_titles(figures)):
            table.add_column(title, key=f"m{i}")
        right = lambda v: Text(v, justify="right")  # noqa: E731
        base = figures[0].row or {} if figures else {}

        def add(label: str, values: list[Any], key: str | None = None) -> None:
            table.add_row(Text(label, style="bold"), *[v if isinstance(v, Text) else right(v) for v in values],
                          key=key or label)

        def section(title: str) -> None:
            table.add_row(Text(title, style="bold underline"), *[""] * len(figures), key=f"section:{title}")

        add("t/s ± sd", [fmt.ts_pm(f.row) if f.row else "not measured" for f in figures])
        add("flags", [", ".join(f.flags()) or "none" if f.row else fmt.NA for f in figures])
        for key, label, lower_better, always in FIGURES:
            values = [(f.row or {}).get(key) for f in figures]
            if not always and all(v is None for v in values):
                continue
            add(label, [cell(key, v, base.get(key), lower_better, i == 0) for i, v in enumerate(values)], key)
        add("repetitions", [fmt.num((f.row or {}).get("repetitions")) for f in figures])
        add("measured", [fmt.when((f.row or {}).get("test_time")) for f in figures])
        if any((f.row or {}).get("model_fs_type") for f in figures):  # SD card or NVMe: loads differ
            add("model storage", [" ".join(filter(None, ((f.row or {}).get("model_fs_type"),
                                                         (f.row or {}).get("model_device")))) or fmt.NA
                                  for f in figures])
        section("configuration")
        for label, values in config_rows(figures):
            add(label, values)
        add("run build", [", ".join(f.selection.builds) or fmt.NA for f in figures])
        section("machine")
        for label, values in data.fingerprint_rows([f.machine for f in figures]):
            add(label, values)
        self._update_status()
        if self.is_current:
            table.focus()

    def _update_status(self) -> None:
        c = self.comparison
        if c is None:
            return
        n = len(c.figures)
        text = f"{c.label} · {c.test} on {n} machine{'s' if n != 1 else ''}"
        if c.same_config:
            cfg = c.figures[0].selection.config.label() if c.figures else fmt.NA
            text += f" · one configuration for all: {cfg} (a: each at its best)"
        else:
            text += " · each at its best measured configuration" + (
                " (they differ: see the rows below; a: one for all)" if c.configs_differ else "")
        if n > 1:
            text += " · differences against the base"
        self.query_one("#machines-status", Static).update(text)
