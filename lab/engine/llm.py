"""Thin, fast wrappers over llama.cpp's low-level C API, for use INSIDE an engine child only.

The high-level ``llama_cpp.Llama`` adds enough Python work per token to cost ~18% of tg speed
on a small model, so the engine talks to ``llama_decode`` directly: batches of tokens in, one
``llama_synchronize`` where llama-bench has one, logits read in place as numpy views.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lab.engine.llamalog import set_log, take_allocated  # noqa: F401  (workloads reach them as llm.*)
from lab.errors import LabError, ModelError

_L: Any = None


def _bindings() -> Any:
    """llama-cpp-python's ctypes bindings of the C API, ``llama_cpp.llama_cpp``.

    The package's ``__init__`` also imports its high-level ``Llama`` class and chat formats
    (jinja2 and more: about 0.1 s of every engine start), which the engine never uses. When the
    package is not imported yet, a bare stand-in holds its place while the bindings load, and
    leaves again: a later ``import llama_cpp`` runs the real ``__init__``, which finds the
    bindings already loaded."""
    import importlib
    import importlib.util
    import sys
    import types

    if "llama_cpp" in sys.modules:
        return importlib.import_module("llama_cpp.llama_cpp")
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError("No module named 'llama_cpp'")
    bare = types.ModuleType("llama_cpp")
    bare.__path__ = list(spec.submodule_search_locations)
    sys.modules["llama_cpp"] = bare
    try:
        return importlib.import_module("llama_cpp.llama_cpp")
    finally:
        if sys.modules.get("llama_cpp") is bare:
            del sys.modules["llama_cpp"]


def lib() -> Any:
    """Import llama.cpp's bindings once, initialise the backend and route its log (``set_log``)."""
    global _L
    if _L is None:
        L = _bindings()
        L.llama_backend_init()
        set_log(L)
        _L = L
    return _L


_preloaded: "tuple[tuple[str, int, bool | None], Model] | None" = None


def preload(path: str, *, n_gpu_layers: int = 0, repack: bool | None = None) -> None:
    """Load a model ahead of the job that will ask for it (a spare worker told which model comes
    first). A file that does not load is left for the job itself to report."""
    global _preloaded
    try:
        _preloaded = ((str(path), int(n_gpu_layers), repack), Model(path, n_gpu_layers=n_gpu_layers, repack=repack))
    except LabError:
        _preloaded = None


def take_preloaded(path: str, *, n_gpu_layers: int = 0, repack: bool | None = None) -> "tuple[Model | None, bool]":
    """(the preloaded model if it is this one with these settings, whether another was freed)."""
    global _preloaded
    slot, _preloaded = _preloaded, None
    if slot is None:
        return None, False
    if slot[0] == (str(path), int(n_gpu_layers), repack):
        return slot[1], False
    slot[1].close()
    return None, True


def ggml_type(name: str) -> int:
    """``"q8_0"`` -> GGML_TYPE_Q8_0 (for -ctk/-ctv)."""
    value = getattr(lib(), f"GGML_TYPE_{name.upper()}", None)
    if value is None:
        raise LabError(f"Unknown KV cache type '{name}' (try f16, q8_0, q4_0)")
    return int(value)


class _ThreadpoolParams(ctypes.Structure):
    # struct ggml_threadpool_params (ggml.h); GGML_MAX_N_THREADS = 512
    _fields_ = [
        ("cpumask", ctypes.c_bool * 512),
        ("n_threads", ctypes.c_int),
        ("prio", ctypes.c_int),
        ("poll", ctypes.c_uint32),
        ("strict_cpu", ctypes.c_bool),
        ("paused", ctypes.c_bool),
    ]


_threadpool_api: Any = None


def _threadpool_functions() -> Any:
    """ggml_threadpool_new/free and llama_attach_threadpool, which llama-cpp-python does not
    bind; None when the shared libraries do not export them."""
    global _threadpool_api
    if _threadpool_api is None:
        L = lib()
        libdir = Path(L.__file__).parent / "lib"
        try:
            cpu = next(iter(sorted(libdir.glob("libggml-cpu.*")) + sorted(libdir.glob("ggml-cpu.*"))), None)
            ggml_cpu = ctypes.CDLL(str(cpu)) if cpu else None
            llama = L.llama_cpp._lib
            new = ggml_cpu.ggml_threadpool_new
            new.argtypes, new.restype = [ctypes.POINTER(_ThreadpoolParams)], ctypes.c_void_p
            free = ggml_cpu.ggml_threadpool_free
            free.argtypes, free.restype = [ctypes.c_void_p], None
            attach = llama.llama_attach_threadpool
            attach.argtypes, attach.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p], None
            _threadpool_api = (new, free, attach)
        except (AttributeError, OSError, TypeError):
            _threadpool_api = False
    return _threadpool_api or None


