"""The numerics of fidelity against a reference (pure numpy): the compact reference block, a
candidate's per-position KLD/NLL against it, and llama-perplexity's summary statistics.

Both sides work on raw logits straight out of llama.cpp's buffer (a float32 view, never a
float64 copy of the vocabulary): per row they take the maximum, ``exp(x - max)`` in float32
(numpy's SIMD loop) and the sums they need in float64, and turn only the few logits they keep
(the reference's top k and tail samples, the next token) into log-probabilities. The
reference and the candidate go through the same functions in the same order, so identical
logits give bit-identical figures: a model against itself has a KLD of exactly 0 and a PPL
ratio of exactly 1. Rows are worked in blocks on several threads (numpy releases the GIL in
its loops), as llama-perplexity spreads its log-softmax over threads.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

# float32 scratch per block of rows: bounds the memory of the numerics whatever the vocabulary
_BLOCK_BYTES = 1 << 24


@dataclass
class RefBlock:
    """The cached reference figures for a block of scored positions."""

    top_idx: np.ndarray    # [n, k] token ids, ascending per row
    top_lp: np.ndarray     # [n, k] float32 log-probs
    tail_idx: np.ndarray   # [n, m] token ids drawn from the rest in proportion to p
    tail_lp: np.ndarray    # [n, m] float32 log-probs
    tail_mass: np.ndarray  # [n] float64, exact mass outside the top k
    nll: np.ndarray        # [n] float64, -log p(next token)
    top1: np.ndarray       # [n] int32, the reference's most likely token


def log_softmax32(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax computed in float64, returned as float32 (the full-vocabulary
    figure the compact cache is held to)."""
    out = np.empty(logits.shape, dtype=np.float32)
    for start in range(0, logits.shape[0], 64):
        x = logits[start:start + 64].astype(np.float64)
        x -= x.max(axis=1, keepdims=True)
        x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
        out[start:start + 64] = x
    return out


