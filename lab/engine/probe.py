"""Does llama.cpp's extra CPU buffer types path (AMX tiles, repacked weights) run here?

Some virtual machines advertise AMX in /proc/cpuinfo while the hypervisor does not let a
process use the tile registers: llama.cpp then repacks the weights for AMX and dies with
SIGILL on the first batched decode. The engine must never crash for that, so the first time a
quantization type is used on a CPU, a throw-away child process loads the model with extra
buffer types on and decodes a batch. If that child dies, extra buffer types are turned off for
that (CPU, llama.cpp version, quant type) — the same as llama-bench's ``--repack 0`` — and
``rightsizer doctor`` says so. The verdict is cached in the lab home.

Run as ``python -m lab.engine.probe MODEL.gguf`` (the child side).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from lab import config

_CACHE_NAME = "cpu_probe.json"


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


def extra_bufts_ok(model_path: str | Path, file_type: str | None = None) -> bool:
    """True when llama.cpp's extra CPU buffer types run for this model's quant type here.

    Probes once per (CPU, llama.cpp version, quant type) in a child process; cached after.
    """
    if os.environ.get("RIGHTSIZER_REPACK") in ("0", "1"):
        return os.environ["RIGHTSIZER_REPACK"] == "1"
    if file_type is None:
        from lab.gguf_info import inspect

        file_type = inspect(model_path).file_type
    key = _cpu_key()
    cache = _read_cache()
    if file_type in cache.get(key, {}):
        return bool(cache[key][file_type])
    proc = subprocess.run(
        [sys.executable, "-m", "lab.engine.probe", str(model_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, timeout=300,
    )
    ok = proc.returncode == 0
    # A load failure (exit 3) says nothing about the CPU: don't cache it.
    if proc.returncode != 3:
        cache = _read_cache()
        cache.setdefault(key, {})[file_type] = ok
        try:
            _cache_path().parent.mkdir(parents=True, exist_ok=True)
            tmp = _cache_path().with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            tmp.replace(_cache_path())
        except OSError:
            pass
    return ok


def _child(path: str) -> int:
    import llama_cpp as L

    from lab.engine.llm import set_log

    L.llama_backend_init()
    set_log(L)
    mp = L.llama_model_default_params()
    mp.use_extra_bufts = True
    model = L.llama_model_load_from_file(path.encode(), mp)
    if not model:
        return 3
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads, cp.n_threads_batch = 128, 64, 64, 1, 1
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        return 3
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    toks = (L.llama_token * 64)(*[(i * 7919) % n_vocab for i in range(64)])
    if L.llama_decode(ctx, L.llama_batch_get_one(toks, 64)) != 0:
        return 4
    L.llama_synchronize(ctx)
    return 0


if __name__ == "__main__":
    os._exit(_child(sys.argv[1]))
