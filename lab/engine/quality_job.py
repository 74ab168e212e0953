"""The engine child's side of quality: decode the text's chunks the way llama-perplexity does and
turn the logits into the reference cache (``mode = "reference"``) or into one model's figures
against it (``mode = "compare"``). See :mod:`lab.quality` for what is counted and cached.

Like llama-perplexity, several chunks share one ``llama_decode`` (``n_batch / n_ctx`` of them,
each in its own sequence with its own KV cells), logits are asked for only at the scored
positions, and they are read in place from llama.cpp's buffer as a numpy view. Packing changes
no figure: each sequence attends to its own cells only, so a chunk's logits are bit for bit the
same alone or packed. The number packed is capped so that the logits of one decode stay within
``LOGITS_BUDGET`` (llama-perplexity holds 4 x 256 rows of the vocabulary: 1 GiB at 262k tokens).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from lab.errors import LabError
from lab.quality import (_ARRAYS, CACHE_VERSION, TAIL_SAMPLES, TOP_K, cache_bytes, read_cache_meta)
from lab.quality_numerics import RefBlock, compare_block, reference_block, summarize

N_BATCH = 2048  # llama-perplexity's default -b: n_batch / n_ctx chunks per decode
LOGITS_BUDGET = 256 << 20  # bytes of float32 logits one decode may return


def chunks_per_decode(n_ctx: int, n_vocab: int, n_chunk: int) -> int:
    """How many chunks share one decode: llama-perplexity's ``n_batch / n_ctx``, capped by the
    logits budget and by the number of chunks."""
    scored = n_ctx - n_ctx // 2
    by_memory = LOGITS_BUDGET // (scored * n_vocab * 4)
    return max(1, min(N_BATCH // n_ctx, by_memory, n_chunk))


class ChunkDecoder:
    """A context that decodes up to ``n_seq`` chunks of ``n_ctx`` tokens at once, each in its own
    sequence from position 0, with logits at positions ``>= first`` only."""

    def __init__(self, model: Any, n_ctx: int, n_seq: int, n_threads: int):
        from lab.engine import llm

        self.L = llm.lib()
        self.model, self.n_ctx, self.n_seq = model, n_ctx, n_seq
        total = n_ctx * n_seq
        self.ctx = llm.Context(model, n_ctx=total, n_batch=total, n_ubatch=min(total, 512),
                               n_threads=n_threads, n_seq_max=n_seq)
        # no polling between decodes: the numerics run on these cores right after each one
        self.ctx.attach_threadpool(n_threads, poll=0)
        self.batch = self.L.llama_batch_init(total, 0, 1)

    def decode(self, chunks: list[list[int]], first: int) -> np.ndarray:
        """Logits [len(chunks), n_ctx - first, n_vocab] (float32), a view of llama.cpp's buffer
        valid until the next decode."""
        b, n_ctx = self.batch, self.n_ctx
        k = 0
        for s, chunk in enumerate(chunks):
            for i, tok in enumerate(chunk):
                b.token[k] = tok
                b.pos[k] = i
                b.n_seq_id[k] = 1
                b.seq_id[k][0] = s
                b.logits[k] = i >= first
                k += 1
        b.n_tokens = k
        self.ctx.clear()
        rc = self.L.llama_decode(self.ctx.ptr, b)
        if rc != 0:
            raise LabError(f"llama_decode failed with code {rc} (out of memory?)")
        ptr = self.L.llama_get_logits(self.ctx.ptr)
        return np.ctypeslib.as_array(ptr, shape=(len(chunks), n_ctx - first, self.model.n_vocab))

    def close(self) -> None:
        if self.batch is not None:
            self.L.llama_batch_free(self.batch)
            self.batch = None
        self.ctx.close()


def _groups(tokens: list[int], n_ctx: int, n_chunk: int, n_seq: int, add_bos: bool,
            bos: int) -> Iterator[tuple[int, list[list[int]]]]:
    """(index of the first chunk, chunks) of up to n_seq chunks; chunk i is tokens
    [i*n_ctx, (i+1)*n_ctx) with its first token replaced by BOS where the vocabulary adds one."""
    for g in range(0, n_chunk, n_seq):
        chunks = []
        for i in range(g, min(g + n_seq, n_chunk)):
            chunk = list(tokens[i * n_ctx:(i + 1) * n_ctx])
            if add_bos:
                chunk[0] = bos
            chunks.append(chunk)
        yield g, chunks


def _next_tokens(tokens: list[int], g: int, n: int, n_ctx: int, first: int) -> np.ndarray:
    """The token each output row predicts, chunk by chunk; the last row of a chunk predicts
    nothing and gets 0 (it is dropped after the numerics)."""
    out = np.zeros((n, n_ctx - first), dtype=np.int64)
    for s in range(n):
        start = (g + s) * n_ctx
        out[s, :-1] = tokens[start + first + 1:start + n_ctx]
    return out.reshape(-1)


def _scored(arr: np.ndarray, n: int) -> np.ndarray:
    """Rows of n chunks' outputs without each chunk's last row (which predicts nothing)."""
    per = arr.shape[0] // n
    return arr.reshape(n, per, *arr.shape[1:])[:, :-1].reshape(n * (per - 1), *arr.shape[1:])


def _with_last(arr: np.ndarray, n: int) -> np.ndarray:
    """Per-position cached figures of n chunks, each chunk's last row repeated so that they
    line up with the decode's output rows."""
    per = arr.shape[0] // n
    a = arr.reshape(n, per, *arr.shape[1:])
    return np.concatenate([a, a[:, -1:]], axis=1).reshape(n * (per + 1), *arr.shape[1:])


