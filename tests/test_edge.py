"""What decides an edge deployment, measured for real: a model paged under a memory limit
(a cgroup), a sustained tg run, board power and clocks read from a kernel-shaped sysfs tree,
and the board's fingerprint."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from lab import hardware, monitor
from lab.sustained import Rep, sustained_figures
from test_monitor import evict_from_page_cache
from test_sensors import cpu_tree, jetson_orin_ina3221
from tiny_model import write_tiny_llama

MIB = 1 << 20


def rs(*args: str, db: Path, env: dict | None = None, cgroup: "MemoryCgroup | None" = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args, "--db", str(db)], capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
        preexec_fn=cgroup.join if cgroup is not None else None,
    )


# --- swapped: a real memory limit ------------------------------------------------------------


class MemoryCgroup:
    """A memory cgroup of our own (v2 where the unified hierarchy has the memory controller,
    else v1), the way ``systemd-run -p MemoryMax=`` would make one."""

    def __init__(self, name: str) -> None:
        unified = Path("/sys/fs/cgroup")
        v1 = unified / "memory"
        controllers = unified / "cgroup.controllers"
        if controllers.exists() and "memory" in controllers.read_text().split():
            self.path, self.limit_file, self.peak_file = unified / name, "memory.max", "memory.peak"
        elif (v1 / "memory.limit_in_bytes").exists():
            self.path, self.limit_file, self.peak_file = v1 / name, "memory.limit_in_bytes", "memory.max_usage_in_bytes"
        else:
            raise OSError("no memory cgroup controller is mounted")
        self.path.mkdir()
        if not (self.path / self.peak_file).exists():
            self.path.rmdir()
            raise OSError(f"this kernel has no {self.peak_file}")

    def join(self) -> None:
        """Move the calling process in (run in the child between fork and exec)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def limit(self, nbytes: int | None) -> None:
        (self.path / self.limit_file).write_text("max" if nbytes is None and self.limit_file == "memory.max"
                                                  else str(nbytes if nbytes is not None else -1))

    def peak(self) -> int:
        return int((self.path / self.peak_file).read_text())

    def reset_peak(self) -> None:
        (self.path / self.peak_file).write_text("0")

    def remove(self) -> None:
        self.path.rmdir()


@pytest.fixture
def cgroup() -> Iterator[MemoryCgroup]:
    try:
        group = MemoryCgroup(f"rightsizer-test-{os.getpid()}")
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup here ({exc}); run as root on Linux with cgroups")
    yield group
    group.remove()