def _block_sums(e: np.ndarray) -> np.ndarray:
    """float32 sums of consecutive blocks of ``_SAMPLE_BLOCK`` columns of ``e`` [n, vocab]
    ([n, ceil(vocab / block)]; the last block short where the vocabulary is not a multiple).
    One matrix-vector product: numpy reduces a 16-long axis slowly."""
    n, n_vocab = e.shape
    B = _SAMPLE_BLOCK
    full = n_vocab // B
    ones = np.ones(B, dtype=e.dtype)
    if full * B == n_vocab and e.flags.c_contiguous:
        return (e.reshape(n * full, B) @ ones).reshape(n, full)
    sums = np.empty((n, -(-n_vocab // B)), dtype=e.dtype)
    sums[:, :full] = np.ascontiguousarray(e[:, :full * B]).reshape(n, full, B) @ ones
    if full * B != n_vocab:
        sums[:, full] = e[:, full * B:].sum(axis=1)
    return sums


def _lse_and_rest(x: np.ndarray, top: np.ndarray, m: np.ndarray | None = None,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of logits ``x``: log-sum-exp (float64), the probability mass outside the ``top``
    columns (float64), ``exp(x - max)`` with the ``top`` columns zeroed (float32, in ``out``
    when given) and its block sums. ``m``: the rows' maxima, when the caller has them already.

    The mass outside the top is the float64 sum of float32 sums of 16 tokens each, summed on
    its own (no cancellation against the head); the block sums then serve the tail sampling."""
    if m is None:
        m = x.max(axis=1)
    e = np.subtract(x, m[:, None], dtype=np.float32, out=out)
    np.exp(e, out=e)
    head = np.take_along_axis(e, top, axis=1).sum(axis=1, dtype=np.float64)
    np.put_along_axis(e, top, 0.0, axis=1)
    sums = _block_sums(e)
    rest = sums.sum(axis=1, dtype=np.float64)
    total = head + rest
    return m.astype(np.float64) + np.log(total), rest / total, e, sums


def _lp_at(x: np.ndarray, idx: np.ndarray, lse: np.ndarray) -> np.ndarray:
    """float32 log-probabilities of the columns ``idx`` of each row."""
    return (np.take_along_axis(x, idx, axis=1).astype(np.float64) - lse[:, None]).astype(np.float32)


def _nll(x: np.ndarray, next_tokens: np.ndarray, lse: np.ndarray) -> np.ndarray:
    return lse - x[np.arange(x.shape[0]), next_tokens].astype(np.float64)


def _row_blocks(n: int, n_vocab: int, workers: int) -> list[slice]:
    """Blocks of rows small enough for the scratch bound, and at least one per worker."""
    size = max(1, min(_BLOCK_BYTES // (4 * max(n_vocab, 1)), -(-n // max(workers, 1))))
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _map_rows(fn: Callable[[slice], Any], n: int, n_vocab: int, pool: ThreadPoolExecutor | None) -> list[Any]:
    workers = pool._max_workers if pool is not None else 1  # type: ignore[attr-defined]
    blocks = _row_blocks(n, n_vocab, workers)
    if pool is None or len(blocks) == 1:
        return [fn(b) for b in blocks]
    return list(pool.map(fn, blocks))


_SAMPLE_BLOCK = 16  # tokens per block of the two-level CDF


def _systematic_sample(e: np.ndarray, offsets: np.ndarray, m: int, sums: np.ndarray | None = None) -> np.ndarray:
    """Per row of weights ``e`` [n, vocab] (float32, not normalised), m token ids drawn by
    systematic sampling: one uniform offset per row, m evenly spaced points on the row's CDF.

    The CDF is never built over the whole vocabulary: float64 sums of blocks of
    ``_SAMPLE_BLOCK`` tokens locate each point's block, and only the blocks that hold a point get
    a float64 running sum (at most m of them, against a vocabulary of 50k-260k). ``sums``: the
    block sums of ``e`` (``_block_sums``) when the caller has them."""
    n, n_vocab = e.shape
    B = _SAMPLE_BLOCK
    nb = -(-n_vocab // B)
    if sums is None:
        sums = _block_sums(e)
    if nb * B != n_vocab or not e.flags.c_contiguous:  # pad with weight-0 tokens, never drawn
        padded = np.zeros((n, nb * B), dtype=e.dtype)
        padded[:, :n_vocab] = e
        e = padded
    blocks = e.reshape(n, nb, B)
    cdf = np.cumsum(sums, axis=1, dtype=np.float64)  # [n, nb]
    mass = cdf[:, -1]
    u = (np.arange(m)[None, :] + offsets[:, None]) * (mass / m)[:, None]  # [n, m], each < mass
    b = np.empty((n, m), dtype=np.int64)
    for i in range(n):
        b[i] = np.searchsorted(cdf[i], u[i], side="right")
    np.minimum(b, nb - 1, out=b)
    # each point's block and the mass before it, then a float64 running sum across the 16
    # tokens of the chosen blocks, as 16 steps over all points at once
    flat_b = (np.arange(n)[:, None] * nb + b).reshape(-1)
    before = np.where(b.reshape(-1) > 0, cdf.reshape(-1)[np.maximum(flat_b - 1, 0)], 0.0)
    target = u.reshape(-1) - before
    chosen = blocks.reshape(n * nb, B)[flat_b]  # [n*m, B]
    acc = np.zeros(n * m, dtype=np.float64)
    within = np.zeros(n * m, dtype=np.int64)
    for j in range(B):
        acc += chosen[:, j]
        within += acc <= target
    within = within.reshape(n, m)
    return np.minimum(b * B + np.minimum(within, B - 1), n_vocab - 1)


class _Scratch(threading.local):
    """Per-thread float32 and bool buffers of a block's shape, reused from block to block: a
    fresh [rows, vocab] temporary per step would be page-faulted in and handed back to the
    kernel each time (they are above malloc's mmap threshold), which cost more than the numerics
    themselves."""

    def get(self, name: str, shape: tuple[int, int], dtype: Any) -> np.ndarray:
        size = shape[0] * shape[1]
        buf = self.__dict__.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = np.empty(size, dtype=dtype)
            self.__dict__[name] = buf
        return buf[:size].reshape(shape)


_scratch = _Scratch()


def _top_k(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of logits ``x`` [n, vocab], k < vocab: the columns of its k largest values in
    ascending order ([n, k]), its largest value, and the column of it (the first, as ``argmax``).

    The k-th largest value comes from partitioning a copy of the values (no int64 index carried
    through the selection), and the columns at or above it from one comparison, already in
    ascending order. Where values equal to the k-th largest make more than k columns qualify (or
    a row holds NaN), that row takes ``argpartition``'s pick, sorted."""
    n, n_vocab = x.shape
    part = _scratch.get("part", x.shape, np.float32)
    np.copyto(part, x)
    part.partition(n_vocab - k, axis=1)
    kth = part[:, n_vocab - k]
    mx = part[:, n_vocab - k:].max(axis=1)
    mask = np.greater_equal(x, kth[:, None], out=_scratch.get("mask", x.shape, np.bool_))
    flat = np.flatnonzero(mask)  # row-major: each row's columns ascending, rows in order
    row_of = flat // n_vocab
    exact = np.bincount(row_of, minlength=n) == k
    if exact.all():
        top = (flat - row_of * n_vocab).reshape(n, k)
    else:
        top = np.empty((n, k), dtype=np.intp)
        keep = exact[row_of]
        top[exact] = (flat[keep] - row_of[keep] * n_vocab).reshape(-1, k)
        for i in np.flatnonzero(~exact):
            top[i] = np.sort(np.argpartition(x[i], n_vocab - k)[n_vocab - k:])
    top_vals = np.take_along_axis(x, top, axis=1)
    top1 = np.take_along_axis(top, top_vals.argmax(axis=1)[:, None], axis=1)[:, 0]
    if not exact.all():  # a tie at the k-th value or a NaN: the row's own maximum and argmax
        mx[~exact], top1[~exact] = x[~exact].max(axis=1), x[~exact].argmax(axis=1)
    return top, mx, top1


def _reference_rows(x: np.ndarray, next_tokens: np.ndarray, offsets: np.ndarray, k: int, m: int) -> RefBlock:
    n, n_vocab = x.shape
    if k < n_vocab:
        top, mx, top1 = _top_k(x, k)
    else:
        top = np.ascontiguousarray(np.broadcast_to(np.arange(n_vocab), (n, n_vocab)))
        mx, top1 = x.max(axis=1), x.argmax(axis=1)
    lse, rest, e, sums = _lse_and_rest(x, top, mx, out=_scratch.get("e", x.shape, np.float32))
    tail_idx = np.zeros((n, m), dtype=np.int64)
    tail_mass = np.zeros(n, dtype=np.float64)
    if m:
        tail_mass[:] = rest
        tail_idx[:] = _systematic_sample(e, offsets, m, sums)
        empty = (rest <= 0.0) | ~np.isfinite(rest)
        tail_idx[empty] = top[empty, :1]
    tail_lp = _lp_at(x, tail_idx, lse) if m else np.zeros((n, 0), dtype=np.float32)
    return RefBlock(top, _lp_at(x, top, lse), tail_idx, tail_lp, tail_mass, _nll(x, next_tokens, lse),
                    top1.astype(np.int32))


def reference_block(logits: np.ndarray, next_tokens: np.ndarray, k: int, m: int, rng: np.random.Generator,
                    pool: ThreadPoolExecutor | None = None) -> RefBlock:
    """Compress a block of reference logits [n, vocab] (float32; log-probabilities do as well)."""
    n, n_vocab = logits.shape
    k = min(k, n_vocab)
    m = m if k < n_vocab else 0
    offsets = rng.random(n)  # drawn here, in row order: the same cache whatever the threads

    def rows(b: slice) -> RefBlock:
        return _reference_rows(logits[b], next_tokens[b], offsets[b], k, m)

    parts = _map_rows(rows, n, n_vocab, pool)
    return RefBlock(*(np.concatenate([getattr(p, f) for p in parts]) for f in RefBlock.__dataclass_fields__))


def _compare_rows(x: np.ndarray, next_tokens: np.ndarray, ref: RefBlock) -> dict[str, np.ndarray]:
    top = ref.top_idx.astype(np.intp)
    top1 = x.argmax(axis=1)  # one pass gives the top-1 and, gathered, the maxima
    lse, q_rest, _, _ = _lse_and_rest(x, top, m=x[np.arange(x.shape[0]), top1],
                                      out=_scratch.get("e", x.shape, np.float32))
    top_lp = ref.top_lp.astype(np.float64)
    head = (np.exp(top_lp) * (top_lp - _lp_at(x, top, lse))).sum(axis=1)
    if ref.tail_idx.shape[1]:
        # The tail's sum_i p_i log(p_i/q_i) from samples drawn in proportion to p. With r = q/p
        # at a sample, E[r] = Q_rest/P_rest exactly (the candidate's own tail mass is known):
        # subtracting b * (mean(r) - Q_rest/P_rest), b fitted per position, removes most of the
        # sampling noise, since log(p/q) moves with r. One position's KLD then errs by ~2%
        # instead of 40-50% at Q8_0-like noise on a vocabulary whose top tokens leave a fifth
        # of the mass; the upper percentiles, single positions, need that.
        lq_tail = _lp_at(x, ref.tail_idx.astype(np.intp), lse)
        r = np.exp(lq_tail.astype(np.float64) - ref.tail_lp.astype(np.float64))
        d = -np.log(r)
        rc = r - r.mean(axis=1, keepdims=True)
        var = (rc * rc).mean(axis=1)
        safe = np.where(var > 0, var, 1.0)
        beta = np.where(var > 0, (rc * (d - d.mean(axis=1, keepdims=True))).mean(axis=1) / safe, 0.0)
        p_rest = np.where(ref.tail_mass > 0, ref.tail_mass, 1.0)
        tail = np.where(ref.tail_mass > 0.0,
                        ref.tail_mass * (d.mean(axis=1) - beta * (r.mean(axis=1) - q_rest / p_rest)), 0.0)
    else:
        tail = np.zeros(x.shape[0])
    return {"kld": head + tail, "nll": _nll(x, next_tokens, lse), "nll_ref": np.asarray(ref.nll, dtype=np.float64),
            "same_top": top1 == ref.top1}


def compare_block(logits: np.ndarray, next_tokens: np.ndarray, ref: RefBlock,
                  pool: ThreadPoolExecutor | None = None) -> dict[str, np.ndarray]:
    """Per-position KLD, NLL and same-top flags of candidate logits [n, vocab] (float32; or
    log-probabilities) against the reference's block."""
    n, n_vocab = logits.shape

    def rows(b: slice) -> dict[str, np.ndarray]:
        part = RefBlock(*(getattr(ref, f)[b] for f in RefBlock.__dataclass_fields__))
        return _compare_rows(logits[b], next_tokens[b], part)

    parts = _map_rows(rows, n, n_vocab, pool)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _mean_and_uncertainty(values: np.ndarray) -> tuple[float, float]:
    """llama-perplexity's estimate: mean and sqrt((E[x^2] - E[x]^2) / (n - 1))."""
    n = len(values)
    mean = float(np.mean(values))
    var = float(np.mean(np.square(values))) - mean * mean
    return mean, math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0


def kld_percentile(values: np.ndarray | Sequence[float], fraction: float) -> float:
    """A percentile of per-position KLD values exactly as llama-perplexity prints it.

    llama-perplexity (tools/perplexity/perplexity.cpp, ``kl_divergence``) keeps the values as
    float32, sorts them, and for a fraction f (itself a float32 literal, 0.99f) takes
    ``p = f * (n - 1)`` in float32, ``i = floor(p)``, ``t = p - i`` and returns
    ``(1 - t) * v[i] + t * v[min(i + 1, n - 1)]``, all in float32 (f <= 0: the minimum, f >= 1:
    the maximum). That is linear interpolation between closest ranks, as numpy's default, but
    with the index and the interpolation rounded to float32. (A C++ build that fuses the last
    multiply-add may differ by one float32 ulp.)
    """
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


def kld_median(values: np.ndarray | Sequence[float]) -> float:
    """llama-perplexity's median KLD: the middle float32 value, or ``0.5f * (a + b)`` of the two."""
    v = np.sort(np.asarray(values, dtype=np.float32))
    n = len(v)
    return float(v[n // 2] if n % 2 else np.float32(0.5) * (v[n // 2] + v[n // 2 - 1]))


def summarize(kld: np.ndarray, nll: np.ndarray, nll_ref: np.ndarray, same_top: np.ndarray) -> dict[str, Any]:
    """The figures of one comparison, as llama-perplexity prints them."""
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
