"""The machine fingerprint: CPU, RAM, GPUs, OS, board, memory type, CPU governor, and the
llama.cpp build with its system_info; and where a model file is stored (``model_storage``).

Every figure that this machine cannot give is None, never 0 and never guessed. Nothing here
imports Textual, loads model weights or loads llama.cpp: the build is asked of an engine child
once per installed llama-cpp-python and cached in the lab home (``llama_cpp_info()``), because
loading libllama registers every ggml backend (CUDA included) in the loading process. GPUs are
read through ``lab.nvml``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from lab import __version__, config, nvml, sensors
from lab.engine.buildinfo import FIELDS as _BUILD_FIELDS

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


def default_threads() -> int:
    """The thread count a run uses unless told otherwise: the usable physical cores (what
    llama-bench and llama-quantize default to)."""
    return physical_cores()


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


def model_storage(path: str | Path) -> tuple[str | None, str | None]:
    """The file system type and the device of the mount that holds ``path`` (the longest
    mount point that contains it), e.g. ("ext4", "/dev/mmcblk0p1") for an SD card or
    ("ext4", "/dev/nvme0n1p2"); (None, None) when the mounts cannot be read."""
    try:
        real = os.path.realpath(path)
        parts = psutil.disk_partitions(all=True)
    except (OSError, RuntimeError):
        return None, None
    best = None
    for part in parts:
        mount = part.mountpoint.rstrip("/") or "/"
        # ">=": of two mounts on one point, the later one (listed last) is on top
        if (real == mount or real.startswith(mount + "/") or mount == "/") and (
                best is None or len(mount) >= len(best.mountpoint.rstrip("/") or "/")):
            best = part
    if best is None:
        return None, None
    return best.fstype or None, best.device or None


# ---------------------------------------------------------------------------------------------
# GPUs


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
    if not nvml.available():
        return []
    driver = nvml.driver_version()
    return [GpuInfo(index=g.index, name=g.name, uuid=g.uuid, memory_total=g.memory_total,
                    memory_used=g.memory_used, driver_version=driver, power_limit_w=g.power_limit_w)
            for g in nvml.read_gpus()]


# ---------------------------------------------------------------------------------------------
# llama.cpp, asked of an engine child

_BUILD_CACHE = "llama_cpp_build.json"
_build_memo: dict[str, Any] = {}


def backends_label(names: list[str] | None) -> str | None:
    """The ``backends`` string llama-bench writes: non-CPU backends joined by ",", else "CPU"."""
    if names is None:
        return None
    gpu_side = [n for n in names if n != "CPU"]
    return ",".join(gpu_side) if gpu_side else "CPU"


def llama_cpp_install() -> dict[str, Any] | None:
    """What identifies the installed llama-cpp-python without loading it: the distribution's
    version and libllama's path, size and mtime (a rebuild in place changes them). None when
    llama_cpp is not installed."""
    import importlib.metadata
    import importlib.util

    try:
        spec = importlib.util.find_spec("llama_cpp")  # finds the package, does not import it
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return None
    try:
        version: str | None = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = None
    lib_dir = Path(spec.origin).parent / "lib"
    libs = sorted(lib_dir.glob("libllama.*")) + sorted(lib_dir.glob("llama.*"))
    key: dict[str, Any] = {"version": version, "package": str(Path(spec.origin).parent)}
    if libs:
        st = libs[0].stat()
        key.update(library=str(libs[0]), size=st.st_size, mtime_ns=st.st_mtime_ns)
    return key


def build_cache_path() -> Path:
    """Where the build info asked of an engine child is kept (in the lab home's cache)."""
    return config.cache_dir() / _BUILD_CACHE


def _ask_engine_for_build_info() -> dict[str, Any]:
    from lab.engine.runner import run_child

    rows: list[dict[str, Any]] = []
    outcome = run_child({"kind": "build_info", "payload": {}},
                        on_event=lambda e: rows.append(e["row"]) if e.get("event") == "row" else None,
                        timeout=120)
    if outcome.status == "ok" and rows:
        return rows[0]
    info: dict[str, Any] = dict.fromkeys(_BUILD_FIELDS)
    info["error"] = f"the engine could not read the llama.cpp build: {outcome.error or 'no answer'}"
    return info


def llama_cpp_info() -> dict[str, Any]:
    """The llama.cpp build in this environment, as an engine child reads it (no weights).

    Keys: ``version`` (llama-cpp-python), ``llama_version`` (libllama's own), ``ggml_version``,
    ``build_commit`` (ggml's GGML_COMMIT, the vendored llama.cpp's git short hash, possibly with
    "-dirty"), ``system_info``, ``gpu_offload``, ``backends`` (registered backend names),
    ``backends_label`` (llama-bench's column) and ``error`` (why it could not be read). Anything
    not obtainable is None.

    This process never loads llama.cpp: a child is asked once per installed llama-cpp-python
    (its version and library file), and the answer is cached in the lab home. Returns a copy.
    """
    install = llama_cpp_install()
    memo_key = json.dumps(install, sort_keys=True)
    info = _build_memo.get(memo_key)
    if info is None:
        info = _cached_or_asked(install)
        if not info.get("error"):
            _build_memo[memo_key] = info
    info = dict(info)
    if info.get("backends") is not None:
        info["backends"] = list(info["backends"])
    info["backends_label"] = backends_label(info.get("backends"))
    return info


def _cached_or_asked(install: dict[str, Any] | None) -> dict[str, Any]:
    if install is None:
        info: dict[str, Any] = dict.fromkeys(_BUILD_FIELDS)
        info["error"] = "llama_cpp cannot be imported: llama-cpp-python is not installed"
        return info
    path = build_cache_path()
    try:
        cached = json.loads(path.read_text())
        if cached.get("install") == install and isinstance(cached.get("info"), dict):
            return cached["info"]
    except (OSError, ValueError, AttributeError):
        pass  # absent or unreadable: ask again
    info = _ask_engine_for_build_info()
    if not info.get("error"):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"install": install, "info": info}, indent=1))
            tmp.replace(path)
        except OSError:
            pass  # a read-only home: ask again next time
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
    devices = gpus() if nvml.available() else None
    names = [g.name or "unknown GPU" for g in devices] if devices else []
    vram = [g.memory_total for g in devices] if devices else []
    fp: dict[str, Any] = {
        "hostname": config.machine_name(),
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
        # Not in the id: a governor change or a newly readable SMBIOS is not a new machine.
        "board_model": sensors.board_model(),
        "memory_type": sensors.memory_type(),
        "cpu_governor": sensors.cpu_governors(),
    }
    fp = {"id": fingerprint_id(fp), **fp}
    return tuple(fp.items())


def fingerprint() -> dict[str, Any]:
    """This machine as a ``machines`` row (every column but ``first_seen``, which the store
    fills). Computed once per process; each call returns a fresh copy."""
    return dict(_fingerprint())
