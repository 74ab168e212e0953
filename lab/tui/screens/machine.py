"""Machine: the fingerprint beside live gauges of CPU, memory and GPUs, like a small nvtop.

Polls never overlap (Dolphie's loop): a worker takes one reading and answers with a message;
the handler draws it and only then schedules the next poll. Polling runs only while this screen
is shown, so it costs a benchmark nothing when you are looking elsewhere.
"""

from __future__ import annotations

import collections
from typing import Iterable

from rich.table import Table
from textual import work
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Static

from lab.tui import data
from lab.tui import format as fmt
from lab.tui.messages import SystemPolled
from lab.tui.screens.base import LabScreen
from lab.tui.widgets.curve import Curve
from lab.tui.widgets.gauge import Gauge

HISTORY = 120
FINGERPRINT_KEYS = [
    ("id", "machine id"), ("hostname", "hostname"), ("os", "OS"), ("kernel", "kernel"), ("arch", "arch"),
    ("cpu_info", "CPU"), ("cpu_cores", "cores"), ("cpu_threads", "threads"), ("ram_bytes", "RAM"),
    ("gpu_info", "GPUs"), ("gpu_count", "GPU count"), ("vram_bytes", "VRAM"), ("gpu_offload", "GPU offload"),
    ("backends", "backends"), ("llama_cpp_version", "llama-cpp-python"), ("build_commit", "llama.cpp build"),
    ("python_version", "Python"), ("lab_version", "Rightsizer"),
]


def fingerprint_table(machine: data.MachineContext | None) -> Table | str:
    if machine is None:
        return "Reading the fingerprint…"
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    fp = machine.fingerprint
    for key, label in FINGERPRINT_KEYS:
        value = fp.get(key)
        if key.endswith("bytes"):
            text = fmt.human_bytes(value)
        elif key == "gpu_offload":
            text = fmt.NA if value is None else ("yes" if value else "no")
        else:
            text = fmt.NA if value is None or value == "" else str(value)
        grid.add_row(label, text)
    grid.add_row("physical cores used", str(machine.physical_cores))
    grid.add_row("NVML", machine.nvml_status)
    return grid


