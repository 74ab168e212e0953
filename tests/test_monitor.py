"""lab.monitor: a real Sampler on real child processes, real /proc, real threads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from lab import monitor
from lab.monitor import EnergyReading, RaplReader, Sample, Sampler, energy_over, energy_sources, summarize
from lab.store import _SAMPLE_COLUMNS

MIB = 1 << 20
BIG = 200 * MIB

# A child that grows and shrinks its memory on command, answering "ok" when done.
CHILD = r"""
import sys, time
held = None
print("ok", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "grow":
        held = bytearray(b"\x01") * %d  # every page written, so it is resident
    elif cmd == "free":
        held = None  # a large block is munmap'ed: RSS drops at once
    elif cmd == "spin":
        end = time.monotonic() + 0.4
        while time.monotonic() < end:
            pass
    print("ok", flush=True)
""" % BIG


class Child:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.pid = self.proc.pid
        assert self.proc.stdout.readline().strip() == "ok"

    def do(self, cmd: str) -> None:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def vm_hwm(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def child() -> Iterator[Child]:
    c = Child()
    yield c
    c.close()


needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def test_sample_fields_are_the_samples_columns() -> None:
    row = Sample(t=0.0).to_row()
    assert set(row) == set(_SAMPLE_COLUMNS) - {"run_id", "test", "tokens"}
    assert all(v is None for k, v in row.items() if k != "t")


@needs_proc
def test_windows_see_peak_rss_of_their_own_test_only(child: Child) -> None:
    seen: list[Sample] = []
    sampler = Sampler(child.pid, interval=0.02, on_sample=seen.append)
    sampler.start()
    try:
        sampler.begin_window()
        time.sleep(0.15)
        small = sampler.end_window()

        child.do("grow")
        tb = sampler.now()
        sampler.begin_window()
        time.sleep(0.15)
        big = sampler.end_window()
        te = sampler.now()
        hwm = child.vm_hwm()

        child.do("free")
        sampler.begin_window()
        time.sleep(0.15)
        after = sampler.end_window()
    finally:
        sampler.stop()

    assert abs(big.peak_rss_bytes - hwm) / hwm < 0.05
    assert big.peak_rss_bytes > BIG
    assert small.peak_rss_bytes < big.peak_rss_bytes - BIG * 0.9
    assert after.peak_rss_bytes < big.peak_rss_bytes - BIG * 0.9
    # The window holds the samples between its begin and end reads; at most one tick can fall
    # between ``tb`` and begin_window()'s own sample, and one between end_window() and ``te``.
    inside = [s for s in seen if tb <= s.t <= te]
    assert len(inside) - 2 <= big.n_samples <= len(inside)
    assert big.n_samples >= 4
    assert sampler.latest is max(seen, key=lambda s: s.t)
    assert all(s.mem_available_bytes and s.mem_available_bytes > 0 for s in seen)
    assert all(s.n_threads == 1 for s in seen)
    # the first sample comes right after priming psutil: no figure rather than a fake 0.0
    assert seen[0].cpu_percent is None


@needs_proc
def test_cpu_percent_of_a_busy_child(child: Child) -> None:
    sampler = Sampler(child.pid, interval=0.05)
    sampler.start()
    try:
        time.sleep(0.06)
        sampler.begin_window()
        child.do("spin")
        stats = sampler.end_window()
    finally:
        sampler.stop()
    assert stats.mean_cpu_percent is not None and stats.mean_cpu_percent > 50


def test_energy_is_none_without_a_counter(child: Child, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIGHTSIZER_POWERCAP", str(tmp_path / "empty"))  # no RAPL domain at all
    sampler = Sampler(child.pid, interval=0.02)
    sampler.start()
    start = sampler.read_energy()
    time.sleep(0.06)
    end = sampler.read_energy()
    sampler.stop()
    assert start.counters["rapl"] is None and end.t > start.t
    figures = energy_over([(start, end)], energy_sources(0, sampler.child_gpus, sampler.gpu_indices))
    assert figures.energy_j is None and figures.energy_source is None and figures.mean_power_w is None
    assert figures.by_source == {"rapl": None} and figures.per_rep_j is None
    assert sampler.latest.rapl_energy_j is None


def test_stop_after_the_child_exited_does_not_raise() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    sampler = Sampler(proc.pid, interval=0.02)
    sampler.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # exited but not reaped: a zombie reads as 0 B in /proc
        if Path(f"/proc/{proc.pid}/stat").exists() and Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] == "Z":
            break
        time.sleep(0.01)
    time.sleep(0.05)
    assert sampler.latest.rss_bytes is None
    proc.wait()  # now gone altogether
    time.sleep(0.05)
    assert sampler.latest.rss_bytes is None and sampler.latest.mem_available_bytes is not None
    sampler.begin_window()
    stats = sampler.end_window()
    assert stats.peak_rss_bytes is None and stats.n_samples == 2
    sampler.stop()
    sampler.stop()


def test_a_pid_that_does_not_exist() -> None:
    pid = 2**22 + 12345  # above the default pid_max
    sampler = Sampler(pid, interval=0.02)
    sampler.begin_window()
    stats = sampler.end_window()
    assert stats.peak_rss_bytes is None and stats.mean_cpu_percent is None
    sampler.stop()  # never started: still fine


def test_first_sample_at_once_and_stop_is_instant() -> None:
    sampler = Sampler(os.getpid(), interval=30)
    t0 = time.monotonic()
    sampler.start()
    while sampler.latest is None and time.monotonic() - t0 < 2:
        time.sleep(0.005)
    assert sampler.latest is not None and sampler.latest.rss_bytes > 0
    sampler.stop()
    assert time.monotonic() - t0 < 1.0


def test_a_sample_read_before_a_test_began_is_not_that_tests() -> None:
    from lab.monitor import WindowTag

    sampler = Sampler(os.getpid(), interval=30)
    tag = WindowTag()
    before = sampler._take()  # read by the sampler thread, handed over only after the start below
    tag.begin("pp16", sampler)
    after = sampler._take()
    assert after.t >= before.t
    assert (tag.of(before), tag.of(after)) == (None, "pp16")
    tag.end()
    assert tag.of(after) is None
    tag.begin("tg8", None)  # no sampler: nothing is claimed
    assert tag.of(after) is None


def test_samples_read_after_the_engine_ended_a_test_lose_its_name() -> None:
    from lab.monitor import WindowTag

    sampler = Sampler(os.getpid(), interval=30)
    tag = WindowTag()
    tag.begin("load u1", sampler)
    inside = sampler._take().to_row()
    engine_end = time.monotonic()  # what the engine stamps on its TEST_END
    time.sleep(0.01)
    late = sampler._take()  # the engine is on the next level; the end has not arrived here yet
    rows = [dict(inside, test=tag.of(sampler._take())), dict(late.to_row(), test=tag.of(late))]
    assert [r["test"] for r in rows] == ["load u1", "load u1"]
    tag.end(rows, engine_end, sampler)
    assert [r["test"] for r in rows] == ["load u1", None]
    assert sampler.at(engine_end) < late.t


def test_end_window_without_begin_is_a_bug() -> None:
    sampler = Sampler(os.getpid())
    with pytest.raises(RuntimeError):
        sampler.end_window()


def test_summarize_gives_peaks_and_mean_cpu() -> None:
    window = [Sample(t=0.0, rss_bytes=5, cpu_percent=None, gpu_proc_mem_bytes=None),
              Sample(t=0.1, rss_bytes=9, cpu_percent=150.0, gpu_proc_mem_bytes=3),
              Sample(t=0.2, rss_bytes=None, cpu_percent=50.0, gpu_proc_mem_bytes=2)]
    stats = summarize(window)
    assert (stats.peak_rss_bytes, stats.peak_vram_bytes, stats.mean_cpu_percent, stats.n_samples) == (9, 3, 100.0, 3)
    assert summarize([]).n_samples == 0 and summarize([]).peak_rss_bytes is None


def test_energy_sources_are_the_devices_the_test_used() -> None:
    # no layer offloaded: the CPU packages alone, however many GPUs there are
    assert energy_sources(0, child_gpus={0}, all_gpus=[0, 1]) == ["rapl"]
    # offloaded: the CPU plus the GPUs where the engine holds memory
    assert energy_sources(13, child_gpus={1}, all_gpus=[0, 1]) == ["rapl", "nvml:1"]
    # NVML lists no process (a container's pid namespace): every GPU it sees
    assert energy_sources(13, child_gpus=set(), all_gpus=[1, 0]) == ["rapl", "nvml:0", "nvml:1"]
    assert energy_sources(13, child_gpus=set(), all_gpus=[]) == ["rapl"]


def _r(t: float, **counters: float | None) -> EnergyReading:
    return EnergyReading(t=t, counters={k.replace("_", ":"): v for k, v in counters.items()})


def test_energy_over_counts_each_repetition_and_each_used_source() -> None:
    # two repetitions; between them (untimed: KV clear, depth fill) the counters move a lot
    spans = [(_r(1.0, rapl=10.0, nvml_0=100.0, nvml_1=7.0), _r(1.5, rapl=12.0, nvml_0=130.0, nvml_1=8.0)),
             (_r(9.0, rapl=50.0, nvml_0=900.0, nvml_1=9.0), _r(10.0, rapl=53.0, nvml_0=950.0, nvml_1=9.5))]
    cpu = energy_over(spans, ["rapl"])
    assert (cpu.energy_j, cpu.energy_source, cpu.per_rep_j) == (5.0, "rapl", [2.0, 3.0])
    assert cpu.seconds == pytest.approx(1.5) and cpu.mean_power_w == pytest.approx(5.0 / 1.5)
    gpu = energy_over(spans, ["rapl", "nvml:0"])  # GPU 1 holds no layer: not counted
    assert (gpu.energy_j, gpu.energy_source, gpu.per_rep_j) == (85.0, "rapl+nvml:0", [32.0, 53.0])
    assert gpu.by_source == {"rapl": 5.0, "nvml:0": 80.0}


def test_an_unreadable_or_reset_counter_is_left_out_and_named() -> None:
    spans = [(_r(0.0, rapl=None, nvml_0=100.0), _r(1.0, rapl=None, nvml_0=160.0)),
             (_r(2.0, rapl=None, nvml_0=200.0), _r(3.0, rapl=None, nvml_0=240.0))]
    figures = energy_over(spans, ["rapl", "nvml:0"])
    assert (figures.energy_j, figures.energy_source) == (100.0, "nvml:0")
    assert figures.by_source == {"rapl": None, "nvml:0": 100.0}
    # a driver reload in the second repetition: that counter cannot be trusted for the test
    reset = [spans[0], (_r(2.0, nvml_0=200.0), _r(3.0, nvml_0=3.0))]
    figures = energy_over(reset, ["rapl", "nvml:0"])
    assert figures.energy_j is None and figures.energy_source is None and figures.per_rep_j is None
    assert figures.by_source == {"rapl": None, "nvml:0": None}
    assert energy_over([], ["rapl"]).energy_j is None


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_rapl_reader_unwraps_and_counts_packages_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real powercap-shaped tree in a temporary folder (this VM has none)."""
    root = tmp_path / "powercap"
    for name, domain, energy in [("intel-rapl:0", "package-0", 900_000), ("intel-rapl:1", "package-1", 10),
                                 ("intel-rapl:0:0", "core", 5), ("intel-rapl:2", "psys", 7),
                                 ("intel-rapl-mmio:0", "package-0", 3)]:
        _write(root / name / "name", domain + "\n")
        _write(root / name / "max_energy_range_uj", "1000000\n")
        _write(root / name / "energy_uj", f"{energy}\n")
    reader = RaplReader(root)
    assert reader.ok and reader.read() == 0.0
    _write(root / "intel-rapl:0" / "energy_uj", "100000\n")  # wrapped: +200_000 uJ
    _write(root / "intel-rapl:1" / "energy_uj", "50010\n")  # +50_000 uJ
    _write(root / "intel-rapl:0:0" / "energy_uj", "999999\n")  # a sub-domain: not counted
    assert reader.read() == pytest.approx(0.25)
    reader.close()
    assert reader.read() is None
    (root / "intel-rapl:1" / "energy_uj").chmod(0o000)
    if os.geteuid() != 0:  # root reads anything
        assert not RaplReader(root).ok


def _package_domains_readable(root: Path) -> bool:
    """The documented rule, from the files: every top-level package domain can be read."""
    domains = [d for d in root.glob("intel-rapl:*") if d.name.count(":") == 1
               and (d / "name").exists() and (d / "name").read_text().startswith("package")]
    return bool(domains) and all(os.access(d / "energy_uj", os.R_OK) for d in domains)


def test_rapl_readable_matches_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _package_domains_readable(Path("/sys/class/powercap"))
    assert monitor.rapl_readable() is expected
    if expected:  # readable: the reader opens every package and starts from zero joules
        reader = RaplReader()
        assert reader.ok and reader.read() is not None and reader.read() >= 0.0
        reader.close()
    # and the same rule on a tree of our own, readable then empty
    root = tmp_path / "powercap"
    _write(root / "intel-rapl:0" / "name", "package-0\n")
    _write(root / "intel-rapl:0" / "max_energy_range_uj", "1000\n")
    _write(root / "intel-rapl:0" / "energy_uj", "5\n")
    monkeypatch.setenv("RIGHTSIZER_POWERCAP", str(root))
    assert _package_domains_readable(root) is True and monitor.rapl_readable() is True
    monkeypatch.setenv("RIGHTSIZER_POWERCAP", str(tmp_path / "none"))
    assert monitor.rapl_readable() is False


def test_sampler_reads_rapl_energy_through_a_wrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "powercap"
    _write(root / "intel-rapl:0" / "name", "package-0\n")
    _write(root / "intel-rapl:0" / "max_energy_range_uj", "1000000\n")
    _write(root / "intel-rapl:0" / "energy_uj", "999000\n")
    monkeypatch.setenv("RIGHTSIZER_POWERCAP", str(root))
    sampler = Sampler(os.getpid())
    start = sampler.read_energy()
    _write(root / "intel-rapl:0" / "energy_uj", "250000\n")  # wrapped: +251_000 uJ
    end = sampler.read_energy()
    sampler.stop()
    figures = energy_over([(start, end)], ["rapl"])
    assert figures.energy_j == pytest.approx(0.251) and figures.energy_source == "rapl"


def test_mem_available_is_the_kernels() -> None:
    import psutil

    assert abs(monitor.mem_available() - psutil.virtual_memory().available) < 256 * MIB


class _ScriptedNvml:
    """A stand-in for pynvml with two GPUs, for the code paths this CPU-only machine cannot run
    (NVML itself is not present here). GPU 1 has no energy counter and no power reading."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.energy_calls = 0
        self.energy_mj = 1_000_000

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetMemoryInfo(self, h: int):
        return type("M", (), {"total": 80 * 2**30, "used": (h + 1) * 2**30})()

    def nvmlDeviceGetUtilizationRates(self, h: int):
        return type("U", (), {"gpu": 50 + 10 * h})()

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise self.NVMLError_NotSupported()
        return 250_000

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 60 + h

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        self.energy_calls += 1
        if h == 1:
            raise self.NVMLError_NotSupported()
        self.energy_mj += 500_000
        return self.energy_mj

    def nvmlDeviceGetComputeRunningProcesses(self, h: int):
        entry = type("P", (), {"pid": self.pid, "usedGpuMemory": 3 * 2**30})()
        other = type("P", (), {"pid": self.pid + 1, "usedGpuMemory": 7 * 2**30})()
        return [entry, other] if h == 0 else [other]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int):
        # the same process listed again with the same total: must not be counted twice
        return [type("P", (), {"pid": self.pid, "usedGpuMemory": 3 * 2**30})()] if h == 0 else []


def test_gpu_figures_are_aggregated_and_unsupported_calls_become_none(monkeypatch: pytest.MonkeyPatch) -> None:
    from lab import hardware, nvml
    from lab.tui import data

    fake = _ScriptedNvml(os.getpid())
    monkeypatch.setattr(nvml, "_state", {"module": fake, "reason": "ok"})
    monkeypatch.setattr(nvml, "_unsupported", set())
    sampler = Sampler(os.getpid())
    sampler.begin_window()
    stats = sampler.end_window()
    s = sampler.latest
    assert s.gpu_mem_used_bytes == 3 * 2**30  # 1 GiB + 2 GiB over both GPUs
    assert s.gpu_proc_mem_bytes == 3 * 2**30  # our pid on GPU 0 only, listed twice, counted once
    assert s.gpu_util == 55.0 and s.gpu_temp_c == 61.0
    # a figure missing on one GPU makes the sum unknown, not a partial sum
    assert s.gpu_power_w is None and s.gpu_energy_j is None
    assert stats.peak_vram_bytes == 3 * 2**30
    # the engine holds memory on GPU 0 only: an offloaded test counts the CPU and GPU 0
    assert sampler.child_gpus == {0} and sampler.gpu_indices == [0, 1]
    assert energy_sources(5, sampler.child_gpus, sampler.gpu_indices) == ["rapl", "nvml:0"]
    first, second = sampler.read_energy(), sampler.read_energy()
    assert first.counters["nvml:1"] is None and second.counters["nvml:0"] - first.counters["nvml:0"] == 500.0
    figures = energy_over([(first, second)], ["nvml:0", "nvml:1"])
    assert (figures.energy_j, figures.energy_source) == (500.0, "nvml:0")
    # "not supported" is remembered: GPU 1's energy is asked once, GPU 0's on every reading
    calls = fake.energy_calls
    sampler.begin_window()
    assert fake.energy_calls == calls + 1
    assert [g.index for g in hardware.gpus()] == [0, 1]
    assert hardware.gpus()[1].power_limit_w is None  # no such function on the stand-in
    # the app's Machine screen reads the same way
    readings = data.read_gpus()
    assert [(g.index, g.memory_used, g.util, g.power_w, g.temp_c) for g in readings] == [
        (0, 2**30, 50.0, 250.0, 60.0), (1, 2 * 2**30, 60.0, None, 61.0)]


# --- paging and heat -------------------------------------------------------------------------

READER = r"""
import mmap, sys
f = open(sys.argv[1], "rb")
m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
print("ok", flush=True)
sys.stdin.readline()
total = sum(m[off] for off in range(0, len(m), 4096))  # touch every page
print("ok", flush=True)
sys.stdin.readline()
"""


def evict_from_page_cache(path: Path) -> None:
    """Drop a file's pages from the page cache, so that its next reader reads it from storage
    (and that reader's memory cgroup pays for the pages)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@needs_proc
def test_major_faults_and_storage_reads_of_the_child_are_counted(tmp_path: Path) -> None:
    from lab.hardware import model_storage

    if model_storage(tmp_path)[0] in ("tmpfs", "ramfs", None):
        pytest.skip("the temporary folder is in memory: its pages cannot be evicted and read again")
    data = tmp_path / "weights.bin"
    data.write_bytes(os.urandom(16 * MIB))
    evict_from_page_cache(data)
    proc = subprocess.Popen([sys.executable, "-c", READER, str(data)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        assert proc.stdout.readline().strip() == "ok"
        sampler = Sampler(proc.pid, interval=0.02)
        sampler.start()
        before = sampler.read_energy()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok"
        after = sampler.read_energy()
        sampler.stop()
    finally:
        proc.kill()
        proc.wait()
    faults = after.major_faults - before.major_faults
    read = after.paged_in_bytes - before.paged_in_bytes
    # every page came from storage: at least one fault (read-ahead brings the rest), and the file
    assert faults >= 1 and read >= 16 * MIB * 0.9
    assert before.swap_in_pages is not None and after.swap_in_pages >= before.swap_in_pages
    assert sampler.latest.major_faults == after.major_faults or sampler.latest.major_faults >= before.major_faults
    figures = monitor.result_figures([(before, after)], None, None)
    assert figures["major_faults"] == faults and figures["paged_in_bytes"] == read
    assert figures["swapped"] == int(faults > monitor.SWAP_FAULTS)


def _reading(t: float, faults: int | None, throttle: int | None = None) -> EnergyReading:
    return EnergyReading(t=t, major_faults=faults, paged_in_bytes=faults and faults * 131072,
                         swap_in_pages=0, swap_out_pages=0, throttle_count=throttle)


def test_swapped_is_decided_on_the_timed_repetitions_faults() -> None:
    limit = monitor.SWAP_FAULTS
    # the faults between repetitions (a depth fill, the warm-up) do not count
    calm = [(_reading(0, 10), _reading(1, 10)), (_reading(2, 500), _reading(3, 500 + limit))]
    figures = monitor.result_figures(calm, None, None)
    assert (figures["major_faults"], figures["swapped"]) == (limit, 0)
    paged = [(_reading(0, 10), _reading(1, 11)), (_reading(2, 500), _reading(3, 500 + limit))]
    figures = monitor.result_figures(paged, None, None)
    assert (figures["major_faults"], figures["swapped"]) == (limit + 1, 1)
    assert figures["paged_in_bytes"] == (limit + 1) * 131072
    from lab.select import is_swapped

    assert is_swapped(figures) and not is_swapped({"swapped": 0})
    assert not is_swapped({"swapped": None}) and not is_swapped({})
    # unreadable (another OS) or a counter that went backwards: NULL, not 0
    for spans in ([(_reading(0, None), _reading(1, 4))], [(_reading(0, 9), _reading(1, 4))], []):
        figures = monitor.result_figures(spans, None, None)
        assert figures["major_faults"] is None and figures["swapped"] is None


def test_throttled_from_the_kernel_counter_or_the_clock() -> None:
    from lab.monitor import WindowStats

    def window(mhz: float | None) -> WindowStats:
        return WindowStats(None, None, None, 3, min_mem_available_bytes=7, mean_cpu_freq_mhz=mhz, max_cpu_temp_c=70.0)

    still = [(_reading(0, 0, throttle=4), _reading(1, 0, throttle=4))]
    rising = [(_reading(0, 0, throttle=4), _reading(1, 0, throttle=6))]
    assert monitor.result_figures(still, window(None), None)["throttled"] == 0
    assert monitor.result_figures(rising, window(None), None)["throttled"] == 1
    no_counter = [(_reading(0, 0), _reading(1, 0))]
    assert monitor.result_figures(no_counter, window(1900.0), 2000.0)["throttled"] == 0
    figures = monitor.result_figures(no_counter, window(1700.0), 2000.0)  # below 90% of the reference
    assert figures["throttled"] == 1 and figures["mean_cpu_freq_mhz"] == 1700.0
    assert figures["max_cpu_temp_c"] == 70.0 and figures["min_mem_available_bytes"] == 7
    # neither a counter nor a clock (this VM): not measured
    assert monitor.result_figures(no_counter, window(None), None)["throttled"] is None
    assert monitor.result_figures(no_counter, window(1700.0), None)["throttled"] is None


def test_summarize_gives_the_lowest_available_memory_and_the_clock() -> None:
    window = [Sample(t=0.0, mem_available_bytes=900, cpu_freq_mhz=2000.0, cpu_temp_c=60.0),
              Sample(t=0.1, mem_available_bytes=300, cpu_freq_mhz=1000.0, cpu_temp_c=None),
              Sample(t=0.2, mem_available_bytes=None, cpu_freq_mhz=None, cpu_temp_c=65.5)]
    stats = summarize(window)
    assert (stats.min_mem_available_bytes, stats.mean_cpu_freq_mhz, stats.max_cpu_temp_c) == (300, 1500.0, 65.5)


def test_energy_sources_add_the_board_after_the_devices() -> None:
    assert energy_sources(0, set(), [], ["hwmon-power:ina3221"]) == ["rapl", "hwmon-power:ina3221"]
    assert energy_sources(5, {0}, [0], ["hwmon:x"]) == ["rapl", "nvml:0", "hwmon:x"]
