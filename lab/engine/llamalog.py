"""llama.cpp's log in an engine child: to stderr, unbuffered, without its debug lines.

Shared by the engine's model wrappers (``lab.engine.llm``) and the extra-buffer-types probe
child (``lab.engine.probe``), which must not depend on each other.
"""

from __future__ import annotations

import ctypes
import os
import re
from typing import Any

# ggml.h's enum ggml_log_level
LOG_DEBUG, LOG_CONT = 1, 5
LOG_ENV = "RIGHTSIZER_LLAMA_LOG"  # "debug": keep llama.cpp's debug lines too
_log_callback: Any = None  # llama.cpp holds a pointer to it: it must outlive every call

# "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB", "... CPU KV buffer size = ...":
# llama.cpp's own account of what it allocated, per buffer kind (model, KV, compute, output).
_BUFFER_LINE = re.compile(rb"\s(model|KV|compute|output) buffer size =\s*([\d.]+) MiB")
_allocated: dict[str, int] = {}


def take_allocated() -> dict[str, int]:
    """Bytes llama.cpp logged allocating per buffer kind since the last call (summed over
    devices: CPU_Mapped + CPU_REPACK, CUDA0 + CUDA_Host, ...), then forget them."""
    out = dict(_allocated)
    _allocated.clear()
    return out


def _note_allocation(text: bytes) -> None:
    m = _BUFFER_LINE.search(text)
    if m:
        kind = m.group(1).decode().lower()
        _allocated[kind] = _allocated.get(kind, 0) + round(float(m.group(2)) * 2**20)


def set_log(L: Any) -> None:
    """Send llama.cpp's log to stderr without its debug lines (unless $RIGHTSIZER_LLAMA_LOG is
    "debug"). A model load prints thousands of per-tensor debug lines; they would bury the
    lines that explain a failure in the crash report's tail and flood the app's log view."""
    global _log_callback
    debug = os.environ.get(LOG_ENV, "").strip().lower() == "debug"
    last = [0]

    def on_log(level: int, text: bytes | None, _user: Any) -> None:
        if level != LOG_CONT:
            last[0] = level
        if not text or (last[0] == LOG_DEBUG and not debug):
            return
        if b"buffer size" in text:
            _note_allocation(text)
        view = memoryview(text)
        while view:  # unbuffered: a line written before a crash must reach the parent
            view = view[os.write(2, view):]

    _log_callback = L.llama_log_callback(on_log)
    L.llama_log_set(_log_callback, ctypes.c_void_p(0))
