"""Fidelity of a model against a reference: perplexity and KL divergence, the way
``llama-perplexity --kl-divergence`` counts them.

How llama-perplexity counts (tools/perplexity/perplexity.cpp), and so how we count:

* the whole text is tokenized once (``add_special`` on, so BOS only where the vocabulary adds
  one; special tokens are not parsed);
* chunk i is tokens ``[i*n_ctx, (i+1)*n_ctx)``; its first token is replaced by BOS when the
  vocabulary adds one; the KV cache is cleared before each chunk;
* the logits at positions ``n_ctx/2 .. n_ctx-2`` are scored against the next token
  (255 per chunk at ``-c 512``); KLD is over the full softmax of both models.

The reference's side is computed once, in its own engine child, and cached compactly on disk
(``cache_dir()/kld/<key>``, key = sha256 of the reference file, of the text, and n_ctx). Per
scored position the cache keeps:

* the reference's log-probability (float32) of its ``TOP_K`` most likely tokens, exactly;
* ``TAIL_SAMPLES`` tokens drawn from the rest of the vocabulary in proportion to their
  probability (systematic sampling, fixed seed) with their log-probabilities, and the exact
  probability mass of that rest;
* the reference's log-probability of the true next token and its top token.

KL(P||Q) at a position is then ``sum_top p (log p - log q) + P_rest * (mean(d) - b (mean(r) -
Q_rest/P_rest))`` over the samples, with ``d = log(p/q)``, ``r = q/p`` and ``Q_rest`` the
candidate's exact mass outside the reference's top k: the head is exact and the tail term
estimates the tail's share from a probability-weighted sample, with ``r`` as a control variate
whose mean is known (``b``, its regression coefficient on ``d``, is fitted per position). The
mean KLD has no truncation bias, and each position's KLD is close enough for the percentiles,
which are single positions. Dropping the tail into one
"rest" bucket instead underestimates the demo's Q8_0 KLD by 2.2% at k=1024 and still 0.45% at
k=4096 (its distributions are flat: the top 1024 tokens leave a large share of the mass). On the
demo ladder this estimator came within 0.15% of the full-vocabulary KLD for Q8_0 and within
0.01% for Q4_0 and Q2_K (``tests/test_quality.py`` checks it). PPL, its ratio and the
same-top-token rate use exact figures. A cached position costs ``(TOP_K + TAIL_SAMPLES) * 6``
bytes (8 with a vocabulary above 65,536 tokens) plus 20: 106 MiB for the bundled text with the
demo model (47 chunks at ``-c 512``), against 1.1 GiB for llama-perplexity's dump of it.

Because the reference's log-probabilities are stored in float32 exactly as the candidate's are
computed, a model against itself gives a KLD of exactly 0 and a PPL ratio of exactly 1.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lab.errors import Cancelled, LabError
from lab.provenance import record_machine, run_extra

if TYPE_CHECKING:
    import numpy as np

    from lab.library import LocalModel
    from lab.store import Store

CACHE_VERSION = 1
TOP_K = 1024
TAIL_SAMPLES = 512
DEFAULT_N_CTX = 512
DEFAULT_TEXT = Path(__file__).parent / "data" / "quality_text.txt"
# Rows of logits turned into log-probabilities at once: bounds the child's float64 scratch
# memory (64 x 152k vocab x 8 B = 78 MB) whatever the vocabulary.
_ROW_BLOCK = 64

OnEvent = Callable[[dict[str, Any]], None]


# --- shared helpers -------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the numerics (pure numpy; the child calls these, tests call them directly) ------------


def log_softmax32(logits: "np.ndarray") -> "np.ndarray":
    """Row-wise log-softmax computed in float64, returned as float32.

    Both the reference and the candidate go through exactly this function, so identical logits
    give bit-identical log-probabilities (and a KLD of exactly 0)."""
    import numpy as np

    out = np.empty(logits.shape, dtype=np.float32)
    for start in range(0, logits.shape[0], _ROW_BLOCK):
        x = logits[start:start + _ROW_BLOCK].astype(np.float64)
        x -= x.max(axis=1, keepdims=True)
        x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
        out[start:start + _ROW_BLOCK] = x
    return out


@dataclass
class RefBlock:
    """The cached reference figures for a block of scored positions."""

    top_idx: "np.ndarray"    # [n, k] token ids, ascending per row
    top_lp: "np.ndarray"     # [n, k] float32 log-probs
    tail_idx: "np.ndarray"   # [n, m] token ids drawn from the rest in proportion to p
    tail_lp: "np.ndarray"    # [n, m] float32 log-probs
    tail_mass: "np.ndarray"  # [n] float64, exact mass outside the top k
    nll: "np.ndarray"        # [n] float64, -log p(next token)
    top1: "np.ndarray"       # [n] int32, the reference's most likely token


def _rest_cdf(lp_row: "np.ndarray", top: "np.ndarray") -> "np.ndarray":
    """Cumulative probability over the vocabulary with the ``top`` tokens left out."""
    import numpy as np

    p = np.exp(lp_row.astype(np.float64))
    p[top] = 0.0
    return np.cumsum(p)


def _rest_mass(lp_row: "np.ndarray", top: "np.ndarray") -> float:
    """Probability mass outside ``top``, summed in the order the reference's is: a model
    against itself gets the reference's figure bit for bit (and a KLD of exactly 0)."""
    return float(_rest_cdf(lp_row, top)[-1])