class Model:
    """A loaded llama.cpp model and its vocabulary."""

    def __init__(self, path: str | Path, *, n_gpu_layers: int = 0, use_mmap: bool = True,
                 repack: bool | None = None):
        """``repack``: llama.cpp's extra CPU buffer types (AMX, repacked weights); None asks
        the probe whether they run on this CPU for this model's quant type."""
        self.repack_warning: str | None = None
        if repack is None:
            from lab.engine.probe import extra_bufts_verdict

            verdict = extra_bufts_verdict(path)
            repack, self.repack_warning = verdict.ok, verdict.warning
            if verdict.warning:  # into llama.cpp's log stream, so the run's log shows it
                os.write(2, f"warning: {verdict.warning}\n".encode())
        L = lib()
        params = L.llama_model_default_params()
        params.n_gpu_layers = int(n_gpu_layers)
        params.load_mode = L.LLAMA_LOAD_MODE_MMAP if use_mmap else L.LLAMA_LOAD_MODE_NONE
        params.use_extra_bufts = bool(repack)
        self.repack = bool(repack)
        self.path = Path(path)
        self.ptr = L.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise ModelError(f"llama.cpp could not load {self.path.name} (see its log above)")
        self.vocab = L.llama_model_get_vocab(self.ptr)
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self.bos = int(L.llama_vocab_bos(self.vocab))
        self.size = int(L.llama_model_size(self.ptr))
        self.n_params = int(L.llama_model_n_params(self.ptr))
        buf = ctypes.create_string_buffer(256)
        L.llama_model_desc(self.ptr, buf, 256)
        self.desc = buf.value.decode("utf-8", "replace")
        self._piece_buf = ctypes.create_string_buffer(256)

    def close(self) -> None:
        if self.ptr:
            lib().llama_model_free(self.ptr)
            self.ptr = None

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        L = lib()
        data = text.encode("utf-8")
        n_max = len(data) + 16
        arr = (L.llama_token * n_max)()
        n = L.llama_tokenize(self.vocab, data, len(data), arr, n_max, add_special, parse_special)
        if n < 0:
            arr = (L.llama_token * -n)()
            n = L.llama_tokenize(self.vocab, data, len(data), arr, -n, add_special, parse_special)
        return list(arr[:n])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        L = lib()
        n = L.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, special)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, big, -n, 0, special)
            return big.raw[:n]
        return self._piece_buf.raw[:n]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(lib().llama_vocab_is_eog(self.vocab, token))

    def chat_template(self) -> str | None:
        raw = lib().llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8", "replace") if raw else None

    def apply_chat_template(self, messages: Sequence[dict[str, str]], *, add_assistant: bool = True) -> str:
        """Render messages with the model's own template (llama.cpp's built-in renderer).

        Models without a template get a plain "role: content" rendering; ``chat_template_used``
        says which of the two a run got, so it is recorded rather than hidden.
        """
        tmpl = lib().llama_model_chat_template(self.ptr, None)
        if not tmpl:
            body = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
            return body + ("\nassistant:" if add_assistant else "")
        text = _render_chat(tmpl, messages, add_assistant)
        if text is None:
            raise ModelError("llama.cpp cannot render this model's chat template")
        return text

    def chat_template_used(self) -> str:
        """The template ``apply_chat_template`` renders with, as recorded beside a chat result:
        ``"model:<name>"`` (the model's own template, which llama.cpp renders as its built-in
        ``<name>``: the first built-in that renders a probe conversation identically),
        ``"model"`` (the model's template matches no built-in by that probe) or
        ``FALLBACK_TEMPLATE`` (the model has none: plain "role: content" lines)."""
        from lab.engine.protocol import FALLBACK_TEMPLATE

        L = lib()
        tmpl = L.llama_model_chat_template(self.ptr, None)
        if not tmpl:
            return FALLBACK_TEMPLATE
        own = _render_chat(tmpl, _PROBE_CHAT, True)
        names = (ctypes.c_char_p * 128)()
        for i in range(min(int(L.llama_chat_builtin_templates(names, len(names))), len(names))):
            if own is not None and _render_chat(names[i], _PROBE_CHAT, True) == own:
                return f"model:{names[i].decode()}"
        return "model"


