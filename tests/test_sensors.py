"""lab.sensors against sysfs trees laid out as the kernel lays them out (this VM has no cpufreq,
no thermal zones and no hwmon, and no Jetson is here), plus a real Sampler reading them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lab import sensors
from lab.monitor import Sampler, energy_over, energy_sources
from lab.sensors import BoardPower, CpuClock, CpuTemperature, ThrottleCounter


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)


def cpu_tree(root: Path) -> Path:
    """Two CPUs with cpufreq and x86 throttle counters; a CPU zone and a PMIC zone that
    reads 100 °C as Jetson's does; a device-tree model."""
    for cpu, khz, governor in (("cpu0", 1_800_000, "schedutil"), ("cpu1", 2_200_000, "schedutil")):
        base = root / "devices/system/cpu" / cpu
        _write(base / "cpufreq/scaling_cur_freq", f"{khz}\n")
        _write(base / "cpufreq/scaling_governor", f"{governor}\n")
        _write(base / "thermal_throttle/core_throttle_count", "3\n")
        _write(base / "thermal_throttle/package_throttle_count", "1\n")
    _write(root / "devices/system/cpu/online", "0-1\n")  # not a cpuN folder: ignored
    _write(root / "class/thermal/thermal_zone0/type", "CPU-therm\n")
    _write(root / "class/thermal/thermal_zone0/temp", "45500\n")
    _write(root / "class/thermal/thermal_zone1/type", "PMIC-Die\n")
    _write(root / "class/thermal/thermal_zone1/temp", "100000\n")
    _write(root / "class/thermal/thermal_zone2/type", "GPU-therm\n")
    _write(root / "class/thermal/thermal_zone2/temp", "51000\n")
    _write(root / "firmware/devicetree/base/model", "NVIDIA Jetson Orin Nano Developer Kit\x00")
    return root


def jetson_orin_ina3221(root: Path, vdd_in_mv: int = 5000, vdd_in_ma: int = 1200) -> Path:
    """L4T 35+: the mainline ina3221 hwmon driver on I2C bus 1, address 0x40. The device lives
    under /sys/devices; /sys/class/hwmon/hwmonN and the i2c driver's entry link to it."""
    device = root / "devices/platform/bus@0/c240000.i2c/i2c-1/1-0040"
    hwmon = device / "hwmon/hwmon3"
    _write(hwmon / "name", "ina3221\n")
    for n, label, mv, ma in ((1, "VDD_IN", vdd_in_mv, vdd_in_ma), (2, "VDD_CPU_GPU_CV", 5000, 400),
                             (3, "VDD_SOC", 5000, 300)):
        _write(hwmon / f"in{n}_label", f"{label}\n")
        _write(hwmon / f"in{n}_input", f"{mv}\n")
        _write(hwmon / f"in{n}_enable", "1\n")
        _write(hwmon / f"curr{n}_input", f"{ma}\n")
        _write(hwmon / f"in{n + 3}_input", "12\n")  # shunt voltages: no current pairs with them
    _link(root / "class/hwmon/hwmon3", hwmon)
    _link(root / "bus/i2c/drivers/ina3221/1-0040", device)
    return hwmon


def test_cpu_clock_is_the_highest_core_and_none_without_cpufreq(tmp_path: Path) -> None:
    root = cpu_tree(tmp_path / "sys")
    clock = CpuClock(root)
    assert clock.ok and clock.read() == pytest.approx(2200.0)
    _write(root / "devices/system/cpu/cpu1/cpufreq/scaling_cur_freq", "900000\n")  # throttled
    assert clock.read() == pytest.approx(1800.0)
    clock.close()
    empty = CpuClock(tmp_path / "nothing")
    assert not empty.ok and empty.read() is None
    assert sensors.cpu_governors(root) == "schedutil"
    _write(root / "devices/system/cpu/cpu1/cpufreq/scaling_governor", "performance\n")
    assert sensors.cpu_governors(root) == "performance,schedutil"
    assert sensors.cpu_governors(tmp_path / "nothing") is None


def test_cpu_temperature_leaves_out_zones_that_are_not_the_cpu(tmp_path: Path) -> None:
    root = cpu_tree(tmp_path / "sys")
    temp = CpuTemperature(root)
    assert temp.read() == pytest.approx(45.5)  # not the PMIC's constant 100 °C, not the GPU's 51
    _write(root / "class/thermal/thermal_zone0/temp", "81250\n")
    assert temp.read() == pytest.approx(81.25)
    # x86: the package sensor through hwmon (coretemp) counts too
    _write(root / "class/hwmon/hwmon0/name", "coretemp\n")
    _write(root / "class/hwmon/hwmon0/temp1_input", "88000\n")
    assert CpuTemperature(root).read() == pytest.approx(88.0)
    assert CpuTemperature(tmp_path / "nothing").read() is None