def test_a_model_paged_under_a_memory_limit_is_flagged_swapped(cgroup: MemoryCgroup, tmp_path: Path) -> None:
    if hardware.model_storage(tmp_path)[0] in ("tmpfs", "ramfs", None):
        pytest.skip("the temporary folder is in memory: a memory limit cannot evict its pages")
    # ~56 MB of F32 weights that every generated token reads; fast to compute on any CPU
    model = write_tiny_llama(tmp_path / "wide.gguf", n_layer=2, n_embd=512, n_head=4, n_head_kv=2, n_ff=4096)
    size = model.stat().st_size
    db = tmp_path / "lab.db"
    args = ("bench", str(model), "-p", "0", "-n", "8", "-r", "3", "-t", "1", "-o", "json")

    evict_from_page_cache(model)
    free = rs(*args, db=db, cgroup=cgroup)  # no limit: how much the whole command needs
    assert free.returncode == 0, free.stderr
    [fits] = json.loads(free.stdout)
    need = cgroup.peak()
    assert fits["swapped"] is False and fits["major_faults"] <= monitor.SWAP_FAULTS

    # the command's own memory plus half the model: the other half is evicted and read again
    cgroup.limit(need - size // 2)
    cgroup.reset_peak()
    evict_from_page_cache(model)
    tight = rs(*args, db=db, cgroup=cgroup)
    assert tight.returncode == 0, tight.stderr
    [paged] = json.loads(tight.stdout)
    assert paged["swapped"] is True and paged["major_faults"] > monitor.SWAP_FAULTS
    # 24 timed tokens, each reading the evicted half again: far more than the file itself
    assert paged["paged_in_bytes"] > size
    assert cgroup.peak() <= need - size // 2
    # every output says so: the bench table, the stored row, ``results``
    listing = rs("results", "--test", "tg8", db=db)
    lines = [line for line in listing.stdout.splitlines() if "tg8" in line]
    assert len(lines) == 2 and sum("swapped" in line for line in lines) == 1
    stored = json.loads(rs("results", "-o", "json", db=db).stdout)
    assert sorted(r["swapped"] for r in stored) == [False, True]
    assert {r["major_faults"] for r in stored} == {fits["major_faults"], paged["major_faults"]}


# --- heat: a sustained run -------------------------------------------------------------------


def test_sustained_run_reports_decay_clocks_and_board_energy(tiny_gguf: Path, tmp_path: Path) -> None:
    """A real sustained tg run on a machine whose sysfs is a Jetson's (constant 2.2 GHz clock,
    a 6 W input rail): repetitions fill the time asked, and the figures come from them."""
    root = cpu_tree(tmp_path / "sys")
    jetson_orin_ina3221(root)
    env = {"RIGHTSIZER_SYSFS": str(root), "RIGHTSIZER_POWERCAP": str(tmp_path / "no-rapl")}
    db = tmp_path / "lab.db"
    out = rs("bench", str(tiny_gguf), "-p", "0", "-n", "32", "-r", "1", "-t", "1", "--sustained", "2", db=db, env=env)
    assert out.returncode == 0, out.stderr
    [row] = json.loads(rs("results", "-o", "json", db=db).stdout)
    ns = row["samples_ns"]
    # repeated until 2 s had passed: the last one started before, the whole run ended after
    assert len(ns) >= 2 and sum(ns[:-1]) < 2e9
    assert row["sustained_s"] == 2.0 and row["repetitions"] == len(ns)
    # shorter than two minutes: the first and last 30% are compared
    assert 0.3 * sum(ns) / 1e9 <= row["sustained_window_s"] <= 0.3 * 2.5
    # the windows' speeds are tokens over time of a run of repetitions from each end
    prefix = [32 * k * 1e9 / sum(ns[:k]) for k in range(1, len(ns) + 1)]
    suffix = [32 * k * 1e9 / sum(ns[-k:]) for k in range(1, len(ns) + 1)]
    assert any(row["sustained_first_ts"] == pytest.approx(v) for v in prefix)
    assert any(row["sustained_last_ts"] == pytest.approx(v) for v in suffix)
    first, last = row["sustained_first_ts"], row["sustained_last_ts"]
    assert row["sustained_decay_pct"] == pytest.approx((first - last) / first * 100)
    assert (row["sustained_first_mhz"], row["sustained_last_mhz"], row["clocks_dropped"]) == (2200.0, 2200.0, False)
    assert row["throttled"] is False and row["mean_cpu_freq_mhz"] == 2200.0 and row["max_cpu_temp_c"] == 45.5
    # the board's input rail, integrated over the timed repetitions
    assert row["energy_source"] == "hwmon-power:ina3221" and row["mean_power_w"] == pytest.approx(6.0)
    assert row["j_per_token"] == pytest.approx(row["energy_j"] / (32 * len(ns)))
    table = rs("bench", str(tiny_gguf), "-p", "0", "-n", "32", "-r", "1", "-t", "1", "--sustained", "1", db=db, env=env)
    [line] = [x for x in table.stdout.splitlines() if x.startswith("sustained ")]
    window = json.loads(rs("results", "-o", "json", "--limit", "1", db=db).stdout)[0]["sustained_window_s"]
    assert line.startswith(f"sustained tg32 for 1 s: first {window:.3g} s ") and line.endswith("clocks dropped: no")
    with sqlite3.connect(db) as conn:
        samples = conn.execute("select cpu_freq_mhz, cpu_temp_c, board_power_w, throttle_count from samples").fetchall()
    assert samples and all(s[:2] == (2200.0, 45.5) and s[2] == pytest.approx(6.0) and s[3] == 8 for s in samples)


def test_a_sustained_run_needs_a_tg_test(tiny_gguf: Path, tmp_path: Path) -> None:
    out = rs("bench", str(tiny_gguf), "-n", "0", "--sustained", "5", db=tmp_path / "lab.db")
    assert out.returncode == 1 and "--sustained takes" in out.stderr and "Traceback" not in out.stderr
    out = rs("bench", str(tiny_gguf), "--sustained", "0", db=tmp_path / "lab.db")
    assert out.returncode == 1 and "--sustained takes" in out.stderr


def test_sustained_windows_are_the_first_and_last_minute() -> None:
    # 180 s of 10 s repetitions, slowing from 10 t/s to 8 t/s after two minutes
    reps = [Rep(t, t + 10, 10_000_000_000, 100 if t < 120 else 80) for t in range(0, 180, 10)]
    clocks = [(t + 0.5, 2000.0 if t < 120 else 1500.0) for t in range(0, 180)]
    figures = sustained_figures(reps, clocks, 180)
    assert figures["sustained_window_s"] == 60
    assert (figures["sustained_first_ts"], figures["sustained_last_ts"]) == (10.0, 8.0)
    assert figures["sustained_decay_pct"] == pytest.approx(20.0)
    assert (figures["sustained_first_mhz"], figures["sustained_last_mhz"], figures["clocks_dropped"]) == (2000.0, 1500.0, 1)
    # under two minutes: first and last 30% (27 s of 90 s); no clock: not known
    short = sustained_figures(reps[:9], [(1.0, None)], 90)
    assert short["sustained_window_s"] == pytest.approx(27.0)
    assert short["sustained_first_ts"] == 10.0 and short["sustained_decay_pct"] == 0.0
    assert short["clocks_dropped"] is None and short["sustained_first_mhz"] is None
    # one repetition longer than the window: no speed can be given for it
    lone = sustained_figures([Rep(0, 100, 100_000_000_000, 500)], [], 100)
    assert lone["sustained_first_ts"] is None and lone["sustained_decay_pct"] is None
    assert sustained_figures([], [], 60)["sustained_s"] == 60


# --- the board's fingerprint -----------------------------------------------------------------


@pytest.fixture
def fresh_fingerprint() -> Iterator[None]:
    hardware._fingerprint.cache_clear()
    yield
    hardware._fingerprint.cache_clear()


def test_fingerprint_and_doctor_name_the_board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               fresh_fingerprint: None) -> None:
    from lab.cli.doctor import doctor

    plain = hardware.fingerprint()
    root = cpu_tree(tmp_path / "sys")
    jetson_orin_ina3221(root)
    monkeypatch.setenv("RIGHTSIZER_SYSFS", str(root))
    monkeypatch.setenv("RIGHTSIZER_POWERCAP", str(tmp_path / "no-rapl"))
    hardware._fingerprint.cache_clear()
    fp = hardware.fingerprint()
    assert (fp["board_model"], fp["cpu_governor"], fp["memory_type"]) == (
        "NVIDIA Jetson Orin Nano Developer Kit", "schedutil", None)
    assert fp["id"] == plain["id"]  # a governor change is not a new machine
    out = CliRunner().invoke(doctor, [])
    assert out.exit_code == 0, out.output
    lines = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in out.output.splitlines()}
    assert lines["board"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert lines["cpu governor"] == "schedutil" and lines["cpu clock now"] == "2200 MHz"
    assert lines["cpu temperature now"] == "45.5 °C" and lines["thermal throttle events"] == "8"
    assert lines["memory type"] == "n/a"
    if not monitor.nvml_available():
        assert lines["board power (hwmon, INA3221)"] == "hwmon-power:ina3221 (VDD_IN)"
    fs_type, device = hardware.model_storage(tmp_path)
    assert lines["models folder storage"] == f"{fs_type} on {device}"


def test_model_storage_is_the_longest_mount_that_holds_the_file(tmp_path: Path) -> None:
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    real = os.path.realpath(tmp_path)
    holding = [m for m in mounts if real == m[1] or real.startswith(m[1].rstrip("/") + "/")]
    expected = holding[0]
    for m in holding:  # the last of equally long mount points is the one on top
        if len(m[1].rstrip("/")) >= len(expected[1].rstrip("/")):
            expected = m
    assert hardware.model_storage(tmp_path) == (expected[2], expected[0])
    assert hardware.model_storage("/proc/self/status")[0] == "proc"


def test_flags_read_the_same_in_the_table_json_and_the_app() -> None:
    from lab.cli.bench import _ts, json_record
    from lab.tui import format as fmt

    row = {"avg_ts": 12.5, "stddev_ts": 0.25, "noisy": 0, "swapped": 1, "throttled": 1, "clocks_dropped": None}
    assert _ts(row) == "12.50 ± 0.25 (swapped, throttled)"
    assert fmt.ts_pm(row) == "12.50 ± 0.25 swapped throttled"
    record = json_record(row, None)
    assert (record["swapped"], record["throttled"], record["clocks_dropped"], record["noisy"]) == (True, True, None, False)
    unknown = dict(row, swapped=None, throttled=0)
    assert _ts(unknown) == fmt.ts_pm(unknown) == "12.50 ± 0.25"
    assert json_record(unknown, None)["swapped"] is None and json_record(unknown, None)["throttled"] is False
