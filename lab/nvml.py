"""NVIDIA GPUs through NVML: the one place that talks to ``pynvml`` (from nvidia-ml-py).

NVML is initialised once per process, lazily. Each call goes through :func:`call`, so "not
supported", "no permission" or a lost GPU becomes None instead of an exception (the idea
nvitop's ``libnvml`` uses). :func:`read_gpus` is the one reader of per-device figures that the
fingerprint, the sampler and the app's Machine screen share.

Every figure a device cannot give is None, never 0.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

_lock = threading.Lock()
_state: dict[str, Any] = {}  # {"module": pynvml or None, "reason": str}

# Errors that mean "this device or driver cannot give this figure": they never go away, so
# call() stops asking (a failing NVML call can cost milliseconds on every tick).
_PERMANENT_ERRORS = ("NVMLError_NotSupported", "NVMLError_NoPermission", "NVMLError_FunctionNotFound",
                     "NVMLError_InvalidArgument", "NVMLError_NotFound")
_unsupported: set[tuple[str, int]] = set()

# nvml.h's NVML_TEMPERATURE_GPU, so callers need not import pynvml
TEMPERATURE_GPU = 0


def module() -> Any | None:
    """The initialised ``pynvml`` module, or None when NVML is absent or fails to start.

    Initialised once per process; the reason for a failure is kept for :func:`status`.
    """
    if "module" in _state:
        return _state["module"]
    with _lock:
        if "module" in _state:
            return _state["module"]
        found: Any | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            found = pynvml
            reason = "ok"
        except ImportError as exc:
            reason = f"pynvml is not installed ({exc})"
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            reason = str(exc) or type(exc).__name__
        _state["reason"] = reason
        _state["module"] = found
        return found


def available() -> bool:
    """True when NVML started (an NVIDIA driver is loaded)."""
    return module() is not None


def call(name: str, *args: Any, handle_key: int | None = None) -> Any | None:
    """Call the NVML function ``name`` (e.g. "nvmlDeviceGetPowerUsage"); None on any NVML
    error, and when this pynvml has no such function.

    Errors that cannot go away (not supported, no permission, function not in this driver) are
    remembered per function and device (``handle_key``) so the call is not repeated.
    """
    key = (name, -1 if handle_key is None else handle_key)
    if key in _unsupported:
        return None
    nv = module()
    if nv is None:
        return None
    func = getattr(nv, name, None)
    if func is None:  # an older nvidia-ml-py
        _unsupported.add(key)
        return None
    try:
        return func(*args)
    except nv.NVMLError as exc:
        if type(exc).__name__ in _PERMANENT_ERRORS:
            _unsupported.add(key)
        return None


def text(value: Any) -> str | None:
    """NVML strings are bytes in older bindings, str in newer ones."""
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def handles() -> list[tuple[int, Any]]:
    """(NVML index, device handle) for every NVIDIA GPU NVML can open; [] without NVML."""
    if module() is None:
        return []
    count = call("nvmlDeviceGetCount") or 0
    found = []
    for index in range(count):
        handle = call("nvmlDeviceGetHandleByIndex", index, handle_key=index)
        if handle is not None:  # e.g. a GPU that fell off the bus: skip it, keep the others
            found.append((index, handle))
    return found


@dataclass
class GpuReading:
    """One look at one GPU. Unreadable figures are None; ``details`` fields (name, uuid, power
    limit) are only read when asked for, since they never change during a run."""

    index: int
    name: str | None = None
    memory_used: int | None = None  # bytes, all processes
    memory_total: int | None = None  # bytes
    util: float | None = None  # percent
    power_w: float | None = None
    power_limit_w: float | None = None  # the enforced board power limit
    temp_c: float | None = None
    uuid: str | None = None
    energy_j: float | None = None  # cumulative since the driver loaded: only differences mean something
    proc_memory: int | None = None  # memory of the process asked about (``pid``)


def process_memory(handle: Any, key: int, pid: int) -> int | None:
    """Memory of process ``pid`` on one GPU; None when NVML does not list it (no context there,
    or a container whose pid namespace hides host pids) or does not report the amount."""
    found: int | None = None
    for func in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for entry in call(func, handle, handle_key=key) or ():
            if entry.pid == pid and entry.usedGpuMemory is not None:
                # A process with compute and graphics contexts is listed twice with the same
                # total; max, not sum.
                found = max(found or 0, int(entry.usedGpuMemory))
    return found


def read_energy_j(handle: Any, key: int) -> float | None:
    """The GPU's total energy counter in joules (mJ since the driver loaded; Volta and newer),
    or None where the device does not have it."""
    mj = call("nvmlDeviceGetTotalEnergyConsumption", handle, handle_key=key)
    return mj / 1000.0 if mj is not None else None


def read_gpus(devices: Sequence[tuple[int, Any]] | None = None, *, pid: int | None = None,
              details: bool = True) -> list[GpuReading]:
    """Read every GPU in ``devices`` (default: all, from :func:`handles`); [] without NVML.

    ``pid``: also read that process's own memory on each GPU. ``details``: also read the name,
    uuid and power limit (a sampler ticking ten times a second leaves them out).
    """
    if devices is None:
        devices = handles()
    out = []
    for key, handle in devices:
        memory = call("nvmlDeviceGetMemoryInfo", handle, handle_key=key)
        rates = call("nvmlDeviceGetUtilizationRates", handle, handle_key=key)
        mw = call("nvmlDeviceGetPowerUsage", handle, handle_key=key)
        temp = call("nvmlDeviceGetTemperature", handle, TEMPERATURE_GPU, handle_key=key)
        reading = GpuReading(
            index=key,
            memory_used=int(memory.used) if memory is not None else None,
            memory_total=int(memory.total) if memory is not None else None,
            util=float(rates.gpu) if rates is not None else None,
            power_w=mw / 1000.0 if mw is not None else None,
            temp_c=float(temp) if temp is not None else None,
            energy_j=read_energy_j(handle, key),
            proc_memory=process_memory(handle, key, pid) if pid is not None else None,
        )
        if details:
            limit = call("nvmlDeviceGetEnforcedPowerLimit", handle, handle_key=key)
            reading.name = text(call("nvmlDeviceGetName", handle, handle_key=key))
            reading.uuid = text(call("nvmlDeviceGetUUID", handle, handle_key=key))
            reading.power_limit_w = limit / 1000.0 if limit is not None else None
        out.append(reading)
    return out


def driver_version() -> str | None:
    """The NVIDIA driver's version, or None."""
    return text(call("nvmlSystemGetDriverVersion"))


def status() -> str:
    """One line: "NVML 12.550.54, driver 550.54.15, 1 GPU" or "not available: <reason>"."""
    if module() is None:
        return f"not available: {_state.get('reason', 'unknown')}"
    version = text(call("nvmlSystemGetNVMLVersion")) or "n/a"
    driver = driver_version() or "n/a"
    count = call("nvmlDeviceGetCount")
    gpu_text = "n/a GPUs" if count is None else f"{count} GPU" + ("" if count == 1 else "s")
    return f"NVML {version}, driver {driver}, {gpu_text}"