# Two turns with a system message: enough to tell llama.cpp's built-in chat formats apart.
_PROBE_CHAT = ({"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
               {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"})


def _render_chat(tmpl: bytes, messages: Sequence[dict[str, str]], add_assistant: bool) -> str | None:
    """``llama_chat_apply_template`` with a template string or a built-in's name; None when
    llama.cpp cannot render it."""
    L = lib()
    keep = [(m["role"].encode(), m["content"].encode()) for m in messages]
    arr = (L.llama_chat_message * len(keep))()
    for i, (role, content) in enumerate(keep):
        arr[i].role = role
        arr[i].content = content
    size = sum(len(r) + len(c) for r, c in keep) * 2 + 256
    buf = ctypes.create_string_buffer(size)
    n = L.llama_chat_apply_template(tmpl, arr, len(keep), add_assistant, buf, size)
    if n > size:
        buf = ctypes.create_string_buffer(n)
        n = L.llama_chat_apply_template(tmpl, arr, len(keep), add_assistant, buf, n)
    return None if n < 0 else buf.raw[:n].decode("utf-8", "replace")


class Context:
    """A llama.cpp context (KV cache + compute buffers) over a loaded model."""

    def __init__(self, model: Model, *, n_ctx: int, n_batch: int = 2048, n_ubatch: int = 512,
                 n_threads: int = 1, flash_attn: int = -1, type_k: str = "f16", type_v: str = "f16",
                 n_seq_max: int = 1, kv_unified: bool = False, threadpool: bool = True):
        """``threadpool``: attach a persistent ggml threadpool (llama-bench's way); without one
        llama.cpp makes one per graph, as llama-batched-bench and llama-perplexity run."""
        L = lib()
        p = L.llama_context_default_params()
        p.n_ctx = int(n_ctx)
        p.n_batch = int(n_batch)
        p.n_ubatch = int(n_ubatch)
        p.n_seq_max = int(n_seq_max)
        p.kv_unified = bool(kv_unified)
        p.n_threads = int(n_threads)
        p.n_threads_batch = int(n_threads)
        p.flash_attn_type = int(flash_attn)
        p.type_k = ggml_type(type_k)
        p.type_v = ggml_type(type_v)
        p.no_perf = True
        self.model = model
        self.n_ctx = int(n_ctx)
        self.n_batch = int(n_batch)
        self.n_threads = int(n_threads)
        self.ptr = L.llama_init_from_model(model.ptr, p)
        if not self.ptr:
            raise LabError(
                f"llama.cpp could not create a context of {n_ctx} tokens for {model.path.name} "
                "(out of memory, or an unsupported setting; see its log)"
            )
        self.mem = L.llama_get_memory(self.ptr)
        self._one = (L.llama_token * 1)()
        self._buf = (L.llama_token * max(1, int(n_batch)))()
        self._batch_all: Any = None
        self._batch_all_n = 0
        self._threadpool: Any = None
        if threadpool:
            self.attach_threadpool(int(n_threads))

    def attach_threadpool(self, n_threads: int, poll: int = 50) -> bool:
        """Give the context a persistent ggml threadpool that polls between graphs, as
        llama-bench does (``--poll 50``); without one ggml starts threads for every graph."""
        api = _threadpool_functions()
        if api is None:
            return False
        new, free, attach = api
        params = _ThreadpoolParams()
        params.n_threads, params.prio, params.poll = n_threads, 0, poll
        pool = new(ctypes.byref(params))
        if not pool:
            return False
        attach(self.ptr, pool, pool)
        if self._threadpool:
            free(self._threadpool)
        self._threadpool = pool
        self.n_threads = n_threads
        return True

    def close(self) -> None:
        L = lib()
        if self._batch_all is not None:
            L.llama_batch_free(self._batch_all)
            self._batch_all = None
        if self.ptr:
            L.llama_free(self.ptr)
            self.ptr = None
        if self._threadpool:
            _threadpool_functions()[1](self._threadpool)
            self._threadpool = None

    def set_threads(self, n_threads: int) -> None:
        lib().llama_set_n_threads(self.ptr, n_threads, n_threads)
        if self._threadpool:
            self.attach_threadpool(n_threads)
        self.n_threads = n_threads

    def clear(self) -> None:
        """Empty the KV cache (llama-bench clears it before every repetition)."""
        lib().llama_memory_clear(self.mem, False)

    def pos_max(self) -> int:
        return int(lib().llama_memory_seq_pos_max(self.mem, 0))

    def synchronize(self) -> None:
        lib().llama_synchronize(self.ptr)

    def decode_one(self, token: int) -> None:
        """Decode a single token at the next position; logits for it become available."""
        L = lib()
        self._one[0] = token
        rc = L.llama_decode(self.ptr, L.llama_batch_get_one(self._one, 1))
        if rc != 0:
            raise LabError(f"llama_decode failed with code {rc} (context full or out of memory)")

    def decode(self, tokens: Sequence[int]) -> None:
        """Decode tokens in batches of n_batch; only the last token's logits are computed."""
        L = lib()
        buf = self._buf
        n_batch = self.n_batch
        for start in range(0, len(tokens), n_batch):
            chunk = tokens[start:start + n_batch]
            n = len(chunk)
            buf[:n] = chunk
            rc = L.llama_decode(self.ptr, L.llama_batch_get_one(buf, n))
            if rc != 0:
                raise LabError(f"llama_decode failed with code {rc} (context full or out of memory)")

    def logits_last(self) -> np.ndarray:
        """The newest token's logits as a numpy view (valid until the next decode)."""
        L = lib()
        ptr = L.llama_get_logits_ith(self.ptr, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))

    def decode_all_logits(self, tokens: Sequence[int], start_pos: int = 0) -> np.ndarray:
        """Decode tokens (at most n_batch) asking for logits at every position; returns a
        float32 array [len(tokens), n_vocab] copied out of llama.cpp's buffer."""
        L = lib()
        n = len(tokens)
        if n > self.n_batch:
            raise ValueError("decode_all_logits takes at most n_batch tokens")
        if self._batch_all is None or self._batch_all_n < n:
            if self._batch_all is not None:
                L.llama_batch_free(self._batch_all)
            self._batch_all = L.llama_batch_init(n, 0, 1)
            self._batch_all_n = n
        b = self._batch_all
        b.n_tokens = n
        for i, tok in enumerate(tokens):
            b.token[i] = tok
            b.pos[i] = start_pos + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1
        rc = L.llama_decode(self.ptr, b)
        if rc != 0:
            raise LabError(f"llama_decode failed with code {rc} (context full or out of memory)")
        ptr = L.llama_get_logits(self.ptr)
        return np.ctypeslib.as_array(ptr, shape=(n, self.model.n_vocab)).copy()

    def state_get(self) -> bytes:
        L = lib()
        size = L.llama_state_seq_get_size(self.ptr, 0)
        buf = (ctypes.c_uint8 * size)()
        L.llama_state_seq_get_data(self.ptr, buf, size, 0)
        return bytes(buf)

    def state_set(self, data: bytes) -> bool:
        L = lib()
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return L.llama_state_seq_set_data(self.ptr, buf, len(data), 0) != 0


class GrammarSampler:
    """Greedy sampling constrained by a GBNF grammar (llama.cpp enforces it token by token)."""

    def __init__(self, model: Model, grammar: str, root: str = "root"):
        L = lib()
        self.model = model
        self.chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        g = L.llama_sampler_init_grammar(model.vocab, grammar.encode(), root.encode())
        if not g:
            L.llama_sampler_free(self.chain)
            self.chain = None
            raise LabError("llama.cpp rejected the grammar (see its log for the line)")
        L.llama_sampler_chain_add(self.chain, g)
        L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_greedy())

    def sample(self, ctx: Context) -> int:
        """Pick (and accept) the next token from the newest logits."""
        return int(lib().llama_sampler_sample(self.chain, ctx.ptr, -1))

    def reset(self) -> None:
        lib().llama_sampler_reset(self.chain)

    def close(self) -> None:
        if self.chain:
            lib().llama_sampler_free(self.chain)
            self.chain = None
