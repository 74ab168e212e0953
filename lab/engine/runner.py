"""The PARENT side of the engine: spawn a worker, stream its events, cancel, time out, and
explain how it ended.

The child runs in its own session, so a Ctrl-C in the terminal reaches only the parent, which
then stops the child deliberately (SIGTERM, then SIGKILL) and reports the run as cancelled.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from lab.engine import protocol

LOG_TAIL_LINES = 40


@dataclass
class ChildOutcome:
    """How a child ended. ``error`` is one sentence for the user, None when ok."""

    status: str  # "ok", "failed" or "cancelled"
    exit_code: int | None
    signal: int | None
    error: str | None
    log_tail: str
    events: int = 0
    timed_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def worker_command() -> list[str]:
    return [sys.executable, "-m", "lab.engine.worker"]


def spawn_worker(env: dict[str, str] | None = None, *, preload: bool = False) -> subprocess.Popen:
    """Start a worker that waits for its job on stdin. ``preload``: it loads llama.cpp while it
    waits (for a worker started ahead of the bookkeeping that precedes its job)."""
    child_env = dict(os.environ if env is None else env)
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env["RIGHTSIZER_ENGINE_PARENT"] = str(os.getpid())  # see worker.die_with_parent
    # Large buffers always come from mmap and go back to the OS when freed, so a test's peak
    # RSS does not include a previous test's freed context (glibc otherwise raises the threshold).
    child_env.setdefault("MALLOC_MMAP_THRESHOLD_", "1048576")
    # llama.cpp's threads own the cores; numpy's BLAS (the quality numerics' block sums) must not
    # start threads of its own that spin beside them
    child_env.setdefault("OPENBLAS_NUM_THREADS", "1")
    if preload:
        child_env["RIGHTSIZER_ENGINE_PRELOAD"] = "1"
    return subprocess.Popen(
        worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, env=child_env, bufsize=0,
    )


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM to the worker's process group, SIGKILL after 3 s if it is still there."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stop(proc: subprocess.Popen) -> None:
    """End a worker that was never given a job, and close its pipes."""
    _terminate(proc)
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class Spare:
    """A worker started ahead of time, so that its start and its loading of llama.cpp overlap
    the parent's bookkeeping (hashing, the store) before the first job. ``take()`` hands it to
    ``run_child`` once; leaving the ``with`` block stops it if no job took it."""

    def __init__(self, env: dict[str, str] | None = None):
        self._proc: subprocess.Popen | None = spawn_worker(env, preload=True)

    def preload(self, path: str, *, n_gpu_layers: int = 0) -> None:
        """Have the waiting worker load this model now, for a job that will open it with these
        settings (one that opens another model frees it first)."""
        if self._proc is None or self._proc.stdin is None:
            return
        line = json.dumps({"preload": {"path": str(path), "n_gpu_layers": int(n_gpu_layers)}}) + "\n"
        try:
            self._proc.stdin.write(line.encode())
        except BrokenPipeError:
            pass

    def take(self) -> subprocess.Popen | None:
        proc, self._proc = self._proc, None
        return proc

    def close(self) -> None:
        proc = self.take()
        if proc is not None:
            _stop(proc)

    def __enter__(self) -> "Spare":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_child(job: dict[str, Any], *, on_event: Callable[[dict[str, Any]], None],
              on_log: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
              timeout: float | None = None, on_start: Callable[[int], None] | None = None,
              env: dict[str, str] | None = None, worker: subprocess.Popen | None = None) -> ChildOutcome:
    """Run one job in a fresh worker process (``worker``: one from ``Spare.take()``, else a new
    one started with ``env``); blocks until it ends.

    ``on_event`` gets every event dict in order, on this thread. ``on_log`` gets llama.cpp's
    stderr lines, on a reader thread. ``on_start`` gets the child's pid before the first event
    (for the monitor). A ``KeyboardInterrupt`` here stops the child and is re-raised after the
    outcome has been recorded in the returned object's ``extra["interrupted"]``.
    """
    proc = worker if worker is not None else spawn_worker(env)
    if on_start is not None:
        on_start(proc.pid)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)

    def read_stderr() -> None:
        assert proc.stderr is not None
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            if on_log is not None:
                try:
                    on_log(line)
                except Exception:  # a UI callback must never kill the log reader
                    pass

    stderr_thread = threading.Thread(target=read_stderr, name="engine-stderr", daemon=True)
    stderr_thread.start()

    stop_reason: dict[str, str] = {}
    finished = threading.Event()

    def stop_child(reason: str) -> None:
        if proc.poll() is not None:
            return
        stop_reason.setdefault("reason", reason)
        _terminate(proc)

    def watch() -> None:
        # Waits on the cancel event itself rather than polling it: a cancel acts at once, and
        # the thread wakes once a second (to notice the end) instead of 20 times. On two cores
        # every wake-up during tg takes a core from one of llama.cpp's threads.
        deadline = time.monotonic() + timeout if timeout else None
        while not finished.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                stop_child("timeout")
                return
            step = 1.0 if remaining is None else min(1.0, remaining)
            if cancel is None:
                finished.wait(step)
            elif cancel.wait(step):
                stop_child("cancelled")
                return

    watcher = threading.Thread(target=watch, name="engine-watch", daemon=True)
    watcher.start()

    error_message: str | None = None
    done = False
    n_events = 0
    interrupted = False
    try:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        for raw in iter(proc.stdout.readline, b""):
            try:
                event = json.loads(raw)
            except ValueError:
                tail.append(raw.decode("utf-8", "replace").rstrip())
                continue
            n_events += 1
            kind = event.get("event")
            if kind == protocol.ERROR:
                error_message = event.get("message")
            elif kind == protocol.DONE:
                done = True
            on_event(event)
    except KeyboardInterrupt:
        interrupted = True
        stop_child("cancelled")
    except BaseException:
        stop_child("failed")
        raise
    finally:
        finished.set()
        if proc.poll() is None and (interrupted or (cancel is not None and cancel.is_set())):
            stop_child("cancelled")
        proc.wait()
        stderr_thread.join(timeout=2)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    rc = proc.returncode
    sig = -rc if rc is not None and rc < 0 else None
    exit_code = rc if rc is not None and rc >= 0 else None
    reason = stop_reason.get("reason")
    log_tail = "\n".join(tail)
    if reason == "cancelled":
        outcome = ChildOutcome("cancelled", exit_code, sig, "cancelled by the user", log_tail, n_events)
    elif reason == "timeout":
        outcome = ChildOutcome(
            "failed", exit_code, sig, f"the engine took longer than {timeout:g} s and was stopped",
            log_tail, n_events, timed_out=True,
        )
    elif rc == 0 and done:
        outcome = ChildOutcome("ok", 0, None, None, log_tail, n_events)
    elif error_message:
        outcome = ChildOutcome("failed", exit_code, sig, error_message, log_tail, n_events)
    elif sig is not None:
        hint = " (out of memory?)" if sig == signal.SIGKILL else ""
        outcome = ChildOutcome(
            "failed", None, sig, f"the engine was killed by {_signal_name(sig)}{hint}", log_tail, n_events,
        )
    else:
        last = next((line for line in reversed(tail) if line.strip()), "")
        detail = f": {last.strip()}" if last else ""
        outcome = ChildOutcome("failed", exit_code, None, f"the engine exited with code {rc}{detail}", log_tail, n_events)
    if interrupted:
        outcome.extra["interrupted"] = True
    return outcome
