"""What the kernel's sysfs tells about heat and power: CPU clocks, CPU temperatures, thermal
throttle counters, and the power/energy rails of boards without RAPL or NVML (hwmon, NVIDIA
Jetson's INA3221).

Every path is under ``config.sysfs_root()`` (``RIGHTSIZER_SYSFS``, default ``/sys``), so a
tree laid out as the kernel lays it out can stand in for a board that is not here. Readers
open their files once and ``pread`` them on every sampler tick (sysfs regenerates a value on
each read from offset 0). A figure that cannot be read is None, never 0.

* CPU clock: the highest ``cpufreq/scaling_cur_freq`` over the CPUs, in MHz: under load that
  is the busy cores' clock, and it falls when the package is throttled. ``psutil.cpu_freq()``
  is not used: on Linux without cpufreq it reports /proc/cpuinfo's "cpu MHz", which in a
  virtual machine is a constant, not a measurement.
* CPU temperature: the hottest thermal zone or hwmon sensor that names the CPU or SoC
  (``x86_pkg_temp``, ``cpu-thermal``, ``CPU-therm``, ``soc-thermal``, ``coretemp``,
  ``k10temp`` ...). Other zones (a PMIC that always reads 100 °C, a battery) are left out.
* Throttle counter: the sum of ``thermal_throttle/*_throttle_count`` (x86); only its
  increase means something.
* Board power (``BoardPower``): hwmon ``energy*_input`` (µJ counters, used like RAPL),
  hwmon ``power*_input`` (µW), the INA3221's bus voltage × current per channel (mV × mA), and
  the older Jetson IIO driver's ``in_power*_input`` (mW). Power-only rails are integrated over
  the readings (the trapezoid rule) into a joule counter, named ``hwmon-power:<name>``; energy
  counters are named ``hwmon:<name>``. When a rail is labelled as the board's input (``VDD_IN``,
  ``POM_5V_IN``, ``VIN_SYS_5V0``) or a whole socket, only those rails are counted, since the
  others are parts of them.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import config

MHZ_PER_KHZ = 1e-3

# Thermal-zone types and hwmon names that measure the CPU or the SoC it sits in.
_CPU_SENSOR = re.compile(r"cpu|x86_pkg|soc|core|package|k10temp|zenpower", re.IGNORECASE)
# A rail that feeds the whole board (or a whole CPU socket): the other rails of the same
# monitor are parts of it, and counting them too would count their energy twice.
_INPUT_RAIL = re.compile(r"(^|_)V?IN(_|$)|socket|package", re.IGNORECASE)


def _root(root: str | Path | None) -> str:
    return str(config.sysfs_root() if root is None else root)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip().strip("\x00")  # device-tree strings end in NUL
    except OSError:
        return None


def _glob(root: str, pattern: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(root), pattern)))


class _IntFiles:
    """Integer sysfs files kept open; ``read()`` gives each value, None where a read fails."""

    def __init__(self, paths: list[str]) -> None:
        self.fds: list[int] = []
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                int(os.pread(fd, 64, 0))
            except (OSError, ValueError):  # present but unreadable (a disabled channel)
                os.close(fd)
                continue
            self.fds.append(fd)

    def read(self) -> list[int | None]:
        values: list[int | None] = []
        for fd in self.fds:
            try:
                values.append(int(os.pread(fd, 64, 0)))
            except (OSError, ValueError):
                values.append(None)
        return values

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []

    def __del__(self) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Clocks, temperatures, throttling


class CpuClock:
    """The highest current CPU clock in MHz (``scaling_cur_freq``); ``ok`` False without cpufreq."""

    def __init__(self, root: str | Path | None = None) -> None:
        self._files = _IntFiles(_glob(_root(root), "devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"))
        self.ok = bool(self._files.fds)

    def read(self) -> float | None:
        values = [v for v in self._files.read() if v is not None and v > 0]
        return max(values) * MHZ_PER_KHZ if values else None

    def close(self) -> None:
        self._files.close()
        self.ok = False


def _cpu_temperature_paths(root: str) -> list[str]:
    paths = []
    for zone in _glob(root, "class/thermal/thermal_zone*"):
        if _CPU_SENSOR.search(_read_text(os.path.join(zone, "type")) or ""):
            paths.append(os.path.join(zone, "temp"))
    for hwmon in _glob(root, "class/hwmon/hwmon*"):
        if _CPU_SENSOR.search(_read_text(os.path.join(hwmon, "name")) or ""):
            paths += _glob(hwmon, "temp*_input")
    return paths


class CpuTemperature:
    """The hottest CPU/SoC sensor in °C (thermal zones and hwmon report millidegrees)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self._files = _IntFiles(_cpu_temperature_paths(_root(root)))
        self.ok = bool(self._files.fds)

    def read(self) -> float | None:
        values = [v for v in self._files.read() if v is not None]
        return max(values) / 1000.0 if values else None

    def close(self) -> None:
        self._files.close()
        self.ok = False


