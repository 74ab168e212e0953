"""The machine fingerprint: CPU, RAM, GPUs, OS, and the llama.cpp build with its system_info.

Every figure that this machine cannot give is None, never 0 and never guessed. Nothing here
imports Textual or loads model weights; llama.cpp's library is loaded (inside
``llama_cpp_info()`` only, because importing it costs ~0.2 s), which maps no weights.

NVML (``pynvml``, from nvidia-ml-py) is initialised once per process, lazily, and shared with
``lab.monitor``. Each NVML call goes through ``nvml_call()``, so "not supported", "no permission"
or a lost GPU becomes None instead of an exception (the idea nvitop's ``libnvml`` uses).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import socket
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import psutil

from lab import __version__

GIB = 1 << 30

# The fields hashed into the machine id: what identifies the hardware and the llama.cpp build.
# Python and lab versions are left out on purpose: upgrading Rightsizer is not a new machine.
ID_FIELDS = (
    "hostname", "os", "kernel", "arch", "cpu_info", "cpu_cores", "cpu_threads", "ram_gib",
    "gpu_names", "llama_cpp_version", "build_commit", "system_info",
)


# ---------------------------------------------------------------------------------------------
# CPU and memory


def physical_cores() -> int:
    """Physical cores this process may use: the default llama.cpp thread count.

    psutil's physical count (os.cpu_count() when psutil cannot tell), capped by the CPU
    affinity mask, since threads beyond the CPUs we are allowed on only add contention.
    """
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    try:
        cores = min(cores, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        pass
    return max(1, cores)


def memory_available() -> int:
    """Bytes the kernel can give without swapping (``MemAvailable``)."""
    return int(psutil.virtual_memory().available)


def memory_total() -> int:
    """Installed RAM visible to the OS, in bytes."""
    return int(psutil.virtual_memory().total)


def cpu_model() -> str | None:
    """The CPU model name: /proc/cpuinfo's "model name", else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                # "model name" on x86; "Model" / "Hardware" name the SoC on some ARM kernels.
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            import subprocess

            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                 text=True, timeout=2).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or None


def os_name() -> str:
    """The OS with its distribution or release where known, e.g. "Linux (Ubuntu 24.04.1 LTS)"."""
    system = platform.system() or "unknown"
    if system == "Linux":
        try:
            for line in Path("/etc/os-release").read_text(errors="replace").splitlines():
                if line.startswith("PRETTY_NAME="):
                    return f"Linux ({line.split('=', 1)[1].strip().strip(chr(34))})"
        except OSError:
            pass
    elif system == "Darwin":
        release = platform.mac_ver()[0]
        return f"macOS {release}" if release else "macOS"
    elif system == "Windows":
        return f"Windows {platform.release()} ({platform.version()})"
    return system


# ---------------------------------------------------------------------------------------------
# NVML

_nvml_lock = threading.Lock()
_nvml_state: dict[str, Any] = {}  # {"module": pynvml or None, "reason": str}

# Errors that mean "this device or driver cannot give this figure": they never go away, so
# nvml_call() stops asking (a failing NVML call can cost milliseconds on every tick).
_PERMANENT_ERRORS = ("NVMLError_NotSupported", "NVMLError_NoPermission", "NVMLError_FunctionNotFound",
                     "NVMLError_InvalidArgument", "NVMLError_NotFound")
_unsupported: set[tuple[str, int]] = set()


def nvml() -> Any | None:
    """The initialised ``pynvml`` module, or None when NVML is absent or fails to start.

    Initialised once per process; the reason for a failure is kept for ``nvml_status()``.
    """
    if "module" in _nvml_state:
        return _nvml_state["module"]
    with _nvml_lock:
        if "module" in _nvml_state:
            return _nvml_state["module"]
        module: Any | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            module = pynvml
            reason = "ok"
        except ImportError as exc:
            reason = f"pynvml is not installed ({exc})"
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            reason = str(exc) or type(exc).__name__
        _nvml_state["reason"] = reason
        _nvml_state["module"] = module
        return module


def nvml_available() -> bool:
    """True when NVML started (an NVIDIA driver is loaded)."""
    return nvml() is not None


