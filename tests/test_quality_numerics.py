"""The reference cache's numerics as the child runs them: the two-level tail sampling draws what a
full-vocabulary CDF draws, and threads change no bit of the cache or of the figures."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from lab.quality_numerics import _systematic_sample, compare_block, reference_block


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
