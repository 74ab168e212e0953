"""The engine CHILD process: reads one job from stdin, runs it, writes JSON events to stdout.

Run as ``python -m lab.engine.worker``. llama.cpp's log goes to stderr untouched. The process
owns the model's memory, so its peak RSS is the model's peak, and a crash or an OOM kill takes
only this process down; the parent records what happened.

Exit codes: 0 done, 2 a user-facing error (an ``error`` event carries the sentence), other
values or a signal: a crash (the parent reports the tail of stderr).
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import resource
import signal
import sys
import traceback
from typing import Any

from lab.engine import protocol
from lab.errors import LabError

_out = sys.stdout


def emit(event: str, **fields: Any) -> None:
    """Write one event as a JSON line and flush at once (the parent streams them)."""
    fields["event"] = event
    _out.write(json.dumps(fields) + "\n")
    _out.flush()


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark (VmHWM) to the current RSS, so the next reading is
    the peak of the coming test alone (Linux >= 4.0).

    Returns False when the reset failed (no /proc, a read-only /proc in a container, a kernel
    that refuses it): the next reading is then the peak since the engine started, and the
    result says so (``rss_reset_failed``).
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int | None:
    """VmHWM of this process, or getrusage's maxrss where /proc is absent (macOS)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):
        return None
    return maxrss if sys.platform == "darwin" else maxrss * 1024


PARENT_ENV = "RIGHTSIZER_ENGINE_PARENT"


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux).

    The child runs in its own session so that a terminal's Ctrl-C reaches only the parent;
    the flip side is that a parent killed outright (SIGKILL, a closed terminal, an OOM kill)
    would leave the child benchmarking for nobody, holding the CPU and the model's memory.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit() and os.getppid() != int(parent):
        os._exit(143)  # the parent died before the request took effect


def _handler(kind: str):
    target = protocol.JOB_HANDLERS.get(kind)
    if target is None:
        raise LabError(f"unknown job kind '{kind}'")
    module_name, _, func = target.partition(":")
    return getattr(importlib.import_module(module_name), func)


def main() -> int:
    die_with_parent()
    # The parent cancels with SIGTERM; exit promptly without a Python traceback.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides on Ctrl-C
    if os.environ.get("RIGHTSIZER_ENGINE_PRELOAD") == "1":
        from lab.engine import llm

        llm.lib()  # started ahead of its job: load llama.cpp while the parent prepares it
    try:
        job = json.loads(sys.stdin.readline())
        if isinstance(job, dict) and "preload" in job:  # a spare told which model its job opens
            from lab.engine import llm

            llm.preload(**job["preload"])
            job = json.loads(sys.stdin.read())
    except ValueError as exc:
        emit(protocol.ERROR, message=f"the engine received an unreadable job ({exc})")
        return 2
    emit(protocol.HELLO, pid=os.getpid(), python=sys.version.split()[0])
    try:
        _handler(job["kind"])(job.get("payload", {}), emit)
    except LabError as exc:
        emit(protocol.ERROR, message=str(exc))
        return 2
    except MemoryError:
        emit(protocol.ERROR, message="the engine ran out of memory")
        return 2
    except Exception:  # a bug: keep the traceback for the log tail, fail loudly
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        return 1
    emit(protocol.DONE)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: llama.cpp's static destructors can be slow or noisy.
    os._exit(code)
