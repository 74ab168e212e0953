"""The machine: its fingerprint for the app, and one look at CPU, memory and GPUs for the
Machine screen's gauges.

No Textual here: these run in worker threads (each with its own ``Store``) or in tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import psutil

from lab.nvml import GpuReading


@dataclass
class MachineContext:
    """What the app knows about this machine: its fingerprint (a ``machines`` row) and the
    figures the Run screen's defaults and the Library's fit column need."""

    fingerprint: dict[str, Any]
    physical_cores: int
    gpu_offload: bool | None
    memory_total: int | None
    vram_total: int | None
    nvml_status: str = "n/a"

    @property
    def id(self) -> str | None:
        return self.fingerprint.get("id")


def detect_machine() -> MachineContext:
    """Fingerprint this machine (the llama.cpp build comes from an engine child the first time,
    ~0.5 s, cached after: call it in a worker). This process never loads llama.cpp."""
    from lab import hardware, nvml

    fp = hardware.fingerprint()
    offload = fp.get("gpu_offload")
    return MachineContext(
        fingerprint=fp, physical_cores=hardware.physical_cores(),
        gpu_offload=None if offload is None else bool(offload), memory_total=hardware.memory_total(),
        vram_total=fp.get("vram_bytes"), nvml_status=nvml.status(),
    )


@dataclass
class SystemReading:
    """One look at the whole machine (not one process): the Machine screen's gauges."""

    cpu_per_core: list[float]
    cpu_total: float | None
    memory_total: int | None
    memory_available: int | None
    swap_total: int | None
    swap_used: int | None
    load_avg: tuple[float, float, float] | None
    gpus: list[GpuReading] = field(default_factory=list)

    @property
    def memory_used(self) -> int | None:
        if self.memory_total is None or self.memory_available is None:
            return None
        return self.memory_total - self.memory_available


class SystemProbe:
    """Reads the machine's CPU, memory and GPUs. CPU percentages are over the time since the
    previous ``read()`` (psutil's non-blocking mode), so a read never sleeps."""

    def __init__(self) -> None:
        psutil.cpu_percent(percpu=True)

    def memory_available(self) -> int | None:
        return int(psutil.virtual_memory().available)

    def read(self) -> SystemReading:
        per_core = [float(v) for v in psutil.cpu_percent(percpu=True)]
        vm = psutil.virtual_memory()
        try:
            sw = psutil.swap_memory()
            swap_total, swap_used = int(sw.total), int(sw.used)
        except (OSError, RuntimeError):
            swap_total = swap_used = None
        try:
            load = tuple(float(x) for x in os.getloadavg())
        except (AttributeError, OSError):
            load = None
        return SystemReading(
            cpu_per_core=per_core, cpu_total=sum(per_core) / len(per_core) if per_core else None,
            memory_total=int(vm.total), memory_available=int(vm.available),
            swap_total=swap_total, swap_used=swap_used, load_avg=load,  # type: ignore[arg-type]
            gpus=read_gpus(),
        )


def read_gpus() -> list[GpuReading]:
    """Per-GPU memory, utilisation, power and temperature through NVML; [] without NVML.
    Figures a device cannot give are None."""
    from lab import nvml

    return nvml.read_gpus()