def _open(payload: dict[str, Any], path: str) -> Any:
    """The model, taken from a spare worker's preload when it is this one."""
    from lab.engine import llm
    from lab.engine.worker import reset_peak_rss

    n_gpu_layers, repack = int(payload.get("n_gpu_layers") or 0), payload.get("repack")
    model, freed = llm.take_preloaded(path, n_gpu_layers=n_gpu_layers, repack=repack)
    if freed:
        reset_peak_rss()  # the peak is this job's model alone, not the one preloaded in vain
    return model or llm.Model(path, n_gpu_layers=n_gpu_layers, repack=repack)


def _build_reference(payload: dict[str, Any], emit: Callable[..., None]) -> None:
    from lab.engine import protocol
    from lab.engine.worker import peak_rss_bytes

    n_ctx = int(payload["n_ctx"])
    first = n_ctx // 2
    n_threads = int(payload["n_threads"])
    text = Path(payload["text_path"]).read_text(encoding="utf-8")
    t0 = time.perf_counter()
    model = _open(payload, payload["reference"])
    decoder = None
    pool = ThreadPoolExecutor(n_threads)
    try:
        tokens = model.tokenize(text, add_special=True, parse_special=False)
        n_chunk_max = len(tokens) // n_ctx
        if len(tokens) < 2 * n_ctx:
            raise LabError(
                f"The text has {len(tokens)} tokens; a context of {n_ctx} needs at least {2 * n_ctx} "
                "(use a longer --text or a smaller -c)"
            )
        wanted = payload.get("n_chunks")
        n_chunk = n_chunk_max if not wanted else min(int(wanted), n_chunk_max)
        n_seq = chunks_per_decode(n_ctx, model.n_vocab, n_chunk)
        decoder = ChunkDecoder(model, n_ctx, n_seq, n_threads)
        emit(protocol.LOADED, load_ms=(time.perf_counter() - t0) * 1000, n_vocab=model.n_vocab,
             desc=model.desc, model_size=model.size, n_params=model.n_params, chunks_per_decode=n_seq)
        k = min(int(payload.get("top_k", TOP_K)), model.n_vocab)
        m = int(payload.get("tail_samples", TAIL_SAMPLES)) if k < model.n_vocab else 0
        per_chunk = n_ctx - 1 - first
        n_pos = n_chunk * per_chunk
        idx_dtype = np.uint16 if model.n_vocab <= 65536 else np.uint32
        final = Path(payload["cache_dir"])
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shapes = {
            "top_idx": ((n_pos, k), idx_dtype), "top_lp": ((n_pos, k), np.float32),
            "tail_idx": ((n_pos, m), idx_dtype), "tail_lp": ((n_pos, m), np.float32),
            "tail_mass": ((n_pos,), np.float64), "nll": ((n_pos,), np.float64), "top1": ((n_pos,), np.int32),
        }
        arrays = {name: np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dt, shape=shape)
                  for name, (shape, dt) in shapes.items()}
        np.save(tmp / "tokens.npy", np.asarray(tokens[: n_chunk * n_ctx], dtype=np.int32))
        rng = np.random.default_rng(int(payload.get("seed", 20240611)))
        nll_sum = 0.0
        t_start = time.perf_counter()
        for g, chunks in _groups(tokens, n_ctx, n_chunk, n_seq, model.add_bos, model.bos):
            n = len(chunks)
            logits = decoder.decode(chunks, first)
            block = reference_block(logits.reshape(-1, model.n_vocab), _next_tokens(tokens, g, n, n_ctx, first),
                                    k, m, rng, pool)
            sl = slice(g * per_chunk, (g + n) * per_chunk)
            for name in _ARRAYS:
                arrays[name][sl] = _scored(getattr(block, name), n)
            nll = arrays["nll"][sl]
            for s in range(n):
                nll_sum += float(nll[s * per_chunk:(s + 1) * per_chunk].sum())
                emit(protocol.PROGRESS, stage="reference", chunk=g + s + 1, n_chunks=n_chunk,
                     ppl=math.exp(nll_sum / ((g + s + 1) * per_chunk)), seconds=time.perf_counter() - t_start)
        for arr in arrays.values():
            arr.flush()
        del arrays
        meta = {
            "version": CACHE_VERSION, "reference": payload["reference"],
            "reference_sha256": payload["reference_sha256"], "text_sha256": payload["text_sha256"],
            "text_name": payload.get("text_name"), "n_ctx": n_ctx, "n_chunk": n_chunk,
            "n_chunk_max": n_chunk_max, "n_tokens": len(tokens), "n_vocab": model.n_vocab,
            "add_bos": model.add_bos, "top_k": k, "tail_samples": m, "first": first,
            "ppl_ref": math.exp(nll_sum / n_pos), "created_at": time.time(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        try:
            tmp.replace(final)
        except OSError:
            # another run finished the same cache meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            if read_cache_meta(final) is None:
                raise
        emit(protocol.ROW, table="kld_cache", peak_rss_bytes=peak_rss_bytes(), bytes=cache_bytes(final),
             seconds=time.perf_counter() - t_start, **meta)
    finally:
        pool.shutdown()
        if decoder is not None:
            decoder.close()
        model.close()


def _compare(payload: dict[str, Any], emit: Callable[..., None]) -> None:
    from lab.engine import protocol
    from lab.engine.worker import peak_rss_bytes

    cache = Path(payload["cache_dir"])
    meta = read_cache_meta(cache)
    if meta is None:
        raise LabError(f"The reference cache {cache} is missing or unreadable; run again to rebuild it")
    n_ctx, first = int(meta["n_ctx"]), int(meta["first"])
    if int(payload["n_ctx"]) != n_ctx:
        raise LabError(f"The reference cache was made with -c {n_ctx}, not {payload['n_ctx']}")
    n_chunk = min(int(payload.get("n_chunks") or meta["n_chunk"]), int(meta["n_chunk"]))
    n_threads = int(payload["n_threads"])
    per_chunk = n_ctx - 1 - first
    arrays = {name: np.load(cache / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
    tokens = np.load(cache / "tokens.npy").tolist()
    t0 = time.perf_counter()
    model = _open(payload, payload["model"])
    decoder = None
    pool = ThreadPoolExecutor(n_threads)
    try:
        if model.n_vocab != int(meta["n_vocab"]):
            raise LabError(
                f"{Path(payload['model']).name} has a vocabulary of {model.n_vocab} tokens and the reference "
                f"{meta['n_vocab']}; KL divergence needs the same tokenizer"
            )
        n_seq = chunks_per_decode(n_ctx, model.n_vocab, n_chunk)
        decoder = ChunkDecoder(model, n_ctx, n_seq, n_threads)
        emit(protocol.LOADED, load_ms=(time.perf_counter() - t0) * 1000, n_vocab=model.n_vocab,
             desc=model.desc, model_size=model.size, n_params=model.n_params, chunks_per_decode=n_seq)
        parts: dict[str, list[Any]] = {"kld": [], "nll": [], "nll_ref": [], "same_top": []}
        kld_sum = nll_sum = 0.0
        t_start = time.perf_counter()
        for g, chunks in _groups(tokens, n_ctx, n_chunk, n_seq, bool(meta["add_bos"]), model.bos):
            n = len(chunks)
            logits = decoder.decode(chunks, first)
            sl = slice(g * per_chunk, (g + n) * per_chunk)
            ref = RefBlock(**{name: _with_last(np.asarray(arrays[name][sl]), n) for name in _ARRAYS})
            figures = compare_block(logits.reshape(-1, model.n_vocab), _next_tokens(tokens, g, n, n_ctx, first),
                                    ref, pool)
            scored = {key: _scored(value, n) for key, value in figures.items()}
            for key, value in scored.items():
                parts[key].append(value)
            for s in range(n):
                one = slice(s * per_chunk, (s + 1) * per_chunk)
                kld_sum += float(scored["kld"][one].sum())
                nll_sum += float(scored["nll"][one].sum())
                done = (g + s + 1) * per_chunk
                emit(protocol.PROGRESS, stage="compare", chunk=g + s + 1, n_chunks=n_chunk, kld=kld_sum / done,
                     ppl=math.exp(nll_sum / done), seconds=time.perf_counter() - t_start)
        result = summarize(*(np.concatenate(parts[k]) for k in ("kld", "nll", "nll_ref", "same_top")))
        emit(protocol.ROW, table="quality", n_chunks=n_chunk, n_ctx=n_ctx, peak_rss_bytes=peak_rss_bytes(),
             seconds=time.perf_counter() - t_start, **result)
    finally:
        pool.shutdown()
        if decoder is not None:
            decoder.close()
        model.close()


def run_quality_job(payload: dict[str, Any], emit: Callable[..., None]) -> None:
    """Entry point in the engine child for ``kind == "quality"``.

    ``payload["mode"]``: ``"reference"`` builds the cache from the reference model;
    ``"compare"`` scores one model against a built cache and emits a ``quality`` row.
    """
    mode = payload.get("mode")
    if mode == "reference":
        _build_reference(payload, emit)
    elif mode == "compare":
        _compare(payload, emit)
    else:
        raise LabError(f"unknown quality mode {mode!r}")