def nvml_call(name: str, *args: Any, handle_key: int | None = None) -> Any | None:
    """Call the NVML function ``name`` (e.g. "nvmlDeviceGetPowerUsage"); None on any NVML
    error, and when this pynvml has no such function.

    Errors that cannot go away (not supported, no permission, function not in this driver) are
    remembered per function and device (``handle_key``) so the call is not repeated.
    """
    key = (name, -1 if handle_key is None else handle_key)
    if key in _unsupported:
        return None
    module = nvml()
    if module is None:
        return None
    func = getattr(module, name, None)
    if func is None:  # an older nvidia-ml-py
        _unsupported.add(key)
        return None
    try:
        return func(*args)
    except module.NVMLError as exc:
        if type(exc).__name__ in _PERMANENT_ERRORS:
            _unsupported.add(key)
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def nvml_handles() -> list[tuple[int, Any]]:
    """(NVML index, device handle) for every NVIDIA GPU NVML can open; [] without NVML."""
    module = nvml()
    if module is None:
        return []
    count = nvml_call("nvmlDeviceGetCount") or 0
    handles = []
    for index in range(count):
        handle = nvml_call("nvmlDeviceGetHandleByIndex", index, handle_key=index)
        if handle is not None:  # e.g. a GPU that fell off the bus: skip it, keep the others
            handles.append((index, handle))
    return handles


@dataclass
class GpuInfo:
    """One NVIDIA GPU as NVML reports it; unreadable figures are None."""

    index: int
    name: str | None
    uuid: str | None
    memory_total: int | None  # bytes
    memory_used: int | None  # bytes, all processes
    driver_version: str | None
    power_limit_w: float | None  # the enforced board power limit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gpus() -> list[GpuInfo]:
    """Every NVIDIA GPU NVML can see; [] when NVML is absent or fails (never raises)."""
    module = nvml()
    if module is None:
        return []
    driver = _text(nvml_call("nvmlSystemGetDriverVersion"))
    result = []
    for index, handle in nvml_handles():
        memory = nvml_call("nvmlDeviceGetMemoryInfo", handle, handle_key=index)
        limit_mw = nvml_call("nvmlDeviceGetEnforcedPowerLimit", handle, handle_key=index)
        result.append(GpuInfo(
            index=index,
            name=_text(nvml_call("nvmlDeviceGetName", handle, handle_key=index)),
            uuid=_text(nvml_call("nvmlDeviceGetUUID", handle, handle_key=index)),
            memory_total=int(memory.total) if memory is not None else None,
            memory_used=int(memory.used) if memory is not None else None,
            driver_version=driver,
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
        ))
    return result


def nvml_status() -> str:
    """One line: "NVML 12.550.54, driver 550.54.15, 1 GPU" or "not available: <reason>"."""
    module = nvml()
    if module is None:
        return f"not available: {_nvml_state.get('reason', 'unknown')}"
    version = _text(nvml_call("nvmlSystemGetNVMLVersion")) or "n/a"
    driver = _text(nvml_call("nvmlSystemGetDriverVersion")) or "n/a"
    count = nvml_call("nvmlDeviceGetCount")
    gpu_text = "n/a GPUs" if count is None else f"{count} GPU" + ("" if count == 1 else "s")
    return f"NVML {version}, driver {driver}, {gpu_text}"


# ---------------------------------------------------------------------------------------------
# llama.cpp


def _ggml_string(lib: Any, name: str) -> str | None:
    import ctypes

    try:
        func = getattr(lib, name)
    except AttributeError:
        return None
    func.restype = ctypes.c_char_p
    func.argtypes = []
    return _text(func())


def _ggml_libraries() -> list[Any]:
    """ctypes handles through which ggml's own symbols can be looked up.

    libllama links libggml-base and libggml, so on Linux/macOS dlsym on libllama's handle finds
    them; Windows does not search dependencies, so the ggml libraries are also opened by name.
    """
    import llama_cpp.llama_cpp as lc

    libs: list[Any] = [lc._lib] if getattr(lc, "_lib", None) is not None else []
    base = getattr(lc, "_base_path", None)
    if base is not None:
        from llama_cpp._ctypes_extensions import load_shared_library

        for name in ("ggml-base", "ggml"):
            try:
                libs.append(load_shared_library(name, Path(base)))
            except Exception:  # absent under this name: the dependency lookup above may still work
                pass
    return libs


