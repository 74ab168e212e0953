"""The reference cache's numerics as the child runs them: the two-level tail sampling draws what a
full-vocabulary CDF draws, and threads change no bit of the cache or of the figures."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from lab.quality_numerics import _block_sums, _systematic_sample, _top_k, compare_block, reference_block


def _full_cdf_sample(e: np.ndarray, offsets: np.ndarray, m: int) -> np.ndarray:
    out = np.zeros((e.shape[0], m), dtype=np.int64)
    for i, row in enumerate(e):
        cdf = np.cumsum(row, dtype=np.float64)
        u = (np.arange(m) + offsets[i]) * (cdf[-1] / m)
        out[i] = np.minimum(np.searchsorted(cdf, u, side="right"), e.shape[1] - 1)
    return out


@pytest.mark.parametrize("n_vocab", [4096, 5000])  # a multiple of the block and one that is padded
def test_two_level_sampling_draws_what_the_full_cdf_draws(n_vocab: int) -> None:
    rng = np.random.default_rng(7)
    e = np.exp(rng.standard_normal((40, n_vocab)) * 3).astype(np.float32)
    e[:, rng.integers(0, n_vocab, 300)] = 0.0  # the top tokens, zeroed: never drawn
    e[3] = 0.0
    e[3, 17] = 1.0  # all the weight on one token
    offsets = rng.random(40)
    ours = _systematic_sample(e, offsets, 64)
    full = _full_cdf_sample(e, offsets, 64)
    assert ours.shape == (40, 64) and np.mean(ours == full) > 0.999
    assert np.all(e[np.arange(40)[:, None], ours] > 0)
    assert np.all(ours[3] == 17)


def test_threads_change_no_bit() -> None:
    rng = np.random.default_rng(3)
    ref_logits = (rng.standard_normal((300, 3000)) * 3).astype(np.float32)
    cand = (ref_logits + rng.standard_normal((300, 3000)) * 0.2).astype(np.float32)
    nxt = rng.integers(0, 3000, 300)
    alone = reference_block(ref_logits, nxt, 128, 64, np.random.default_rng(0))
    with ThreadPoolExecutor(3) as pool:
        threaded = reference_block(ref_logits, nxt, 128, 64, np.random.default_rng(0), pool)
        figures = compare_block(cand, nxt, threaded, pool)
    for name in ("top_idx", "top_lp", "tail_idx", "tail_lp", "tail_mass", "nll", "top1"):
        assert np.array_equal(getattr(alone, name), getattr(threaded, name)), name
    single = compare_block(cand, nxt, alone)
    for key in ("kld", "nll", "nll_ref", "same_top"):
        assert np.array_equal(single[key], figures[key]), key
    assert 0.0 < float(single["kld"].mean()) < 0.1


def test_top_k_is_the_k_largest_ascending_with_ties_and_nan_taken_by_argpartition() -> None:
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((30, 5000)) * 4).astype(np.float32)
    x[5] = np.round(x[5])  # many ties at the k-th value: more than k columns qualify
    x[9, 123] = np.nan
    x[12, [10, 4000]] = x[12].max() + 1  # two maxima: the first is the top-1, as argmax
    k = 200
    top, mx, top1 = _top_k(x, k)
    assert top.shape == (30, k)
    for i in range(30):
        if i in (5, 9):  # the fallback: argpartition's own pick, sorted
            assert np.array_equal(top[i], np.sort(np.argpartition(x[i], 5000 - k)[5000 - k:]))
        else:
            assert np.array_equal(top[i], np.sort(np.argsort(-x[i], kind="stable")[:k]))
        assert np.all(np.diff(top[i]) > 0)
    assert np.array_equal(top1, x.argmax(axis=1))
    assert np.array_equal(mx, x.max(axis=1), equal_nan=True)
    assert top1[12] == 10


@pytest.mark.parametrize("n_vocab", [4096, 5001])  # a multiple of the block and one with a short last block
def test_block_sums_add_up_to_the_rows(n_vocab: int) -> None:
    rng = np.random.default_rng(5)
    e = np.exp(rng.standard_normal((7, n_vocab)) * 2).astype(np.float32)
    sums = _block_sums(e)
    assert sums.shape == (7, -(-n_vocab // 16))
    assert np.allclose(sums[:, 3], e[:, 48:64].sum(axis=1, dtype=np.float64), rtol=1e-6)
    assert np.allclose(sums.sum(axis=1, dtype=np.float64), e.sum(axis=1, dtype=np.float64), rtol=1e-6)
    # a view that is not contiguous gives the same sums as its copy
    wide = np.zeros((7, n_vocab + 3), dtype=np.float32)
    wide[:, :n_vocab] = e
    assert np.array_equal(_block_sums(wide[:, :n_vocab]), sums)
