"""The llama.cpp build, read INSIDE an engine child (job kind ``build_info``).

Loading libllama registers every ggml backend (CUDA included) in the process that loads it, so
the parent never does: ``lab.hardware`` asks a child for these facts once per installed
llama-cpp-python and caches the answer on disk.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, Callable

from lab.engine import protocol

FIELDS = ("version", "llama_version", "ggml_version", "build_commit", "system_info", "gpu_offload",
          "backends", "error")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _ggml_string(lib: Any, name: str) -> str | None:
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


def backends_from_system_info(system_info: str | None, gpu_offload: bool | None) -> list[str] | None:
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


def read_build_info() -> dict[str, Any]:
    """The llama.cpp build in this process, read from the loaded library (no weights).

    Keys (``FIELDS``): ``version`` (llama-cpp-python), ``llama_version`` (libllama's own),
    ``ggml_version``, ``build_commit`` (ggml's GGML_COMMIT: the vendored llama.cpp's git short
    hash, possibly with "-dirty"), ``system_info``, ``gpu_offload``, ``backends`` (registered
    backend names) and ``error`` (why llama_cpp could not be imported). Unknown values are None.
    """
    info: dict[str, Any] = dict.fromkeys(FIELDS)
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
    info["backends"] = names or backends_from_system_info(info["system_info"], info["gpu_offload"])
    return info


def run_build_info_job(payload: dict[str, Any], emit: Callable[..., None]) -> None:
    """Entry point in the child for ``kind == "build_info"``: one ``row`` event."""
    emit(protocol.ROW, table="build_info", row=read_build_info())
