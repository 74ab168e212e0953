"""Does llama.cpp's extra CPU buffer types path (AMX tiles, repacked weights) run here?

Some virtual machines advertise AMX in /proc/cpuinfo while the hypervisor does not let a
process use the tile registers: llama.cpp then repacks the weights for AMX and dies with
SIGILL on the first batched decode. The engine must never crash for that, so the first time a
quantization type is used on a CPU, a throw-away child process loads the model with extra
buffer types on and decodes a batch.

Only two outcomes are remembered for that (CPU, llama.cpp version, quant type), in the lab
home: success (on), and death by a signal that says "this CPU cannot run this code" (SIGILL,
SIGSEGV, SIGBUS, SIGFPE: off, the same as llama-bench's ``--repack 0``, and ``rightsizer
doctor`` says so). Anything else — an OOM kill, a decode or load failure, a probe that does not
finish in time — says nothing certain about the CPU: extra buffer types are then off for this
run only, with a warning, and the probe runs again next time.

Run as ``python -m lab.engine.probe MODEL.gguf`` (the child side).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lab import config

_CACHE_NAME = "cpu_probe.json"
PROBE_TIMEOUT_S = 300.0  # $RIGHTSIZER_PROBE_TIMEOUT overrides it (seconds)
# Signals a CPU that cannot execute the repacked path dies of: worth remembering.
CPU_FAULT_SIGNALS = frozenset({signal.SIGILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE})
# The probe child's own exit codes
EXIT_LOAD_FAILED, EXIT_DECODE_FAILED = 3, 4


@dataclass
class ProbeVerdict:
    """Whether to use extra buffer types for this run. ``cached``: the verdict is remembered
    for this CPU; ``warning``: one sentence when they are off for this run only."""

    ok: bool
    cached: bool
    warning: str | None = None


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def classify(returncode: int | None, *, timed_out: bool = False, timeout: float = PROBE_TIMEOUT_S) -> ProbeVerdict:
    """The verdict for a probe child that ended with ``returncode`` (negative: killed by that
    signal, as subprocess reports it) or did not finish within ``timeout`` seconds."""
    off = "llama.cpp's extra CPU buffer types (AMX/repacked weights) are off for this run"
    if timed_out:
        return ProbeVerdict(False, False, f"{off}: their probe did not finish within {timeout:g} s")
    if returncode == 0:
        return ProbeVerdict(True, True)
    if returncode is not None and returncode < 0 and -returncode in CPU_FAULT_SIGNALS:
        return ProbeVerdict(False, True)
    if returncode is not None and returncode < 0:
        why = f"their probe was killed by {_signal_name(-returncode)}"
        if -returncode == signal.SIGKILL:
            why += " (out of memory?)"
    elif returncode == EXIT_LOAD_FAILED:
        why = "their probe could not load the model"
    elif returncode == EXIT_DECODE_FAILED:
        why = "their probe's decode failed"
    else:
        why = f"their probe exited with code {returncode}"
    return ProbeVerdict(False, False, f"{off}: {why}")


def run_probe(command: list[str], timeout: float = PROBE_TIMEOUT_S) -> ProbeVerdict:
    """Run one probe child (``command``) and classify how it ended; never raises for the
    child's sake. On timeout the child's whole session is killed."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return classify(proc.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return classify(None, timed_out=True, timeout=timeout)


def _cpu_key() -> str:
    flags = model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].strip()
                elif line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
    except OSError:
        model = platform.processor()
    try:
        from importlib.metadata import version

        lcpp = version("llama-cpp-python")
    except Exception:
        lcpp = "unknown"
    return hashlib.sha256(f"{model}|{flags}|{platform.machine()}|{lcpp}".encode()).hexdigest()[:16]


def _cache_path() -> Path:
    return config.cache_dir() / _CACHE_NAME


def _read_cache() -> dict[str, dict[str, bool]]:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def cached_verdicts() -> dict[str, bool]:
    """Verdicts for this CPU: quant type -> extra buffer types usable."""
    return _read_cache().get(_cpu_key(), {})


def _remember(key: str, file_type: str, ok: bool) -> None:
    cache = _read_cache()
    cache.setdefault(key, {})[file_type] = ok
    try:
        _cache_path().parent.mkdir(parents=True, exist_ok=True)
        tmp = _cache_path().with_name(f"{_CACHE_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(_cache_path())
    except OSError:
        pass


def probe_timeout() -> float:
    """Seconds a probe may take: ``$RIGHTSIZER_PROBE_TIMEOUT``, else ``PROBE_TIMEOUT_S``."""
    try:
        return float(os.environ["RIGHTSIZER_PROBE_TIMEOUT"])
    except (KeyError, ValueError):
        return PROBE_TIMEOUT_S


def extra_bufts_verdict(model_path: str | Path, file_type: str | None = None, *,
                        command: list[str] | None = None, timeout: float | None = None) -> ProbeVerdict:
    """Whether llama.cpp's extra CPU buffer types run for this model's quant type here.

    Probes once per (CPU, llama.cpp version, quant type) in a child process (``command``,
    default ``python -m lab.engine.probe MODEL``); only a clear verdict is cached (see the
    module's docstring). ``$RIGHTSIZER_REPACK`` = 0/1 overrides the probe.
    """
    if os.environ.get("RIGHTSIZER_REPACK") in ("0", "1"):
        return ProbeVerdict(os.environ["RIGHTSIZER_REPACK"] == "1", False)
    if file_type is None:
        from lab.gguf_info import inspect

        file_type = inspect(model_path).file_type
    key = _cpu_key()
    known = _read_cache().get(key, {})
    if file_type in known:
        return ProbeVerdict(bool(known[file_type]), True)
    verdict = run_probe(command or [sys.executable, "-m", "lab.engine.probe", str(model_path)],
                        probe_timeout() if timeout is None else timeout)
    if verdict.cached and file_type is not None:
        _remember(key, file_type, verdict.ok)
    return verdict


def _child(path: str) -> int:
    import llama_cpp as L

    from lab.engine.llamalog import set_log

    L.llama_backend_init()
    set_log(L)
    mp = L.llama_model_default_params()
    mp.use_extra_bufts = True
    model = L.llama_model_load_from_file(path.encode(), mp)
    if not model:
        return EXIT_LOAD_FAILED
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads, cp.n_threads_batch = 128, 64, 64, 1, 1
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        return EXIT_LOAD_FAILED
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    toks = (L.llama_token * 64)(*[(i * 7919) % n_vocab for i in range(64)])
    if L.llama_decode(ctx, L.llama_batch_get_one(toks, 64)) != 0:
        return EXIT_DECODE_FAILED
    L.llama_synchronize(ctx)
    return 0


if __name__ == "__main__":
    os._exit(_child(sys.argv[1]))
