"""The sampler: a thread in the PARENT that watches the engine CHILD process.

One daemon thread takes a ``Sample`` every ``interval`` seconds: the child's RSS, CPU and
threads (psutil), its major page faults and storage reads, the machine's available memory and
swap traffic, and, where the machine can give them, GPU memory, utilisation, power,
temperature and energy (NVML), CPU package energy (RAPL), the CPU clock, temperature and
throttle counter, and the board's power rails when neither RAPL nor NVML is there
(``lab.sensors``). ``begin_window()`` / ``end_window()`` bracket one test and give its peak
memory and CPU use.

Paging: a model that does not fit is evicted and read again from storage (a memory-mapped
file) or from swap while it runs; both are major page faults of the engine. A test with more
than ``SWAP_FAULTS`` major faults during its timed repetitions (after the warm-up, which may
legitimately read the file) is flagged ``swapped`` (``result_figures()``).

Energy is not taken from the window: ``read_energy()`` reads every counter at once, and the
caller reads it at the start and the end of each timed repetition; ``energy_over()`` turns
those spans into joules per source (CPU package via RAPL, each GPU via NVML's total-energy
counter), counting only the sources the test used (``energy_sources()``).

Polls never overlap: the thread and the window calls take the same lock, and the thread
sleeps on an Event until the next tick, so ``stop()`` is instant. A tick is kept cheap (one
psutil ``oneshot()`` on a reused Process object, a handful of /proc and sysfs reads) because on
a small machine the sampler competes with the benchmark for the same cores.

Every figure the machine cannot give is None, never 0.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import psutil

from lab import config, nvml, sensors

log = logging.getLogger(__name__)

# The shortest interval over which the child's CPU percentage is reported (seconds).
MIN_CPU_INTERVAL = 0.05
RAPL = "rapl"  # the CPU packages' energy source name; GPUs are "nvml:<index>"
# Major page faults of the engine during a test's timed repetitions above which the model was
# being paged. A model that fits faults 0 times after the warm-up; one that does not faults a
# few times per pass over the weights, since each fault reads ahead a large block of the file.
SWAP_FAULTS = 2
# A test whose mean CPU clock is below this share of the run's first-minute clock was throttled.
THROTTLE_CLOCK_RATIO = 0.9
REFERENCE_CLOCK_S = 60.0  # the "first minute" of a run, for the throttle reference clock


@dataclass
class Sample:
    """One reading. Field names are the ``samples`` table's columns (less run_id/test/tokens).

    ``t`` is seconds since the Sampler was created (monotonic clock; ``Sampler.now()`` reads
    the same clock). GPU figures are over all NVIDIA GPUs: memory and power summed, utilisation
    averaged, temperature the hottest. ``gpu_energy_j`` and ``rapl_energy_j`` are cumulative
    counters: only their differences mean something.
    """

    t: float
    rss_bytes: int | None = None
    cpu_percent: float | None = None  # psutil semantics: 100 = one core busy
    n_threads: int | None = None
    mem_available_bytes: int | None = None
    gpu_mem_used_bytes: int | None = None
    gpu_proc_mem_bytes: int | None = None  # the child's own VRAM
    gpu_util: float | None = None
    gpu_power_w: float | None = None
    gpu_temp_c: float | None = None
    gpu_energy_j: float | None = None
    rapl_energy_j: float | None = None
    major_faults: int | None = None  # the child's, cumulative
    paged_in_bytes: int | None = None  # the child's reads from storage (/proc/<pid>/io), cumulative
    swap_in_pages: int | None = None  # the machine's (/proc/vmstat pswpin), cumulative
    swap_out_pages: int | None = None
    cpu_freq_mhz: float | None = None  # the highest core clock
    cpu_temp_c: float | None = None  # the hottest CPU/SoC sensor
    throttle_count: int | None = None  # the kernel's thermal throttle events, cumulative
    board_power_w: float | None = None  # power rails of a board without RAPL/NVML
    board_energy_j: float | None = None  # their joules since the sampler started

    def to_row(self) -> dict[str, Any]:
        """The sample as a ``samples`` row (add run_id, test and tokens before storing)."""
        return asdict(self)


@dataclass
class WindowStats:
    """Figures for one test window (``begin_window()`` .. ``end_window()``)."""

    peak_rss_bytes: int | None
    peak_vram_bytes: int | None  # the child's own VRAM, when NVML lists the child
    mean_cpu_percent: float | None
    n_samples: int
    min_mem_available_bytes: int | None = None
    mean_cpu_freq_mhz: float | None = None
    max_cpu_temp_c: float | None = None


@dataclass
class EnergyReading:
    """Every counter at one instant: energy source name ("rapl", "nvml:0", "hwmon:ina3221"
    ...) -> cumulative joules (None: unreadable now), and the paging and throttle counters.
    ``t`` is on the Sampler's clock."""

    t: float
    counters: dict[str, float | None] = field(default_factory=dict)
    major_faults: int | None = None
    paged_in_bytes: int | None = None
    swap_in_pages: int | None = None
    swap_out_pages: int | None = None
    throttle_count: int | None = None