def _backend_names(libs: list[Any]) -> list[str] | None:
    """Names of the ggml backends registered in this build (["CUDA", "CPU"], ...)."""
    import ctypes

    for lib in libs:
        try:
            count_fn, get_fn, name_fn = lib.ggml_backend_reg_count, lib.ggml_backend_reg_get, lib.ggml_backend_reg_name
        except AttributeError:
            continue
        count_fn.restype, count_fn.argtypes = ctypes.c_size_t, []
        get_fn.restype, get_fn.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        name_fn.restype, name_fn.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        names = []
        for i in range(count_fn()):
            reg = get_fn(i)
            if reg:
                names.append(_text(name_fn(reg)) or "?")
        return names
    return None


def _backends_from_system_info(system_info: str | None, gpu_offload: bool | None) -> list[str] | None:
    """Backend names parsed from system_info ("CUDA : ARCHS = 890 | ... | CPU : SSE3 = 1 | ...").

    Used only when the ggml registry cannot be read; a backend without features does not show
    up there, hence the offload flag as a last hint.
    """
    if not system_info:
        return None
    names = []
    for part in system_info.split("|"):
        head, sep, rest = part.partition(" : ")
        if sep and "=" not in head and head.strip():
            names.append(head.strip())
    if not names:
        return None
    if gpu_offload and names == ["CPU"]:
        names.insert(0, "GPU")
    return names


def backends_label(names: list[str] | None) -> str | None:
    """The ``backends`` string llama-bench writes: non-CPU backends joined by ",", else "CPU"."""
    if names is None:
        return None
    gpu_side = [n for n in names if n != "CPU"]
    return ",".join(gpu_side) if gpu_side else "CPU"


def llama_cpp_info() -> dict[str, Any]:
    """The llama.cpp build in this environment, read from the loaded library (no weights).

    Keys: ``version`` (llama-cpp-python), ``llama_version`` (libllama's own), ``ggml_version``,
    ``build_commit`` (ggml's GGML_COMMIT, the vendored llama.cpp's git short hash, possibly with
    "-dirty"), ``system_info``, ``gpu_offload``, ``backends`` (registered backend names),
    ``backends_label`` (llama-bench's column) and ``error`` (why llama_cpp could not be
    imported). Anything not obtainable is None. Read once per process; returns a copy.
    """
    info = dict(_llama_cpp_info())
    if info["backends"] is not None:
        info["backends"] = list(info["backends"])
    return info


