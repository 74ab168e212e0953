"""llama.cpp's log in an engine child: to stderr, unbuffered, without its debug lines.

Shared by the engine's model wrappers (``lab.engine.llm``) and the extra-buffer-types probe
child (``lab.engine.probe``), which must not depend on each other.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

# ggml.h's enum ggml_log_level
LOG_DEBUG, LOG_CONT = 1, 5
LOG_ENV = "RIGHTSIZER_LLAMA_LOG"  # "debug": keep llama.cpp's debug lines too
_log_callback: Any = None  # llama.cpp holds a pointer to it: it must outlive every call


def set_log(L: Any) -> None:
    """Send llama.cpp's log to stderr without its debug lines (unless $RIGHTSIZER_LLAMA_LOG is
    "debug"). A model load prints thousands of per-tensor debug lines; they would bury the
    lines that explain a failure in the crash report's tail and flood the app's log view."""
    global _log_callback
    if os.environ.get(LOG_ENV, "").strip().lower() == "debug":
        # NULL restores llama.cpp's own logger: C writes to stderr, no Python callback per line.
        L.llama_log_set(ctypes.cast(None, L.llama_log_callback), ctypes.c_void_p(0))
        return
    last = [0]

    def on_log(level: int, text: bytes | None, _user: Any) -> None:
        if level != LOG_CONT:
            last[0] = level
        if last[0] == LOG_DEBUG or not text:
            return
        view = memoryview(text)
        while view:  # unbuffered: a line written before a crash must reach the parent
            view = view[os.write(2, view):]

    _log_callback = L.llama_log_callback(on_log)
    L.llama_log_set(_log_callback, ctypes.c_void_p(0))