def test_throttle_counter_sums_every_cpu_counter(tmp_path: Path) -> None:
    root = cpu_tree(tmp_path / "sys")
    counter = ThrottleCounter(root)
    assert counter.read() == 8
    _write(root / "devices/system/cpu/cpu0/thermal_throttle/core_throttle_count", "10\n")
    assert counter.read() == 15
    assert ThrottleCounter(tmp_path / "nothing").read() is None


def test_board_model_and_memory_type(tmp_path: Path) -> None:
    root = cpu_tree(tmp_path / "sys")
    assert sensors.board_model(root) == "NVIDIA Jetson Orin Nano Developer Kit"
    assert sensors.board_model(tmp_path / "nothing") is None
    assert sensors.memory_type(root) is None  # no SMBIOS records: not known

    def type17(size_mb: int, kind: int, speed: int) -> bytes:
        raw = bytearray(0x28)
        raw[0], raw[1] = 17, 0x28
        raw[0x0C:0x0E] = size_mb.to_bytes(2, "little")
        raw[0x12] = kind
        raw[0x15:0x17] = speed.to_bytes(2, "little")
        return bytes(raw)

    _write(root / "firmware/dmi/entries/17-0/raw", type17(16384, 0x1A, 3200))  # DDR4-3200
    _write(root / "firmware/dmi/entries/17-1/raw", type17(0, 0x02, 0))  # an empty slot
    _write(root / "firmware/dmi/entries/16-0/raw", b"\x10" + bytes(30))  # not a memory device
    assert sensors.memory_type(root) == "DDR4-3200"
    _write(root / "firmware/dmi/entries/17-1/raw", type17(8192, 0x22, 4800))
    assert sensors.memory_type(root) == "DDR4-3200,DDR5-4800"