@dataclass
class EnergyFigures:
    """Energy over the timed repetitions of one test. ``energy_j`` sums the sources named in
    ``energy_source`` ("rapl+nvml:0"); ``by_source`` has every source the test used, None where
    its counter could not be read; ``per_rep_j`` is the counted energy of each repetition.
    All None when no used source could be read."""

    energy_j: float | None = None
    energy_source: str | None = None
    by_source: dict[str, float | None] = field(default_factory=dict)
    per_rep_j: list[float] | None = None
    seconds: float | None = None  # time the counted spans cover
    mean_power_w: float | None = None


# ---------------------------------------------------------------------------------------------
# RAPL


class RaplReader:
    """CPU package energy from /sys/class/powercap (Linux, Intel and recent AMD).

    The counters are microjoules that wrap at ``max_energy_range_uj``; ``read()`` unwraps them
    into joules since this reader was created, which is correct as long as it is read at least
    once per wrap period (minutes even at full load; the sampler reads it every tick).
    Since Linux 5.10 the files are root-only, and VMs rarely expose them: then ``ok`` is False.
    ``root`` is the powercap tree (default ``config.powercap_root()``).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self._domains: list[tuple[int, int]] = []  # (fd, max range in uJ)
        self._last: list[int] = []
        self._total_uj = 0
        self.ok = False
        root = str(config.powercap_root() if root is None else root)
        # Top-level domains only ("intel-rapl:0", not the "intel-rapl:0:0" cores sub-domain,
        # nor "intel-rapl-mmio:0" which is the same package again), and only "package-N",
        # since "psys" covers the whole platform and would count the packages twice.
        for path in sorted(glob.glob(os.path.join(glob.escape(root), "intel-rapl:*"))):
            if os.path.basename(path).count(":") != 1:
                continue
            try:
                with open(os.path.join(path, "name")) as fh:
                    if not fh.read().strip().startswith("package"):
                        continue
                with open(os.path.join(path, "max_energy_range_uj")) as fh:
                    max_range = int(fh.read())
                fd = os.open(os.path.join(path, "energy_uj"), os.O_RDONLY)
            except (OSError, ValueError):
                self.close()
                return
            self._domains.append((fd, max_range))
        try:
            self._last = [self._read_raw(fd) for fd, _ in self._domains]
        except (OSError, ValueError):
            self.close()
            return
        self.ok = bool(self._domains)

    @staticmethod
    def _read_raw(fd: int) -> int:
        # pread on a kept-open fd: sysfs re-generates the value on each read from offset 0,
        # and it saves an open/close per tick.
        return int(os.pread(fd, 32, 0))

    def read(self) -> float | None:
        """Joules consumed by all CPU packages since this reader was created; None if unreadable."""
        if not self.ok:
            return None
        try:
            for i, (fd, max_range) in enumerate(self._domains):
                raw = self._read_raw(fd)
                delta = raw - self._last[i]
                if delta < 0:  # the counter wrapped
                    delta += max_range
                self._total_uj += delta
                self._last[i] = raw
        except (OSError, ValueError):
            self.close()
            return None
        return self._total_uj / 1e6

    def close(self) -> None:
        """Release the open files; the reader gives None from now on."""
        for fd, _ in self._domains:
            try:
                os.close(fd)
            except OSError:
                pass
        self._domains = []
        self.ok = False

    def __del__(self) -> None:
        self.close()


def mem_available() -> int | None:
    """The machine's available memory in bytes (``MemAvailable``), or None if unreadable.

    On Linux /proc/meminfo is scanned directly: psutil.virtual_memory() parses every line and
    costs ~8x more, which matters at 10 ticks a second on a 2-core machine.
    """
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    try:  # no /proc (macOS, Windows), or a kernel older than 3.14 without MemAvailable
        return int(psutil.virtual_memory().available)
    except (OSError, RuntimeError):
        return None


def swap_counters() -> tuple[int | None, int | None]:
    """Pages swapped in and out since boot (/proc/vmstat ``pswpin``/``pswpout``); None where
    the kernel does not say (no /proc, or not Linux)."""
    found: dict[bytes, int] = {}
    try:
        with open("/proc/vmstat", "rb") as fh:
            for line in fh:
                if line.startswith(b"pswp"):
                    key, _, value = line.partition(b" ")
                    found[key] = int(value)
    except (OSError, ValueError):
        pass
    return found.get(b"pswpin"), found.get(b"pswpout")


def process_paging(pid: int) -> tuple[int | None, int | None]:
    """A process's major page faults (/proc/<pid>/stat ``majflt``) and bytes it caused to be
    read from storage (/proc/<pid>/io ``read_bytes``); None for what cannot be read."""
    faults = read_bytes = None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # fields after the ")" that closes the command name: state is field 3, majflt 12
            faults = int(fh.read().rpartition(b")")[2].split()[9])
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/io", "rb") as fh:
            for line in fh:
                if line.startswith(b"read_bytes:"):
                    read_bytes = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return faults, read_bytes


def rapl_readable() -> bool:
    """True when this process can read CPU package energy (RAPL) on this machine."""
    reader = RaplReader()
    ok = reader.ok and reader.read() is not None
    reader.close()
    return ok


def nvml_available() -> bool:
    """True when NVML started (an NVIDIA driver is loaded)."""
    return nvml.available()


def energy_sources(offloaded_layers: int, child_gpus: Iterable[int], all_gpus: Iterable[int],
                   board: Iterable[str] = ()) -> list[str]:
    """The energy counters a test uses: the CPU packages always; the GPUs only when layers are
    offloaded, and then those where NVML lists the engine child (all GPUs NVML sees when it
    lists no process, as in a container whose pid namespace hides host pids); and the board's
    power monitors (``Sampler.board_sources``, read only where neither RAPL nor NVML is)."""
    board = list(board)
    if offloaded_layers <= 0:
        return [RAPL] + board
    gpus = sorted(set(child_gpus)) or sorted(set(all_gpus))
    return [RAPL] + [f"nvml:{i}" for i in gpus] + board


def energy_over(spans: list[tuple[EnergyReading, EnergyReading]], sources: list[str]) -> EnergyFigures:
    """Energy of the timed spans (start and end counter readings of each repetition), summed
    over the ``sources`` whose counter was readable at both ends of every span. A counter that
    went backwards (a driver reload) makes its source unreadable for the test; nothing is
    estimated."""
    if not spans:
        return EnergyFigures(by_source=dict.fromkeys(sources))
    deltas: dict[str, list[float] | None] = {}
    for source in sources:
        values: list[float] | None = []
        for start, end in spans:
            delta = _counter_delta(start.counters.get(source), end.counters.get(source))
            if delta is None:
                values = None
                break
            values.append(delta)  # type: ignore[union-attr]
        deltas[source] = values
    counted = [s for s in sources if deltas[s] is not None]
    by_source = {s: (sum(deltas[s]) if deltas[s] is not None else None) for s in sources}  # type: ignore[arg-type]
    if not counted:
        return EnergyFigures(by_source=by_source)
    per_rep = [sum(deltas[s][i] for s in counted) for i in range(len(spans))]  # type: ignore[index]
    total = sum(per_rep)
    seconds = sum(end.t - start.t for start, end in spans)
    return EnergyFigures(
        energy_j=total, energy_source="+".join(counted), by_source=by_source, per_rep_j=per_rep,
        seconds=seconds, mean_power_w=total / seconds if seconds > 0 else None,
    )


# ---------------------------------------------------------------------------------------------
# The sampler


class WindowTag:
    """The name of the test a sample belongs to. The sampler thread reads a sample and hands it
    over a moment later; a test that began in between must not claim it (its memory is the
    previous state's), so only samples read after the test's start carry its name."""

    def __init__(self) -> None:
        self.name: str | None = None
        self._since: float | None = None

    def begin(self, name: str, sampler: "Sampler | None") -> None:
        self._since = sampler.now() if sampler is not None else None  # before the name: see of()
        self.name = name

    def end(self, rows: list[dict[str, Any]] | None = None, engine_mono: float | None = None,
            sampler: "Sampler | None" = None) -> None:
        """The test ended. ``engine_mono``: the engine's ``time.monotonic()`` at its end (one
        clock for every process of the machine). The engine goes on to the next test before this
        process hears of the end, so buffered sample ``rows`` read after that instant lose the
        test's name."""
        name, self.name = self.name, None
        if rows is None or engine_mono is None or sampler is None:
            return
        until = sampler.at(engine_mono)
        for row in rows:
            if row.get("test") == name and row.get("t") is not None and row["t"] > until:
                row["test"] = None

    def of(self, sample: Sample) -> str | None:
        name, since = self.name, self._since
        return name if name is not None and since is not None and sample.t >= since else None