def reference_block(lp: "np.ndarray", next_tokens: "np.ndarray", k: int, m: int,
                    rng: "np.random.Generator") -> RefBlock:
    """Compress a block of reference log-probabilities ``lp`` [n, vocab] (float32)."""
    import numpy as np

    n, n_vocab = lp.shape
    k = min(k, n_vocab)
    m = m if k < n_vocab else 0
    if k < n_vocab:
        top = np.argpartition(-lp, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(n_vocab), (n, n_vocab))
    top = np.sort(top, axis=1)
    top_lp = np.take_along_axis(lp, top, axis=1)
    tail_idx = np.zeros((n, m), dtype=np.int64)
    tail_mass = np.zeros(n, dtype=np.float64)
    for i in range(n):
        if not m:
            break
        cdf = _rest_cdf(lp[i], top[i])
        mass = cdf[-1]
        tail_mass[i] = mass
        if mass <= 0.0:
            tail_idx[i] = top[i, 0]
            continue
        # systematic sampling: one uniform offset, m evenly spaced points on the tail's CDF
        u = (np.arange(m) + rng.random()) * (mass / m)
        tail_idx[i] = np.minimum(np.searchsorted(cdf, u, side="right"), n_vocab - 1)
    tail_lp = np.take_along_axis(lp, tail_idx, axis=1) if m else np.zeros((n, 0), dtype=np.float32)
    nll = -lp[np.arange(n), next_tokens].astype(np.float64)
    top1 = lp.argmax(axis=1).astype(np.int32)
    return RefBlock(top, top_lp, tail_idx, tail_lp, tail_mass, nll, top1)


def compare_block(lq: "np.ndarray", next_tokens: "np.ndarray", ref: RefBlock) -> dict[str, "np.ndarray"]:
    """Per-position KLD, NLL and same-top flags of candidate log-probs ``lq`` [n, vocab]."""
    import numpy as np

    n = lq.shape[0]
    rows = np.arange(n)[:, None]
    top_lp = ref.top_lp.astype(np.float64)
    head = (np.exp(top_lp) * (top_lp - lq[rows, ref.top_idx].astype(np.float64))).sum(axis=1)
    if ref.tail_idx.shape[1]:
        # The tail's sum_i p_i log(p_i/q_i) from samples drawn in proportion to p. With r = q/p
        # at a sample, E[r] = Q_rest/P_rest exactly (the candidate's own tail mass is known):
        # subtracting b * (mean(r) - Q_rest/P_rest), b fitted per position, removes most of the
        # sampling noise, since log(p/q) moves with r. One position's KLD then errs by ~2%
        # instead of 40-50% at Q8_0-like noise on a vocabulary whose top tokens leave a fifth
        # of the mass; the upper percentiles, single positions, need that.
        r = np.exp(lq[rows, ref.tail_idx].astype(np.float64) - ref.tail_lp.astype(np.float64))
        q_rest = np.array([_rest_mass(lq[i], ref.top_idx[i]) for i in range(n)])
        d = -np.log(r)
        rc = r - r.mean(axis=1, keepdims=True)
        var = (rc * rc).mean(axis=1)
        safe = np.where(var > 0, var, 1.0)
        beta = np.where(var > 0, (rc * (d - d.mean(axis=1, keepdims=True))).mean(axis=1) / safe, 0.0)
        p_rest = np.where(ref.tail_mass > 0, ref.tail_mass, 1.0)
        tail = np.where(ref.tail_mass > 0.0,
                        ref.tail_mass * (d.mean(axis=1) - beta * (r.mean(axis=1) - q_rest / p_rest)), 0.0)
    else:
        tail = np.zeros(n)
    return {
        "kld": head + tail,
        "nll": -lq[np.arange(n), next_tokens].astype(np.float64),
        "nll_ref": ref.nll,
        "same_top": (lq.argmax(axis=1) == ref.top1),
    }