def test_jetson_ina3221_counts_the_board_input_rail_once(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    hwmon = jetson_orin_ina3221(root)
    monitors = sensors.power_monitors(root)
    # one device, found through class/hwmon and through the i2c driver: counted once
    assert len(monitors) == 1 and monitors[0].name == "ina3221"
    assert [r.label for r in monitors[0].rails] == ["VDD_IN"]  # the other rails are parts of it
    board = BoardPower(root)
    assert board.sources == ["hwmon-power:ina3221"]
    assert board.describe() == ["hwmon-power:ina3221 (VDD_IN)"]
    assert board.read(10.0) == {"hwmon-power:ina3221": 0.0}
    assert board.power_w == pytest.approx(6.0)  # 5000 mV x 1200 mA
    _write(hwmon / "curr1_input", "1600\n")  # 8 W
    assert board.read(12.0)["hwmon-power:ina3221"] == pytest.approx(14.0)  # (6 + 8) / 2 x 2 s
    assert board.read(13.0)["hwmon-power:ina3221"] == pytest.approx(22.0)
    _write(hwmon / "in1_enable", "0\n")  # a disabled channel is not a rail: the others are summed
    assert BoardPower(root).describe() == ["hwmon-power:ina3221 (VDD_CPU_GPU_CV, VDD_SOC)"]
    board.close()
    assert board.read(14.0) == {"hwmon-power:ina3221": None}


def test_without_an_input_label_every_rail_is_summed(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    hwmon = jetson_orin_ina3221(root)
    _write(hwmon / "in1_label", "VDD_GPU\n")
    board = BoardPower(root)
    board.read(0.0)
    assert board.power_w == pytest.approx(6.0 + 2.0 + 1.5)


def test_older_jetson_iio_rails(tmp_path: Path) -> None:
    """L4T 32 (Nano, TX2, Xavier): the ina3221x IIO driver, power in mW per rail."""
    root = tmp_path / "sys"
    iio = root / "bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for n, label, mw in ((0, "POM_5V_IN", 2350), (1, "POM_5V_GPU", 40), (2, "POM_5V_CPU", 600)):
        _write(iio / f"rail_name_{n}", f"{label}\n")
        _write(iio / f"in_power{n}_input", f"{mw}\n")
    board = BoardPower(root)
    assert board.describe() == ["hwmon-power:ina3221x (POM_5V_IN)"]
    board.read(0.0)
    assert board.power_w == pytest.approx(2.35)
    assert board.read(4.0)["hwmon-power:ina3221x"] == pytest.approx(9.4)


def test_generic_hwmon_energy_counters_beat_power_and_are_used_like_rapl(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    meter = root / "devices/platform/soc/meter/hwmon/hwmon1"
    _write(meter / "name", "scmi_sensors\n")
    _write(meter / "energy1_input", "5000000\n")  # µJ
    _write(meter / "energy1_label", "SYS_ENERGY\n")
    _write(meter / "power1_input", "3000000\n")  # µW: ignored, the counter is exact
    _link(root / "class/hwmon/hwmon1", meter)
    other = root / "class/hwmon/hwmon2"
    _write(other / "name", "ina226\n")
    _write(other / "power1_input", "4500000\n")
    board = BoardPower(root)
    assert board.sources == ["hwmon:scmi_sensors", "hwmon-power:ina226"]
    first = board.read(0.0)
    _write(meter / "energy1_input", "7500000\n")
    second = board.read(1.0)
    assert first == {"hwmon:scmi_sensors": 0.0, "hwmon-power:ina226": 0.0}
    assert second == {"hwmon:scmi_sensors": pytest.approx(2.5), "hwmon-power:ina226": pytest.approx(4.5)}
    assert board.power_w == pytest.approx(4.5)  # only rails that give power
    assert BoardPower(tmp_path / "nothing").sources == []


def test_sampler_reads_heat_and_board_power_from_the_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = cpu_tree(tmp_path / "sys")
    jetson_orin_ina3221(root)
    monkeypatch.setenv("RIGHTSIZER_SYSFS", str(root))
    monkeypatch.setenv("RIGHTSIZER_POWERCAP", str(tmp_path / "no-rapl"))  # as on a Jetson
    seen = []
    sampler = Sampler(os.getpid(), interval=0.02, on_sample=seen.append)
    assert sampler.board_sources == ["hwmon-power:ina3221"]
    sampler.start()
    try:
        start = sampler.read_energy()
        time.sleep(0.3)
        end = sampler.read_energy()
    finally:
        sampler.stop()
    sample = seen[-1]
    assert (sample.cpu_freq_mhz, sample.cpu_temp_c, sample.throttle_count) == (2200.0, 45.5, 8)
    assert sample.board_power_w == pytest.approx(6.0)
    assert (start.throttle_count, end.throttle_count) == (8, 8)
    sources = energy_sources(0, sampler.child_gpus, sampler.gpu_indices, sampler.board_sources)
    figures = energy_over([(start, end)], sources)
    # a constant 6 W integrated over the span between the two readings
    assert figures.energy_source == "hwmon-power:ina3221"
    assert figures.energy_j == pytest.approx(6.0 * (end.t - start.t), rel=1e-6)
    assert figures.by_source["rapl"] is None
    assert sampler.reference_clock_mhz() == pytest.approx(2200.0)


def test_with_rapl_the_board_rails_are_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "sys"
    jetson_orin_ina3221(root)
    package = tmp_path / "powercap/intel-rapl:0"
    _write(package / "name", "package-0\n")
    _write(package / "max_energy_range_uj", "1000000\n")
    _write(package / "energy_uj", "5\n")
    monkeypatch.setenv("RIGHTSIZER_SYSFS", str(root))
    monkeypatch.setenv("RIGHTSIZER_POWERCAP", str(tmp_path / "powercap"))
    sampler = Sampler(os.getpid())
    assert sampler.board_sources == []  # the rails include the CPU: counted twice otherwise
    assert set(sampler.read_energy().counters) == {"rapl"} | {f"nvml:{i}" for i in sampler.gpu_indices}
    sampler.stop()


def test_sensor_report_says_what_is_there(tmp_path: Path) -> None:
    root = cpu_tree(tmp_path / "sys")
    jetson_orin_ina3221(root)
    report = sensors.report(finer_power=False, root=root)
    assert report == {"cpu_freq_mhz": 2200.0, "cpu_temp_c": 45.5, "throttle_count": 8,
                      "board_power": "hwmon-power:ina3221 (VDD_IN)"}
    bare = sensors.report(finer_power=False, root=tmp_path / "nothing")
    assert bare["board_power"].startswith("none found") and "no energy figures" in bare["board_power"]
    assert bare["cpu_freq_mhz"] is None and bare["cpu_temp_c"] is None and bare["throttle_count"] is None
    assert "not counted" in sensors.report(finer_power=True, root=root)["board_power"]