class Sampler:
    """Samples the process ``pid`` every ``interval`` seconds on a daemon thread.

    ``on_sample`` gets every Sample on the sampler thread (keep it short; an exception in it is
    logged and sampling goes on). ``latest`` is the newest Sample, for UIs.
    """

    def __init__(self, pid: int, interval: float = 0.1,
                 on_sample: Callable[[Sample], None] | None = None) -> None:
        self.pid = pid
        self.interval = interval
        self.on_sample = on_sample
        self.latest: Sample | None = None
        self._t0 = time.monotonic()
        self._lock = threading.Lock()  # one poll at a time: the thread's ticks and window reads
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._window: list[Sample] | None = None
        self._callback_failed = False
        self._gpu_handles = nvml.handles()  # [] without NVML; NVML starts once per process
        self.child_gpus: set[int] = set()  # NVML indices of the GPUs where the child holds memory
        self._rapl = RaplReader()
        self._clock = sensors.CpuClock()
        self._temp = sensors.CpuTemperature()
        self._throttle = sensors.ThrottleCounter()
        # A board's rails include the CPU and GPU: read them only where nothing finer is there.
        self._board = sensors.BoardPower() if not (self._rapl.ok or self._gpu_handles) else None
        self._first_clocks: list[float] = []  # CPU clocks of the first minute: the throttle reference
        # Primed last, so that opening the readers above does not stretch the first interval.
        try:
            self._proc: psutil.Process | None = psutil.Process(pid)
            self._proc.cpu_percent(None)  # primes the counter; the first sample's cpu is None
            self._cpu_since = time.monotonic()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            self._proc = None

    # -- public --------------------------------------------------------------------------------

    def at(self, mono: float) -> float:
        """A ``time.monotonic()`` reading of any process on this machine, on this sampler's clock."""
        return mono - self._t0

    def now(self) -> float:
        """The current time on the samples' clock (seconds since this Sampler was created)."""
        return time.monotonic() - self._t0

    def start(self) -> None:
        """Start the background thread; the first sample is taken at once."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"sampler-{self.pid}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and join the thread. Safe to call twice and after the child exited."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._rapl.close()
        for reader in (self._clock, self._temp, self._throttle, self._board):
            if reader is not None:
                reader.close()

    def begin_window(self) -> None:
        """Start a test window: take a sample (with the energy counters) right now."""
        with self._lock:
            self._window = []
            sample = self._take()
        self._emit(sample)

    @property
    def gpu_indices(self) -> list[int]:
        """NVML indices of every GPU this sampler reads."""
        return [key for key, _ in self._gpu_handles]

    @property
    def board_sources(self) -> list[str]:
        """The board power monitors' energy sources ("hwmon-power:ina3221" ...); [] where
        RAPL or NVML is read instead, or where the board has none."""
        return list(self._board.sources) if self._board is not None else []

    def reference_clock_mhz(self) -> float | None:
        """The mean CPU clock over the first minute of sampling (the run's own reference for
        ``throttled``); None where no clock is readable."""
        with self._lock:
            return _mean(self._first_clocks)

    def read_energy(self) -> EnergyReading:
        """Read every counter now: RAPL (all CPU packages), each GPU's total energy, the
        board's rails (where read), the child's major faults and storage reads, the machine's
        swap traffic and the thermal throttle counter."""
        with self._lock:
            t = self.now()
            counters: dict[str, float | None] = {RAPL: self._rapl.read() if self._rapl.ok else None}
            for key, handle in self._gpu_handles:
                counters[f"nvml:{key}"] = nvml.read_energy_j(handle, key)
            if self._board is not None:
                counters.update(self._board.read(t))
            faults, read_bytes = process_paging(self.pid) if self._proc is not None else (None, None)
            swap_in, swap_out = swap_counters()
            return EnergyReading(t=t, counters=counters, major_faults=faults, paged_in_bytes=read_bytes,
                                 swap_in_pages=swap_in, swap_out_pages=swap_out,
                                 throttle_count=self._throttle.read() if self._throttle.ok else None)

    def end_window(self) -> WindowStats:
        """Close the test window: take a last sample now and summarise the window's samples."""
        with self._lock:
            if self._window is None:
                raise RuntimeError("end_window() called without begin_window()")
            sample = self._take()
            window, self._window = self._window, None
        self._emit(sample)
        return summarize(window)

    # -- internals -----------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                sample = self._take()
            self._emit(sample)
            next_tick += self.interval
            now = time.monotonic()
            if next_tick < now:  # a slow tick: skip the missed ones instead of bursting
                next_tick = now + self.interval
            self._stop.wait(next_tick - now)

    def _take(self) -> Sample:
        """One poll. Called with the lock held."""
        sample = Sample(t=self.now())
        self._read_process(sample)
        sample.mem_available_bytes = mem_available()
        if self._gpu_handles:
            self._read_gpus(sample)
        if self._rapl.ok:
            sample.rapl_energy_j = self._rapl.read()
        self._read_heat(sample)
        self.latest = sample
        if self._window is not None:
            self._window.append(sample)
        return sample

    def _emit(self, sample: Sample) -> None:
        # Outside the lock: a slow callback (a database write) must not hold up a window read,
        # and a callback may itself call begin_window()/end_window().
        if self.on_sample is None:
            return
        try:
            self.on_sample(sample)
        except Exception:  # a UI or store callback must never stop the measurement
            if not self._callback_failed:
                log.exception("sampler on_sample callback failed; sampling goes on")
                self._callback_failed = True

    def _read_process(self, sample: Sample) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            with proc.oneshot():
                # A zombie (exited, not yet reaped) reads as 0 bytes: that is not a figure.
                if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                    self._proc = None
                    return
                sample.rss_bytes = int(proc.memory_info().rss)
                # CPU time moves in 10 ms jiffies, so a percentage over a few ms (the priming
                # call, or a window sample right after a tick) is noise: report None and keep
                # the baseline for the next, longer interval.
                now = time.monotonic()
                if now - self._cpu_since >= MIN_CPU_INTERVAL:
                    sample.cpu_percent = float(proc.cpu_percent(None))
                    self._cpu_since = now
                sample.n_threads = int(proc.num_threads())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self._proc = None  # gone for good; keep sampling the machine until stop()
            sample.rss_bytes = sample.cpu_percent = sample.n_threads = None
        except psutil.AccessDenied:
            sample.rss_bytes = sample.cpu_percent = sample.n_threads = None

    def _read_heat(self, sample: Sample) -> None:
        if self._proc is not None:
            sample.major_faults, sample.paged_in_bytes = process_paging(self.pid)
        sample.swap_in_pages, sample.swap_out_pages = swap_counters()
        if self._clock.ok:
            sample.cpu_freq_mhz = self._clock.read()
            if sample.cpu_freq_mhz is not None and sample.t <= REFERENCE_CLOCK_S:
                self._first_clocks.append(sample.cpu_freq_mhz)
        if self._temp.ok:
            sample.cpu_temp_c = self._temp.read()
        if self._throttle.ok:
            sample.throttle_count = self._throttle.read()
        if self._board is not None and self._board.ok:
            joules = self._board.read(sample.t)
            sample.board_power_w = self._board.power_w
            sample.board_energy_j = sum(joules.values()) if None not in joules.values() else None  # type: ignore[arg-type]

    def _read_gpus(self, sample: Sample) -> None:
        readings = nvml.read_gpus(self._gpu_handles, pid=self.pid, details=False)
        used = [g.memory_used for g in readings]
        power = [g.power_w for g in readings]
        energy = [g.energy_j for g in readings]
        util = [g.util for g in readings if g.util is not None]
        temps = [g.temp_c for g in readings if g.temp_c is not None]
        proc_mem = [g.proc_memory for g in readings if g.proc_memory is not None]
        self.child_gpus.update(g.index for g in readings if g.proc_memory)
        # Sums only when every GPU answered: a partial sum would pass for the whole.
        sample.gpu_mem_used_bytes = sum(used) if used and None not in used else None  # type: ignore[arg-type]
        sample.gpu_proc_mem_bytes = sum(proc_mem) if proc_mem else None
        sample.gpu_util = sum(util) / len(util) if util else None
        sample.gpu_power_w = sum(power) if power and None not in power else None  # type: ignore[arg-type]
        sample.gpu_temp_c = max(temps) if temps else None
        sample.gpu_energy_j = sum(energy) if energy and None not in energy else None  # type: ignore[arg-type]