def _mean_and_uncertainty(values: "np.ndarray") -> tuple[float, float]:
    """llama-perplexity's estimate: mean and sqrt((E[x^2] - E[x]^2) / (n - 1))."""
    import numpy as np

    n = len(values)
    mean = float(np.mean(values))
    var = float(np.mean(np.square(values))) - mean * mean
    return mean, math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0


def kld_percentile(values: "np.ndarray", fraction: float) -> float:
    """A percentile of per-position KLD values exactly as llama-perplexity prints it.

    llama-perplexity (tools/perplexity/perplexity.cpp, ``kl_divergence``) keeps the values as
    float32, sorts them, and for a fraction f (itself a float32 literal, 0.99f) takes
    ``p = f * (n - 1)`` in float32, ``i = floor(p)``, ``t = p - i`` and returns
    ``(1 - t) * v[i] + t * v[min(i + 1, n - 1)]``, all in float32 (f <= 0: the minimum, f >= 1:
    the maximum). That is linear interpolation between closest ranks, as numpy's default, but
    with the index and the interpolation rounded to float32. (A C++ build that fuses the last
    multiply-add may differ by one float32 ulp.)
    """
    import numpy as np

    v = np.sort(np.asarray(values, dtype=np.float32))
    f = np.float32(fraction)
    if f <= 0:
        return float(v[0])
    if f >= 1:
        return float(v[-1])
    p = f * np.float32(len(v) - 1)
    i = int(p)
    t = p - np.float32(i)
    return float((np.float32(1) - t) * v[i] + t * v[min(i + 1, len(v) - 1)])