class MachineScreen(LabScreen):
    MODE = "machine"
    HELP = ("The machine fingerprint stored with every result, and live gauges of the whole machine "
            "(all processes), refreshed once a second while this screen is shown.")

    def __init__(self) -> None:
        super().__init__()
        self.cpu_history: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self.mem_history: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self._poll_timer: Timer | None = None
        self._polling = False
        self._n_cores = 0
        self._n_gpus = -1

    def compose_body(self) -> Iterable[Widget]:
        with Horizontal(id="machine-main"):
            with VerticalScroll(id="fingerprint"):
                yield Static("Reading the fingerprint…", id="fingerprint-text")
            with VerticalScroll(id="gauges"):
                yield Gauge("CPU", id="g-cpu", label_width=6, text_width=14)
                yield Vertical(id="cores")
                yield Gauge("memory", id="g-mem", label_width=6, text_width=22)
                yield Gauge("swap", id="g-swap", label_width=6, text_width=22)
                yield Static("load n/a", id="load", markup=False)
                yield Curve("CPU history", id="h-cpu", top=100)
                yield Curve("memory history", id="h-mem", top=100)
                yield Static("GPUs", id="gpus-title", markup=False)
                yield Vertical(id="gpus")

    def on_mount(self) -> None:
        self.watch(self.app, "machine", self._machine_changed, init=True)
        # Built ahead of its first visit (hidden), one reading now for the number of CPUs and
        # GPUs, so that their gauges are mounted and laid out by then; the poll loop runs only
        # while the screen is shown.
        if not self.is_current:
            self._size_gauges()

    def _machine_changed(self, machine: data.MachineContext | None) -> None:
        self.query_one("#fingerprint-text", Static).update(fingerprint_table(machine))
        for line in self.query("#no-gpu").results(Static):  # NVML's answer came after the reading
            line.update(self._no_gpu_text())

    # -- the poll loop: one reading, draw, then schedule the next
    def on_screen_resume(self) -> None:
        self._polling = True
        self._poll()

    def on_screen_suspend(self) -> None:
        self._polling = False
        if self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None

    @work(thread=True, exclusive=True, exit_on_error=False, group="poll")
    def _poll(self) -> None:
        self.post_message(SystemPolled(self.app.probe.read()))  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, group="size")
    def _size_gauges(self) -> None:
        self.post_message(SystemPolled(self.app.probe.read(), sizing_only=True))  # type: ignore[attr-defined]

    def on_system_polled(self, message: SystemPolled) -> None:
        if message.sizing_only:  # its figures would be stale by the time they are seen
            self._mount_cores(len(message.reading.cpu_per_core))
            self._mount_gpus(message.reading.gpus)
            return
        self.draw(message.reading)
        interval = getattr(self.app, "poll_interval", 1.0)
        if self._polling and interval:
            self._poll_timer = self.set_timer(interval, self._poll)

    def draw(self, r: data.SystemReading) -> None:
        self.query_one("#g-cpu", Gauge).set(
            None if r.cpu_total is None else r.cpu_total / 100, f"{fmt.percent(r.cpu_total)} ({len(r.cpu_per_core)} CPUs)")
        cores = self._mount_cores(len(r.cpu_per_core))
        for gauge, value in zip(cores.query(Gauge), r.cpu_per_core):
            gauge.set(value / 100, fmt.percent(value))
        used, total = r.memory_used, r.memory_total
        self.query_one("#g-mem", Gauge).set(
            None if used is None or not total else used / total,
            f"{fmt.human_bytes(used)} / {fmt.human_bytes(total)}")
        swap_fraction = None if r.swap_used is None or not r.swap_total else r.swap_used / r.swap_total
        self.query_one("#g-swap", Gauge).set(
            swap_fraction, f"{fmt.human_bytes(r.swap_used)} / {fmt.human_bytes(r.swap_total)}" if r.swap_total else "none")
        load = "load n/a" if r.load_avg is None else "load " + "  ".join(f"{v:.2f}" for v in r.load_avg) + "  (1, 5, 15 min)"
        self.query_one("#load", Static).update(load)
        if r.cpu_total is not None:
            self.cpu_history.append(r.cpu_total)
        if used is not None and total:
            self.mem_history.append(used / total * 100)
        self.query_one("#h-cpu", Curve).set(list(self.cpu_history), "CPU history (% of all CPUs)")
        self.query_one("#h-mem", Curve).set(list(self.mem_history), "memory used history (% of RAM)")
        self._draw_gpus(r.gpus)

    def _mount_cores(self, n: int) -> Vertical:
        """The box of per-CPU gauges, with n of them."""
        cores = self.query_one("#cores", Vertical)
        if self._n_cores != n:
            self._n_cores = n
            cores.remove_children()
            cores.mount_all([Gauge(f"cpu{i}", label_width=6, text_width=14, classes="core") for i in range(n)])
        return cores

    def _mount_gpus(self, gpus: list[data.GpuReading]) -> bool:
        """A name, three gauges and a temperature line per GPU (or why there are none);
        True when they were mounted just now."""
        if self._n_gpus == len(gpus):
            return False
        self._n_gpus = len(gpus)
        box = self.query_one("#gpus", Vertical)
        box.remove_children()
        widgets: list[Widget] = []
        for g in gpus:
            widgets.append(Static(f"GPU {g.index}: {g.name or fmt.NA}", classes="gpu-name", markup=False))
            widgets += [Gauge(label, id=f"gpu{g.index}-{kind}", label_width=6, text_width=22)
                        for kind, label in (("mem", "memory"), ("util", "util"), ("power", "power"))]
            widgets.append(Static("", id=f"gpu{g.index}-temp", markup=False))
        if not gpus:
            widgets.append(Static(self._no_gpu_text(), id="no-gpu", markup=False))
        box.mount_all(widgets)
        return True

    def _no_gpu_text(self) -> str:
        machine = self.app.machine  # type: ignore[attr-defined]
        return f"n/a: no NVIDIA GPU visible (NVML {machine.nvml_status if machine is not None else 'n/a'})"

    def _draw_gpus(self, gpus: list[data.GpuReading]) -> None:
        if self._mount_gpus(gpus):
            return self.call_after_refresh(self._draw_gpus, gpus) if gpus else None
        for g in gpus:
            self.query_one(f"#gpu{g.index}-mem", Gauge).set(
                None if g.memory_used is None or not g.memory_total else g.memory_used / g.memory_total,
                f"{fmt.human_bytes(g.memory_used)} / {fmt.human_bytes(g.memory_total)}")
            self.query_one(f"#gpu{g.index}-util", Gauge).set(None if g.util is None else g.util / 100, fmt.percent(g.util))
            self.query_one(f"#gpu{g.index}-power", Gauge).set(
                None if g.power_w is None or not g.power_limit_w else g.power_w / g.power_limit_w,
                f"{fmt.num(g.power_w)} / {fmt.num(g.power_limit_w)} W")
            self.query_one(f"#gpu{g.index}-temp", Static).update(f"temperature {fmt.num(g.temp_c, 0)} °C")