def _counter_delta(first: float | None, last: float | None) -> float | None:
    if first is None or last is None or last < first:  # absent, or reset in between
        return None
    return last - first


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(window: list[Sample]) -> WindowStats:
    """Peak memory and mean CPU over a list of samples (one test window)."""
    if not window:
        return WindowStats(None, None, None, 0)
    rss = [s.rss_bytes for s in window if s.rss_bytes is not None]
    own_vram = [s.gpu_proc_mem_bytes for s in window if s.gpu_proc_mem_bytes is not None]
    available = [s.mem_available_bytes for s in window if s.mem_available_bytes is not None]
    temps = [s.cpu_temp_c for s in window if s.cpu_temp_c is not None]
    return WindowStats(
        peak_rss_bytes=max(rss) if rss else None,
        # the child's own VRAM only: the device-wide figure includes other processes (a
        # desktop, another job) and stays in the samples for whoever wants it
        peak_vram_bytes=max(own_vram) if own_vram else None,
        mean_cpu_percent=_mean([s.cpu_percent for s in window if s.cpu_percent is not None]),
        n_samples=len(window),
        min_mem_available_bytes=min(available) if available else None,
        mean_cpu_freq_mhz=_mean([s.cpu_freq_mhz for s in window if s.cpu_freq_mhz is not None]),
        max_cpu_temp_c=max(temps) if temps else None,
    )