def kld_median(values: "np.ndarray") -> float:
    """llama-perplexity's median KLD: the middle float32 value, or ``0.5f * (a + b)`` of the two."""
    import numpy as np

    v = np.sort(np.asarray(values, dtype=np.float32))
    n = len(v)
    return float(v[n // 2] if n % 2 else np.float32(0.5) * (v[n // 2] + v[n // 2 - 1]))


def summarize(kld: "np.ndarray", nll: "np.ndarray", nll_ref: "np.ndarray", same_top: "np.ndarray") -> dict[str, Any]:
    """The figures of one comparison, as llama-perplexity prints them."""
    import numpy as np

    n = len(kld)
    log_ppl, log_ppl_unc = _mean_and_uncertainty(nll)
    log_ref, log_ref_unc = _mean_and_uncertainty(nll_ref)
    cov = 0.0
    if n >= 10:
        cov = (float(np.mean(nll * nll_ref)) - float(np.mean(nll)) * float(np.mean(nll_ref))) / (n - 1)
    ratio_unc2 = log_ppl_unc ** 2 + log_ref_unc ** 2 - 2.0 * cov
    kld_mean, kld_unc = _mean_and_uncertainty(kld)
    same = float(np.mean(same_top)) if n else float("nan")
    ppl = math.exp(log_ppl)
    ratio = math.exp(log_ppl - log_ref)
    return {
        "n_tokens_scored": int(n),
        "ppl": ppl, "ppl_stderr": ppl * log_ppl_unc,
        "ppl_ref": math.exp(log_ref),
        "ppl_ratio": ratio, "ppl_ratio_stderr": ratio * math.sqrt(max(ratio_unc2, 0.0)),
        "kld_mean": kld_mean, "kld_stderr": kld_unc,
        "kld_p99": kld_percentile(kld, 0.99), "kld_p999": kld_percentile(kld, 0.999),
        "kld_median": kld_median(kld), "kld_max": float(np.max(kld)),
        "same_top_p": same,
        "same_top_p_stderr": math.sqrt(same * (1.0 - same) / (n - 1)) if n > 1 else None,
    }


# --- the cache ------------------------------------------------------------------------------


_ARRAYS = ("top_idx", "top_lp", "tail_idx", "tail_lp", "tail_mass", "nll", "top1")


def cache_key(reference_sha256: str, text_sha256: str, n_ctx: int, top_k: int = TOP_K,
              tail_samples: int = TAIL_SAMPLES) -> str:
    blob = f"v{CACHE_VERSION}|{reference_sha256}|{text_sha256}|{n_ctx}|{top_k}|{tail_samples}"
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_root() -> Path:
    from lab import config

    return config.cache_dir() / "kld"


def read_cache_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("version") != CACHE_VERSION or not all((path / f"{a}.npy").is_file() for a in _ARRAYS):
        return None
    return meta


def cache_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


# --- child side -----------------------------------------------------------------------------


def _decode_scored(ctx: Any, tokens: list[int], first: int) -> "np.ndarray":
    """Decode one chunk (KV cache cleared) asking for logits only at positions >= first, as
    llama-perplexity does; returns float32 [len(tokens) - first, vocab]."""
    import numpy as np

    from lab.engine import llm

    L = llm.lib()
    n = len(tokens)
    batch = L.llama_batch_init(n, 0, 1)
    try:
        batch.n_tokens = n
        for i, tok in enumerate(tokens):
            batch.token[i] = tok
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1 if i >= first else 0
        ctx.clear()
        rc = L.llama_decode(ctx.ptr, batch)
        if rc != 0:
            raise LabError(f"llama_decode failed with code {rc} (out of memory?)")
        ptr = L.llama_get_logits(ctx.ptr)
        return np.ctypeslib.as_array(ptr, shape=(n - first, ctx.model.n_vocab)).copy()
    finally:
        L.llama_batch_free(batch)


def _chunks(tokens: list[int], n_ctx: int, n_chunk: int, add_bos: bool, bos: int):
    for i in range(n_chunk):
        chunk = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        if add_bos:
            chunk[0] = bos
        yield i, chunk


def _open_model(payload: dict[str, Any], path: str):
    from lab.engine import llm

    model = llm.Model(path, n_gpu_layers=int(payload.get("n_gpu_layers") or 0), repack=payload.get("repack"))
    n_ctx = int(payload["n_ctx"])
    ctx = llm.Context(model, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=min(n_ctx, 512),
                      n_threads=int(payload["n_threads"]))
    return model, ctx


def _build_reference(payload: dict[str, Any], emit: Callable[..., None]) -> None:
    import numpy as np

    from lab.engine import protocol
    from lab.engine.worker import peak_rss_bytes

    n_ctx = int(payload["n_ctx"])
    first = n_ctx // 2
    text = Path(payload["text_path"]).read_text(encoding="utf-8")
    t0 = time.perf_counter()
    model, ctx = _open_model(payload, payload["reference"])
    try:
        emit(protocol.LOADED, load_ms=(time.perf_counter() - t0) * 1000, n_vocab=model.n_vocab,
             desc=model.desc, model_size=model.size, n_params=model.n_params)
        tokens = model.tokenize(text, add_special=True, parse_special=False)
        n_chunk_max = len(tokens) // n_ctx
        if len(tokens) < 2 * n_ctx:
            raise LabError(
                f"The text has {len(tokens)} tokens; a context of {n_ctx} needs at least {2 * n_ctx} "
                "(use a longer --text or a smaller -c)"
            )
        wanted = payload.get("n_chunks")
        n_chunk = n_chunk_max if not wanted else min(int(wanted), n_chunk_max)
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
        for i, chunk in _chunks(tokens, n_ctx, n_chunk, model.add_bos, model.bos):
            logits = _decode_scored(ctx, chunk, first)[:-1]
            nxt = np.asarray(tokens[i * n_ctx + first + 1:(i + 1) * n_ctx], dtype=np.int64)
            block = reference_block(log_softmax32(logits), nxt, k, m, rng)
            sl = slice(i * per_chunk, (i + 1) * per_chunk)
            for name in _ARRAYS:
                arrays[name][sl] = getattr(block, name)
            nll_sum += float(block.nll.sum())
            done = (i + 1) * per_chunk
            emit(protocol.PROGRESS, stage="reference", chunk=i + 1, n_chunks=n_chunk,
                 ppl=math.exp(nll_sum / done), seconds=time.perf_counter() - t_start)
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
        emit(protocol.ROW, table="kld_cache", peak_rss_bytes=peak_rss_bytes(), bytes=cache_bytes(final), **meta)
    finally:
        ctx.close()
        model.close()


def _compare(payload: dict[str, Any], emit: Callable[..., None]) -> None:
    import numpy as np

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
    per_chunk = n_ctx - 1 - first
    arrays = {name: np.load(cache / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
    tokens = np.load(cache / "tokens.npy").tolist()
    t0 = time.perf_counter()
    model, ctx = _open_model(payload, payload["model"])
    try:
        emit(protocol.LOADED, load_ms=(time.perf_counter() - t0) * 1000, n_vocab=model.n_vocab,
             desc=model.desc, model_size=model.size, n_params=model.n_params)
        if model.n_vocab != int(meta["n_vocab"]):
            raise LabError(
                f"{Path(payload['model']).name} has a vocabulary of {model.n_vocab} tokens and the reference "
                f"{meta['n_vocab']}; KL divergence needs the same tokenizer"
            )
        parts: dict[str, list[Any]] = {"kld": [], "nll": [], "nll_ref": [], "same_top": []}
        t_start = time.perf_counter()
        for i, chunk in _chunks(tokens, n_ctx, n_chunk, bool(meta["add_bos"]), model.bos):
            logits = _decode_scored(ctx, chunk, first)[:-1]
            nxt = np.asarray(tokens[i * n_ctx + first + 1:(i + 1) * n_ctx], dtype=np.int64)
            sl = slice(i * per_chunk, (i + 1) * per_chunk)
            ref = RefBlock(**{name: np.asarray(arrays[name][sl]) for name in _ARRAYS})
            ref.top_idx = ref.top_idx.astype(np.int64)
            ref.tail_idx = ref.tail_idx.astype(np.int64)
            figures = compare_block(log_softmax32(logits), nxt, ref)
            for key, value in figures.items():
                parts[key].append(value)
            kld_so_far = float(np.concatenate(parts["kld"]).mean())
            nll_so_far = float(np.concatenate(parts["nll"]).mean())
            emit(protocol.PROGRESS, stage="compare", chunk=i + 1, n_chunks=n_chunk, kld=kld_so_far,
                 ppl=math.exp(nll_so_far), seconds=time.perf_counter() - t_start)
        result = summarize(*(np.concatenate(parts[k]) for k in ("kld", "nll", "nll_ref", "same_top")))
        emit(protocol.ROW, table="quality", n_chunks=n_chunk, n_ctx=n_ctx, peak_rss_bytes=peak_rss_bytes(),
             seconds=time.perf_counter() - t_start, **result)
    finally:
        ctx.close()
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


# --- parent side ----------------------------------------------------------------------------


@dataclass
class QualityOptions:
    """``rightsizer quality MODEL... --reference REF``."""

    models: list[str]
    reference: str
    text: Path | None = None  # None: the bundled text
    n_ctx: int = DEFAULT_N_CTX
    n_chunks: int | None = None  # None: every full chunk of the text
    n_threads: int | None = None
    n_gpu_layers: int = 0
    top_k: int = TOP_K
    tail_samples: int = TAIL_SAMPLES
    timeout: float | None = None  # per child


@dataclass
class ReferenceCache:
    path: Path
    meta: dict[str, Any]
    built: bool  # True when this call computed it

    @property
    def bytes(self) -> int:
        return cache_bytes(self.path)


def _read_text(path: Path) -> tuple[bytes, str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LabError(f"No such text file: {path}") from None
    except OSError as exc:
        raise LabError(f"Cannot read text file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LabError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    if not text.strip():
        raise LabError(f"{path} is empty")
    return data, text


def _validate(o: QualityOptions) -> None:
    if o.n_ctx < 8:
        raise LabError(f"-c {o.n_ctx} is too small; use at least 8 (llama-perplexity's default is 512)")
    if o.n_chunks is not None and o.n_chunks < 1:
        raise LabError("--chunks must be at least 1")
    if o.top_k < 1 or o.tail_samples < 0:
        raise LabError("the cache needs top_k >= 1 and tail_samples >= 0")


def _progress_forwarder(on_event: OnEvent, run_id: str, model_filename: str, stage: str) -> Callable[[dict[str, Any]], None]:
    rows: list[dict[str, Any]] = []

    def handle(event: dict[str, Any]) -> None:
        if event.get("event") == "row":
            rows.append(event)
        on_event(dict(event, run_id=run_id, model_filename=model_filename, stage=event.get("stage", stage)))

    handle.rows = rows  # type: ignore[attr-defined]
    return handle


def ensure_reference(store: "Store", ref: "LocalModel", ref_row: dict[str, Any], options: QualityOptions,
                     text_path: Path, text_sha: str, *, machine_id: str, on_event: OnEvent,
                     cancel: threading.Event | None = None) -> ReferenceCache:
    """The reference's cached log-probabilities for this text and context, built if needed."""
    from lab.engine.runner import run_child

    key = cache_key(ref_row["id"], text_sha, options.n_ctx, options.top_k, options.tail_samples)
    path = cache_root() / key
    meta = read_cache_meta(path)
    if meta is not None:
        enough = (meta["n_chunk"] >= options.n_chunks) if options.n_chunks else meta["n_chunk"] >= meta["n_chunk_max"]
        if enough:
            return ReferenceCache(path, meta, built=False)
    payload = {
        "mode": "reference", "reference": str(ref.path), "reference_sha256": ref_row["id"],
        "text_path": str(text_path), "text_sha256": text_sha, "text_name": text_path.name,
        "n_ctx": options.n_ctx, "n_chunks": options.n_chunks, "n_threads": options.n_threads,
        "n_gpu_layers": options.n_gpu_layers, "top_k": options.top_k, "tail_samples": options.tail_samples,
        "cache_dir": str(path),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in payload.items() if k not in ("reference", "cache_dir")}
    run_id = store.create_run("quality", machine_id=machine_id, model_id=ref_row["id"],
                              model_filename=ref_row["model_filename"], config=config, **run_extra())
    handle = _progress_forwarder(on_event, run_id, ref_row["model_filename"], "reference")
    outcome = run_child({"kind": "quality", "payload": payload}, on_event=handle, cancel=cancel,
                        timeout=options.timeout)
    rows = handle.rows  # type: ignore[attr-defined]
    store.finish_run(run_id, outcome.status, error=outcome.error, exit_code=outcome.exit_code,
                     signal=outcome.signal, log_tail=None if outcome.status == "ok" else outcome.log_tail,
                     peak_rss_bytes=rows[-1].get("peak_rss_bytes") if rows else None)
    if outcome.status == "cancelled":
        raise Cancelled("the reference was not finished; nothing was measured")
    if outcome.status != "ok":
        raise LabError(f"The reference {ref_row['model_filename']} failed: {outcome.error}")
    meta = read_cache_meta(path)
    if meta is None:
        raise LabError(f"The reference run finished but left no cache in {path}")
    return ReferenceCache(path, meta, built=True)


def measure_quality(store: "Store", options: QualityOptions, *, on_event: OnEvent | None = None,
                    cancel: threading.Event | None = None) -> list[dict[str, Any]]:
    """Measure every model of ``options`` against the reference; store and return one
    ``quality`` row per model (failed models get a row with ``status`` and ``error`` only in
    the returned list, and their run is recorded as failed)."""
    from lab import library
    from lab.engine.runner import run_child

    _validate(options)
    emit_event: OnEvent = on_event or (lambda _e: None)
    from lab.hardware import default_threads

    options.n_threads = options.n_threads or default_threads()
    text_path = Path(options.text) if options.text else DEFAULT_TEXT
    data, _ = _read_text(text_path)
    text_sha = sha256_bytes(data)
    ref = library.resolve(options.reference)
    candidates = [library.resolve(m) for m in options.models]
    machine_id = record_machine(store)
    ref_row = library.register(store, ref)
    cand_rows = [library.register(store, m) for m in candidates]
    cache = ensure_reference(store, ref, ref_row, options, text_path, text_sha, machine_id=machine_id,
                             on_event=emit_event, cancel=cancel)
    emit_event({"event": "reference_ready", "path": str(cache.path), "bytes": cache.bytes,
                "built": cache.built, "n_chunk": cache.meta["n_chunk"], "ppl_ref": cache.meta["ppl_ref"]})
    n_chunks = min(options.n_chunks or cache.meta["n_chunk"], cache.meta["n_chunk"])
    out: list[dict[str, Any]] = []
    for model, row in zip(candidates, cand_rows):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"{len(out)} of {len(candidates)} models were measured and stored")
        payload = {
            "mode": "compare", "model": str(model.path), "cache_dir": str(cache.path), "n_ctx": options.n_ctx,
            "n_chunks": n_chunks, "n_threads": options.n_threads, "n_gpu_layers": options.n_gpu_layers,
        }
        config = {k: v for k, v in payload.items() if k not in ("model",)}
        config.update(reference=ref_row["model_filename"], reference_model_id=ref_row["id"], text_sha256=text_sha)
        run_id = store.create_run("quality", machine_id=machine_id, model_id=row["id"],
                                  model_filename=row["model_filename"], config=config, **run_extra())
        handle = _progress_forwarder(emit_event, run_id, row["model_filename"], "compare")
        outcome = run_child({"kind": "quality", "payload": payload}, on_event=handle, cancel=cancel,
                            timeout=options.timeout)
        rows = handle.rows  # type: ignore[attr-defined]
        figures = rows[-1] if rows and outcome.status == "ok" else None
        store.finish_run(run_id, outcome.status, error=outcome.error, exit_code=outcome.exit_code,
                         signal=outcome.signal, log_tail=None if outcome.status == "ok" else outcome.log_tail,
                         peak_rss_bytes=figures.get("peak_rss_bytes") if figures else None)
        base = {"run_id": run_id, "model_id": row["id"], "model_filename": row["model_filename"],
                "file_type": row.get("file_type"), "reference_model_id": ref_row["id"],
                "reference_filename": ref_row["model_filename"]}
        if figures is None:
            failed = dict(base, status=outcome.status, error=outcome.error)
            out.append(failed)
            emit_event({"event": "quality_failed", **failed})
            if outcome.status == "cancelled":
                raise Cancelled(f"{len(out) - 1} of {len(candidates)} models were measured and stored")
            continue
        record = dict(base, machine_id=machine_id, text_name=text_path.name, text_sha256=text_sha,
                      n_ctx=options.n_ctx, n_chunks=figures["n_chunks"])
        for key in ("n_tokens_scored", "ppl", "ppl_stderr", "ppl_ref", "ppl_ratio", "kld_mean", "kld_stderr",
                    "kld_p99", "kld_p999", "kld_median", "same_top_p", "same_top_p_stderr"):
            record[key] = figures.get(key)
        from lab.store import now_iso

        record["created_at"] = now_iso()
        stored = {k: v for k, v in record.items() if k != "file_type"}
        record["id"] = store.add_row("quality", stored)
        record.update(status="ok", ppl_ratio_stderr=figures.get("ppl_ratio_stderr"), kld_max=figures.get("kld_max"),
                      peak_rss_bytes=figures.get("peak_rss_bytes"), seconds=figures.get("seconds"))
        out.append(record)
        emit_event({"event": "quality_row", **record})
    return out