class ThrottleCounter:
    """The sum of the kernel's thermal throttle event counters (x86 ``thermal_throttle``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self._files = _IntFiles(_glob(_root(root), "devices/system/cpu/cpu[0-9]*/thermal_throttle/*_throttle_count"))
        self.ok = bool(self._files.fds)

    def read(self) -> int | None:
        values = self._files.read()
        return sum(values) if values and None not in values else None  # type: ignore[arg-type]

    def close(self) -> None:
        self._files.close()
        self.ok = False


def cpu_governors(root: str | Path | None = None) -> str | None:
    """The cpufreq governor(s) in use, e.g. "schedutil" (several joined by "," when CPUs
    differ); None without cpufreq."""
    found = {_read_text(p) for p in _glob(_root(root), "devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")}
    found.discard(None)
    found.discard("")
    return ",".join(sorted(found)) if found else None  # type: ignore[arg-type]


def board_model(root: str | Path | None = None) -> str | None:
    """The board's model from the device tree (``/proc/device-tree/model`` is a link to this
    file), e.g. "NVIDIA Jetson Orin Nano Developer Kit"; None on machines without one."""
    return _read_text(os.path.join(_root(root), "firmware/devicetree/base/model")) or None


# SMBIOS type 17 "Memory Type" codes (DMTF DSP0134) for the kinds a machine of today may have.
_SMBIOS_MEMORY_TYPES = {
    0x12: "DDR", 0x13: "DDR2", 0x18: "DDR3", 0x1A: "DDR4", 0x1B: "LPDDR", 0x1C: "LPDDR2",
    0x1D: "LPDDR3", 0x1E: "LPDDR4", 0x20: "HBM", 0x21: "HBM2", 0x22: "DDR5", 0x23: "LPDDR5",
    0x24: "HBM3",
}


def memory_type(root: str | Path | None = None) -> str | None:
    """The RAM type from the firmware's SMBIOS memory-device records (what dmidecode reads:
    ``firmware/dmi/entries/17-*/raw``, root only), with the speed where given, e.g.
    "DDR4-3200"; None when the records are absent or unreadable (most ARM boards, VMs)."""
    kinds: set[str] = set()
    for entry in _glob(_root(root), "firmware/dmi/entries/17-*/raw"):
        try:
            with open(entry, "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        if len(raw) < 0x13 or raw[0] != 17:
            continue
        size = int.from_bytes(raw[0x0C:0x0E], "little")
        if size in (0, 0xFFFF):  # an empty slot, or a size not known
            continue
        kind = _SMBIOS_MEMORY_TYPES.get(raw[0x12])
        if kind is None:
            continue
        speed = int.from_bytes(raw[0x15:0x17], "little") if len(raw) >= 0x17 else 0
        kinds.add(f"{kind}-{speed}" if speed and speed != 0xFFFF else kind)
    return ",".join(sorted(kinds)) if kinds else None


# ---------------------------------------------------------------------------------------------
# Board power: hwmon and INA3221


@dataclass
class Rail:
    """One measured channel: ``files`` are read together; watts or joules = product × ``scale``."""

    label: str
    kind: str  # "energy" (a cumulative counter) or "power"
    files: list[str]
    scale: float


@dataclass
class PowerMonitor:
    """One hwmon (or IIO) device and the rails counted from it."""

    name: str
    path: str
    rails: list[Rail] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "energy" if all(r.kind == "energy" for r in self.rails) else "power"


def _label(directory: str, *names: str) -> str | None:
    for name in names:
        text = _read_text(os.path.join(directory, name))
        if text:
            return text
    return None


def _channel(name: str) -> str:
    return re.sub(r"\D", "", name.split("_")[0]) or "0"


def _hwmon_rails(path: str, name: str) -> list[Rail]:
    energy = [Rail(_label(path, f"energy{_channel(os.path.basename(f))}_label") or os.path.basename(f),
                   "energy", [f], 1e-6) for f in _glob(path, "energy*_input")]
    if energy:
        return energy
    power = []
    for f in _glob(path, "power*_input") or _glob(path, "power*_average"):
        n = _channel(os.path.basename(f))
        power.append(Rail(_label(path, f"power{n}_label") or f"power{n}", "power", [f], 1e-6))
    if power or not name.startswith("ina3221"):
        return power
    # The INA3221 driver gives each channel's bus voltage (in1..3, mV) and current (curr1..3,
    # mA) but no power: power is their product.
    rails = []
    for curr in _glob(path, "curr*_input"):
        n = _channel(os.path.basename(curr))
        volt = os.path.join(path, f"in{n}_input")
        if not os.path.exists(volt) or _read_text(os.path.join(path, f"in{n}_enable")) == "0":
            continue
        rails.append(Rail(_label(path, f"in{n}_label", f"curr{n}_label") or f"channel {n}", "power",
                          [volt, curr], 1e-6))
    return rails


def _iio_rails(path: str) -> list[Rail]:
    # Older Jetson kernels (L4T 32): the ina3221x IIO driver, power per rail in mW.
    rails = []
    for f in _glob(path, "in_power*_input"):
        n = _channel(os.path.basename(f).replace("in_power", ""))
        rails.append(Rail(_label(path, f"rail_name_{n}") or f"rail {n}", "power", [f], 1e-3))
    return rails


def power_monitors(root: str | Path | None = None) -> list[PowerMonitor]:
    """The board power monitors under the sysfs tree, each with the rails to count (input rails
    only where any monitor labels one), in a stable order. [] where there are none."""
    base = _root(root)
    seen: set[str] = set()
    found: list[PowerMonitor] = []
    candidates = [(p, "hwmon") for p in _glob(base, "class/hwmon/hwmon*")]
    candidates += [(p, "hwmon") for p in _glob(base, "bus/i2c/drivers/ina3221*/*/hwmon/hwmon*")]
    candidates += [(p, "iio") for p in _glob(base, "bus/i2c/drivers/ina3221*/*/iio:device*")]
    for path, layout in candidates:
        real = os.path.realpath(path)  # class/hwmon/hwmonN and the i2c path are the same device
        if real in seen:
            continue
        seen.add(real)
        name = _read_text(os.path.join(path, "name")) or ("ina3221x" if layout == "iio" else "hwmon")
        rails = _iio_rails(path) if layout == "iio" else _hwmon_rails(path, name)
        if rails:
            found.append(PowerMonitor(name=name, path=path, rails=rails))
    inputs = [m for m in found if any(_INPUT_RAIL.search(r.label) for r in m.rails)]
    if inputs:
        for m in inputs:
            m.rails = [r for r in m.rails if _INPUT_RAIL.search(r.label)]
        found = inputs
    return found


class BoardPower:
    """Joule counters from the board's power monitors, one source per monitor.

    ``read(t)`` returns source -> cumulative joules since this reader was created (None when
    that monitor could not be read now). Energy counters are read as they are; power rails
    are integrated between readings (trapezoid rule) at the times ``t`` given, so a reading at
    every sampler tick gives the energy over any span between two readings. A failed reading
    widens the next step instead of being guessed.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.monitors = power_monitors(root)
        self.sources: list[str] = []
        self._files: list[list[list[int]]] = []  # per monitor, per rail: open fds
        used: set[str] = set()
        for monitor in self.monitors:
            prefix = "hwmon" if monitor.kind == "energy" else "hwmon-power"
            source = f"{prefix}:{monitor.name}"
            if source in used:
                source = f"{source}@{os.path.basename(monitor.path)}"
            used.add(source)
            self.sources.append(source)
            rails = []
            for rail in monitor.rails:
                fds = []
                for path in rail.files:
                    try:
                        fds.append(os.open(path, os.O_RDONLY))
                    except OSError:
                        pass
                rails.append(fds)
            self._files.append(rails)
        self._energy0: dict[str, float] = {}
        self._joules: dict[str, float] = dict.fromkeys(self.sources, 0.0)
        self._last: dict[str, tuple[float, float]] = {}  # power source -> (t, watts)
        self.power_w: float | None = None  # the last reading's total power, where rails give it
        self.ok = bool(self.sources)

    def describe(self) -> list[str]:
        """Each source with its rails, e.g. "hwmon-power:ina3221 (VDD_IN)"."""
        return [f"{s} ({', '.join(r.label for r in m.rails)})" for s, m in zip(self.sources, self.monitors)]

    def _rail_value(self, rail: Rail, fds: list[int]) -> float | None:
        if len(fds) != len(rail.files):
            return None
        product = 1.0
        try:
            for fd in fds:
                product *= int(os.pread(fd, 64, 0))
        except (OSError, ValueError):
            return None
        return product * rail.scale

    def read(self, t: float) -> dict[str, float | None]:
        """Every source's joules since creation at time ``t`` (seconds, any monotonic clock)."""
        out: dict[str, float | None] = {}
        powers: list[float] = []
        for source, monitor, rails in zip(self.sources, self.monitors, self._files):
            values = [self._rail_value(rail, fds) for rail, fds in zip(monitor.rails, rails)]
            if None in values:
                out[source] = None
                continue
            total = sum(values)  # type: ignore[arg-type]
            if monitor.kind == "energy":
                start = self._energy0.setdefault(source, total)
                out[source] = total - start
                continue
            powers.append(total)
            last = self._last.get(source)
            if last is not None and t > last[0]:
                self._joules[source] += (last[1] + total) / 2 * (t - last[0])
            if last is None or t >= last[0]:
                self._last[source] = (t, total)
            out[source] = self._joules[source]
        self.power_w = sum(powers) if powers else None
        return out

    def close(self) -> None:
        """Release the open files; the reader gives None from now on."""
        for rails in self._files:
            for fds in rails:
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                fds.clear()
        self.ok = False

    def __del__(self) -> None:
        self.close()


def report(finer_power: bool, root: str | Path | None = None) -> dict[str, Any]:
    """What the heat and board-power sensors read here now, for ``rightsizer doctor``.

    ``finer_power``: RAPL or NVML is readable, so the board's rails are not used. Keys:
    ``cpu_freq_mhz``, ``cpu_temp_c``, ``throttle_count`` (None: unreadable), ``board_power``
    (the sources with their rails, or a sentence saying why there are none)."""
    clock, temp, throttle, board = CpuClock(root), CpuTemperature(root), ThrottleCounter(root), BoardPower(root)
    try:
        if board.ok:
            power = "; ".join(board.describe())
            if finer_power:
                power += " (not counted: RAPL or NVML is read instead)"
        else:
            power = "none found (no hwmon power*/energy* files or INA3221 rails)"
            if not finer_power:
                power += ": no energy figures on this machine"
        return {"cpu_freq_mhz": clock.read(), "cpu_temp_c": temp.read(),
                "throttle_count": throttle.read() if throttle.ok else None, "board_power": power}
    finally:
        for reader in (clock, temp, throttle, board):
            reader.close()