def _spans_delta(spans: list[tuple[EnergyReading, EnergyReading]], name: str) -> int | None:
    """The increase of one counter over the timed spans; None when it was unreadable at either
    end of a span or went backwards (a new process, a reset)."""
    if not spans:
        return None
    total = 0
    for start, end in spans:
        delta = _counter_delta(getattr(start, name), getattr(end, name))
        if delta is None:
            return None
        total += int(delta)
    return total


def result_figures(spans: list[tuple[EnergyReading, EnergyReading]], window: WindowStats | None,
                 reference_clock_mhz: float | None) -> dict[str, Any]:
    """A result's paging and heat columns from its timed spans (``read_energy()`` at the start
    and end of each repetition) and its window: major faults and storage reads of the engine,
    the machine's swap-ins/outs, the lowest available memory, the mean CPU clock and hottest
    temperature, and the two flags. ``swapped`` is 1 when the major faults exceed
    ``SWAP_FAULTS``; ``throttled`` is 1 when the throttle counter rose or the clock fell below
    ``THROTTLE_CLOCK_RATIO`` of the run's first-minute clock. A flag is None (NULL) when
    nothing it is decided on could be read."""
    faults = _spans_delta(spans, "major_faults")
    throttle_events = _spans_delta(spans, "throttle_count")
    clock = window.mean_cpu_freq_mhz if window is not None else None
    signals = [] if throttle_events is None else [throttle_events > 0]
    if clock is not None and reference_clock_mhz:
        signals.append(clock < THROTTLE_CLOCK_RATIO * reference_clock_mhz)
    return {
        "major_faults": faults,
        "paged_in_bytes": _spans_delta(spans, "paged_in_bytes"),
        "swap_in_pages": _spans_delta(spans, "swap_in_pages"),
        "swap_out_pages": _spans_delta(spans, "swap_out_pages"),
        "min_mem_available_bytes": window.min_mem_available_bytes if window is not None else None,
        "mean_cpu_freq_mhz": clock,
        "max_cpu_temp_c": window.max_cpu_temp_c if window is not None else None,
        "swapped": None if faults is None else int(faults > SWAP_FAULTS),
        "throttled": int(any(signals)) if signals else None,
    }

