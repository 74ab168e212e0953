"""The memory estimate against what llama.cpp allocates and what a test really uses.

Each bench result stores llama.cpp's logged buffers (model, KV, compute, output), the estimate
of their sum, the estimated peak RSS and the measured one. The estimate must be within 5% of the
allocation and within 10% of the peak RSS, for pp and tg tests, on models of several shapes
(vocabulary from 333 to 131k tokens, width, depth, KV heads) and on the demo model's ladder.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.bench import BenchOptions, run_bench
from lab.store import Store
from tiny_model import write_tiny_llama

ALLOC_TOLERANCE = 0.05
RSS_TOLERANCE = 0.10


def _bench(path: Path, store: Store, **options: Any) -> list[dict[str, Any]]:
    opts = dict(models=[str(path)], n_prompt=[512], n_gen=[16], repetitions=1, threads=[2])
    opts.update(options)
    outcome = run_bench(BenchOptions(**opts), store)
    assert outcome.status == "ok", outcome.error
    return outcome.results


def _check(rows: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    ratios = []
    for r in rows:
        kinds = [r[f"alloc_{k}_bytes"] for k in ("model", "kv", "compute", "output")]
        assert all(v is not None for v in kinds), r["test"]
        alloc, rss = sum(kinds), r["peak_rss_bytes"]
        ratios.append((r["test"], r["est_alloc_bytes"] / alloc, r["est_memory_bytes"] / rss))
    for test, alloc_ratio, rss_ratio in ratios:
        assert abs(alloc_ratio - 1) <= ALLOC_TOLERANCE, (test, alloc_ratio)
        assert abs(rss_ratio - 1) <= RSS_TOLERANCE, (test, rss_ratio)
    return ratios


SHAPES = {
    "small": dict(),
    "wide-ffn-gqa": dict(n_embd=256, n_ff=1024, n_head=8, n_head_kv=2, n_layer=3),
    "deep": dict(n_layer=24),
    "vocab-32k": dict(n_embd=128, n_ff=256, n_vocab=32000),
    "vocab-131k": dict(n_vocab=131072),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_estimate_matches_tiny_models(shape: str, tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / f"{shape}.gguf", **SHAPES[shape])
    store = Store(tmp_path / "lab.db")
    try:
        # flash attention on and off: the compute buffer's largest phase differs
        _check(_bench(path, store, flash_attn=[1, 0]))
    finally:
        store.close()


def test_large_vocab_pp_is_not_charged_for_unwritten_logits(tmp_path: Path) -> None:
    """llama.cpp reserves logits for a whole ubatch, but a pp test asks for one row: the
    [n_vocab x n_ubatch] block is allocated and never written, so it is not in the peak RSS."""
    path = write_tiny_llama(tmp_path / "v.gguf", n_vocab=131072)
    store = Store(tmp_path / "lab.db")
    try:
        (pp,) = _bench(path, store, n_gen=[0], n_prompt=[512])
    finally:
        store.close()
    assert pp["alloc_compute_bytes"] > 256 * 2**20  # 512 x 131072 f32 logits reserved
    assert pp["peak_rss_bytes"] < pp["alloc_model_bytes"] + 120 * 2**20
    ratio = pp["est_memory_bytes"] / pp["peak_rss_bytes"]
    assert abs(ratio - 1) <= RSS_TOLERANCE
    # `results` shows the same ratio beside the two figures
    out = subprocess.run([sys.executable, "-m", "lab", "results", "--db", str(tmp_path / "lab.db"), "-o", "csv"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert float(row["est_rss_ratio"]) == pytest.approx(ratio)


def test_estimate_matches_the_demo_ladder(demo_gguf: Path, demo_ladder, tmp_path: Path) -> None:
    store = Store(tmp_path / "lab.db")
    try:
        for path in [demo_gguf] + [demo_ladder[q] for q in ("Q8_0", "Q4_0", "Q2_K")]:
            # Q4_0 weights are repacked where the engine's probe allows it: a second copy
            _check(_bench(Path(path), store, n_prompt=[64], n_gen=[4], warmup=False))
    finally:
        store.close()
