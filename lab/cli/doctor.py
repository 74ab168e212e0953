"""``rightsizer doctor``: what this machine and this llama.cpp build can do, and what the lab
can measure here (NVML, RAPL, /proc). Figures the machine cannot give print as "n/a".

Only click is imported at module level; ``lab.hardware`` and ``lab.monitor`` (psutil) are
imported inside the command so that ``rightsizer --help`` stays fast. llama.cpp's build is
asked of an engine child (cached per installed llama-cpp-python), never loaded here.
"""

from __future__ import annotations

import json
from typing import Any

import click

from lab.cli.db import db_option, resolve_db
from lab.cli.output import NA, Column, format_option, human_bytes, render_table

# (key, label, how to show it) in the order the table prints them.
_ROWS: list[tuple[str, str, str]] = [
    ("id", "machine id", "text"),
    ("hostname", "hostname", "text"),
    ("os", "os", "text"),
    ("kernel", "kernel", "text"),
    ("arch", "arch", "text"),
    ("cpu_info", "cpu", "text"),
    ("cpu_cores", "cpu cores", "text"),
    ("cpu_threads", "cpu threads", "text"),
    ("board_model", "board", "text"),
    ("cpu_governor", "cpu governor", "text"),
    ("cpu_freq_mhz", "cpu clock now", "mhz"),
    ("cpu_temp_c", "cpu temperature now", "celsius"),
    ("throttle_count", "thermal throttle events", "text"),
    ("usable_physical_cores", "default threads", "text"),
    ("ram_bytes", "ram", "bytes"),
    ("memory_type", "memory type", "text"),
    ("memory_available_bytes", "ram available", "bytes"),
    ("gpu_info", "gpu", "text"),
    ("gpu_count", "gpu count", "text"),
    ("vram_bytes", "vram", "bytes"),
    ("nvml_status", "nvml", "text"),
    ("llama_cpp_version", "llama-cpp-python", "text"),
    ("llama_cpp_library_version", "libllama version", "text"),
    ("ggml_version", "ggml version", "text"),
    ("build_commit", "build commit", "text"),
    ("backends", "backends", "text"),
    ("gpu_offload", "gpu offload compiled in", "bool"),
    ("system_info", "system_info", "text"),
    ("rapl_readable", "cpu energy (RAPL) readable", "bool"),
    ("board_power", "board power (hwmon, INA3221)", "text"),
    ("paging_readable", "swap and major faults readable", "bool"),
    ("extra_bufts", "extra CPU buffer types", "text"),
    ("proc_available", "/proc available", "bool"),
    ("python_version", "python", "text"),
    ("lab_version", "rightsizer", "text"),
    ("lab_home", "lab home", "text"),
    ("db_path", "database", "text"),
    ("models_dir", "models folder", "text"),
    ("models_dir_storage", "models folder storage", "text"),
]


def _show(value: Any, kind: str) -> Any:
    if value is None:
        return None  # render_table prints "n/a"
    if kind == "bytes":
        return f"{human_bytes(value)} ({value} B)"
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "mhz":
        return f"{value:.0f} MHz"
    if kind == "celsius":
        return f"{value:.1f} °C"
    return value


def collect() -> dict[str, Any]:
    """Everything ``rightsizer doctor`` shows: the fingerprint, NVML and GPUs, llama.cpp
    build details, what the monitor can read here, and the lab's paths."""
    import os

    from lab import config, hardware, monitor, nvml, sensors

    llama = hardware.llama_cpp_info()
    info = hardware.fingerprint()
    rapl = monitor.rapl_readable()
    fs_type, device = hardware.model_storage(config.models_dir())  # need not exist yet
    info.update(
        llama_cpp_library_version=llama["llama_version"],
        ggml_version=llama["ggml_version"],
        backend_list=llama["backends"],
        llama_cpp_error=llama["error"],
        gpu_offload=llama["gpu_offload"],
        nvml_available=nvml.available(),
        nvml_status=nvml.status(),
        gpus=[g.to_dict() for g in hardware.gpus()],
        memory_available_bytes=hardware.memory_available(),
        usable_physical_cores=hardware.physical_cores(),
        rapl_readable=rapl,
        **sensors.report(finer_power=rapl or nvml.available()),
        paging_readable=None not in monitor.swap_counters() and None not in monitor.process_paging(os.getpid()),
        models_dir_storage=f"{fs_type} on {device}" if fs_type else None,
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


def _gpu_rows(gpus: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for gpu in gpus:
        limit = gpu.get("power_limit_w")
        parts = [
            gpu.get("name") or NA,
            f"{human_bytes(gpu.get('memory_used'))} used of {human_bytes(gpu.get('memory_total'))}",
            f"driver {gpu.get('driver_version') or NA}",
            f"power limit {f'{limit:.0f} W' if limit is not None else NA}",
            f"uuid {gpu.get('uuid') or NA}",
        ]
        rows.append({"field": f"gpu {gpu['index']}", "value": ", ".join(parts)})
    return rows


@click.command()
@format_option(default="table", choices=("table", "md", "json"))
@db_option
def doctor(fmt: str) -> None:
    """Show this machine's fingerprint, the llama.cpp build, and what can be measured here."""
    info = collect()
    info["db_path"] = str(resolve_db(None))  # the one this command line names
    if fmt == "json":
        click.echo(json.dumps(info, indent=2, default=str))
        return
    rows = [{"field": label, "value": _show(info.get(key), kind)} for key, label, kind in _ROWS]
    rows += _gpu_rows(info.get("gpus") or [])
    if info.get("llama_cpp_error"):
        rows.append({"field": "llama.cpp error", "value": info["llama_cpp_error"]})
    if fmt == "md":
        # system_info is itself "|"-separated; escaped so the Markdown table keeps two columns
        for row in rows:
            if isinstance(row["value"], str):
                row["value"] = row["value"].replace("|", "\\|")
        columns = [Column("field", "field", align="left"), Column("value", "value", align="left")]
        click.echo(render_table(rows, columns))
        return
    # A key/value listing reads better than a two-column pipe table with one very long row.
    width = max(len(row["field"]) for row in rows)
    for row in rows:
        value = NA if row["value"] is None else str(row["value"])
        click.echo(f"{row['field'].ljust(width)}  {value}")


COMMANDS = [doctor]