@functools.lru_cache(maxsize=1)
def _llama_cpp_info() -> dict[str, Any]:
    info: dict[str, Any] = dict.fromkeys(
        ("version", "llama_version", "ggml_version", "build_commit", "system_info", "gpu_offload",
         "backends", "backends_label", "error"))
    try:
        import llama_cpp
    except Exception as exc:  # not installed, or the shared library fails to load
        info["error"] = f"llama_cpp cannot be imported: {exc}"
        return info
    info["version"] = getattr(llama_cpp, "__version__", None)
    try:
        info["system_info"] = (_text(llama_cpp.llama_print_system_info()) or "").strip() or None
    except Exception:
        pass
    try:
        info["gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        pass
    try:
        info["llama_version"] = _text(llama_cpp.llama_version())
    except Exception:  # older bindings have no llama_version()
        pass
    try:
        libs = _ggml_libraries()
    except Exception:
        libs = []
    for lib in libs:
        info["build_commit"] = info["build_commit"] or _ggml_string(lib, "ggml_commit")
        info["ggml_version"] = info["ggml_version"] or _ggml_string(lib, "ggml_version")
    try:
        names = _backend_names(libs)
    except Exception:
        names = None
    info["backends"] = names or _backends_from_system_info(info["system_info"], info["gpu_offload"])
    info["backends_label"] = backends_label(info["backends"])
    return info


# ---------------------------------------------------------------------------------------------
# Fingerprint


def fingerprint_id(fp: dict[str, Any]) -> str:
    """First 16 hex digits of sha256 over the stable fields (``ID_FIELDS``) as sorted JSON."""
    ram = fp.get("ram_bytes")
    stable = {
        "hostname": fp.get("hostname"), "os": fp.get("os"), "kernel": fp.get("kernel"),
        "arch": fp.get("arch"), "cpu_info": fp.get("cpu_info"), "cpu_cores": fp.get("cpu_cores"),
        "cpu_threads": fp.get("cpu_threads"),
        # rounded: MemTotal moves by a few MiB across kernels and firmware updates
        "ram_gib": round(ram / GIB) if ram is not None else None,
        "gpu_names": fp["gpu_info"].split(", ") if fp.get("gpu_info") else [],
        "llama_cpp_version": fp.get("llama_cpp_version"), "build_commit": fp.get("build_commit"),
        "system_info": fp.get("system_info"),
    }
    assert tuple(stable) == ID_FIELDS
    blob = json.dumps(stable, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _fingerprint() -> tuple[tuple[str, Any], ...]:
    llama = llama_cpp_info()
    devices = gpus() if nvml_available() else None
    names = [g.name or "unknown GPU" for g in devices] if devices else []
    vram = [g.memory_total for g in devices] if devices else []
    fp: dict[str, Any] = {
        "hostname": socket.gethostname() or None,
        "os": os_name(),
        "kernel": platform.release() or None,
        "arch": platform.machine() or None,
        "cpu_info": cpu_model(),
        # raw counts here: the fingerprint describes the machine, not this process's share of it
        "cpu_cores": psutil.cpu_count(logical=False),
        "cpu_threads": psutil.cpu_count(logical=True),
        "ram_bytes": memory_total(),
        # Without NVML we cannot tell whether there are GPUs, so these are None, not 0/"".
        "gpu_info": ", ".join(names) if names else None,
        "gpu_count": len(devices) if devices is not None else None,
        "vram_bytes": sum(vram) if vram and None not in vram else None,
        "backends": llama["backends_label"],
        "build_commit": llama["build_commit"],
        "llama_cpp_version": llama["version"],
        "python_version": platform.python_version(),
        "lab_version": __version__,
        "system_info": llama["system_info"],
        "gpu_offload": None if llama["gpu_offload"] is None else int(llama["gpu_offload"]),
    }
    fp = {"id": fingerprint_id(fp), **fp}
    return tuple(fp.items())


def fingerprint() -> dict[str, Any]:
    """This machine as a ``machines`` row (every column but ``first_seen``, which the store
    fills). Computed once per process; each call returns a fresh copy."""
    return dict(_fingerprint())


def doctor() -> dict[str, Any]:
    """Everything ``rightsizer doctor`` shows: the fingerprint, NVML and GPUs, llama.cpp
    build details, what the monitor can read here, and the lab's paths."""
    from lab import config
    from lab import monitor

    llama = llama_cpp_info()
    info = fingerprint()
    info.update(
        llama_cpp_library_version=llama["llama_version"],
        ggml_version=llama["ggml_version"],
        backend_list=llama["backends"],
        llama_cpp_error=llama["error"],
        gpu_offload=llama["gpu_offload"],
        nvml_available=nvml_available(),
        nvml_status=nvml_status(),
        gpus=[g.to_dict() for g in gpus()],
        memory_available_bytes=memory_available(),
        usable_physical_cores=physical_cores(),
        rapl_readable=monitor.rapl_readable(),
        extra_bufts=_extra_bufts_summary(),
        proc_available=os.path.isdir("/proc/self") and os.path.exists("/proc/self/status"),
        lab_home=str(config.lab_home()),
        db_path=str(config.default_db_path()),
        models_dir=str(config.models_dir()),
    )
    return info


def _extra_bufts_summary() -> str | None:
    """The engine's verdicts on llama.cpp's extra CPU buffer types (AMX / repacked weights) per
    quant type on this CPU, e.g. "Q4_1: off (crashes here)"; None before any model was probed."""
    from lab.engine.probe import cached_verdicts

    verdicts = cached_verdicts()
    if not verdicts:
        return None
    return ", ".join(f"{q}: {'on' if ok else 'off (crashes here)'}" for q, ok in sorted(verdicts.items()))
