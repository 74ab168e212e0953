"""Fidelity against a reference: the numerics of the compact reference cache, llama-perplexity's
counting, a model against itself, the demo ladder's ordering, the bundled text and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lab.errors import LabError
from lab.quality import DEFAULT_TEXT, TAIL_SAMPLES, TOP_K, QualityOptions, cache_bytes, measure_quality
from lab.quality_numerics import (compare_block, kld_median, kld_percentile, log_softmax32, reference_block,
                                  summarize)

WORDS = ("the model reads a line of text and guesses the next word while the reference "
         "knows better than the small quant of it so we count how far apart they are").split()


def make_text(path: Path, n_words: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text(" ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n_words)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path):
    from lab.store import Store

    s = Store(tmp_path / "lab.db")
    yield s
    s.close()


# --- numerics -------------------------------------------------------------------------------


def _exact_kld(lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    p = np.exp(lp.astype(np.float64))
    return (p * (lp.astype(np.float64) - lq.astype(np.float64))).sum(axis=1)


def _synthetic(n: int, vocab: int, noise: float, seed: int, scale: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heavy-tailed logits (the top 256 of 6000 tokens leave ~11% of the mass, as a small model
    does), and a perturbed copy: a 'quant' with logit noise ``noise``."""
    rng = np.random.default_rng(seed)
    ref = (rng.standard_normal((n, vocab)) * scale).astype(np.float32)
    cand = (ref + rng.standard_normal((n, vocab)) * noise).astype(np.float32)
    nxt = rng.integers(0, vocab, n)
    return log_softmax32(ref), log_softmax32(cand), nxt


def test_log_softmax32_is_normalised_and_deterministic() -> None:
    logits = np.random.default_rng(1).standard_normal((130, 777)).astype(np.float32) * 5
    lp = log_softmax32(logits)
    assert lp.dtype == np.float32 and lp.shape == logits.shape
    assert np.allclose(np.exp(lp.astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(lp, log_softmax32(logits.copy()))  # bit-identical: a self-KLD of exactly 0


@pytest.mark.parametrize("noise, tolerance", [(0.5, 0.01), (0.05, 0.04)])
def test_topk_plus_tail_samples_is_unbiased(noise: float, tolerance: float) -> None:
    """The tail estimate is unbiased; its noise relative to the KLD grows as the KLD shrinks
    (Q8_0-like noise of 0.05), and falls with the number of positions (400 here, ~12k for the
    default text)."""
    lp, lq, nxt = _synthetic(400, 6000, noise, seed=2)
    exact = _exact_kld(lp, lq)
    ref = reference_block(lp, nxt, k=256, m=128, rng=np.random.default_rng(0))
    assert 0.08 < ref.tail_mass.mean() < 0.15
    ours = compare_block(lq, nxt, ref)["kld"]
    assert abs(ours.mean() / exact.mean() - 1) < tolerance
    # the same budget spent on a bigger top-k with one bucket for the rest is biased low
    k = 384
    top = np.argsort(-lp, axis=1)[:, :k]
    p = np.exp(np.take_along_axis(lp, top, 1).astype(np.float64))
    pr = 1 - p.sum(1)
    qr = 1 - np.exp(np.take_along_axis(lq, top, 1).astype(np.float64)).sum(1)
    bucket = (p * (np.take_along_axis(lp, top, 1) - np.take_along_axis(lq, top, 1))).sum(1) + pr * np.log(pr / qr)
    assert bucket.mean() / exact.mean() - 1 < -0.05
    # the exact figures pass through
    assert np.allclose(ref.nll, -lp[np.arange(400), nxt].astype(np.float64), rtol=0, atol=1e-6)
    assert np.array_equal(ref.top1, lp.argmax(1))
    assert np.all(np.diff(ref.top_idx, axis=1) > 0)  # ascending per row
    assert np.allclose(ref.tail_mass, 1 - np.exp(ref.top_lp.astype(np.float64)).sum(1), atol=1e-6)


@pytest.mark.parametrize("noise", [0.05, 0.5])
def test_each_positions_kld_is_close_enough_for_percentiles(noise: float) -> None:
    """The upper percentiles are single positions: the tail estimate must be close at every
    position, not only on average (a plain mean of log(p/q) over the samples was 40-50% off per
    position at Q8_0-like noise, which put KLD p99 20% above the full-vocabulary figure)."""
    lp, lq, nxt = _synthetic(400, 6000, noise, seed=2)
    exact = _exact_kld(lp, lq)
    ref = reference_block(lp, nxt, k=256, m=128, rng=np.random.default_rng(0))
    ours = compare_block(lq, nxt, ref)["kld"]
    assert np.sqrt(np.mean(((ours - exact) / exact) ** 2)) < 0.03
    for f in (0.5, 0.99, 0.999):
        assert kld_percentile(ours, f) == pytest.approx(kld_percentile(exact, f), rel=0.015), f


def test_small_vocab_is_exact_and_self_is_zero() -> None:
    lp, lq, nxt = _synthetic(50, 300, 0.3, seed=3)
    ref = reference_block(lp, nxt, k=TOP_K, m=TAIL_SAMPLES, rng=np.random.default_rng(0))
    assert ref.top_idx.shape == (50, 300) and ref.tail_idx.shape == (50, 0)
    # exact up to the float32 exp under each row's log-sum-exp (as llama-perplexity's expf)
    assert np.allclose(compare_block(lq, nxt, ref)["kld"], _exact_kld(lp, lq), rtol=1e-5, atol=1e-9)
    same = compare_block(lp, nxt, ref)
    assert np.all(same["kld"] == 0.0) and np.array_equal(same["nll"], same["nll_ref"]) and same["same_top"].all()
    # with a truncated cache too, a model against itself is exactly 0
    lp2, _, nxt2 = _synthetic(20, 5000, 0.3, seed=4)
    big = reference_block(lp2, nxt2, k=64, m=32, rng=np.random.default_rng(0))
    assert big.tail_idx.shape == (20, 32) and np.all(compare_block(lp2, nxt2, big)["kld"] == 0.0)


def test_summarize_follows_llama_perplexity() -> None:
    rng = np.random.default_rng(5)
    n = 1000
    kld = rng.gamma(0.5, 0.02, n)
    nll_ref = rng.gamma(2.0, 1.2, n)
    nll = nll_ref + rng.normal(0.05, 0.1, n)
    same = rng.random(n) < 0.9
    s = summarize(kld, nll, nll_ref, same)
    assert s["n_tokens_scored"] == n
    assert s["ppl"] == pytest.approx(math.exp(nll.mean()))
    assert s["ppl_ref"] == pytest.approx(math.exp(nll_ref.mean()))
    assert s["ppl_ratio"] == pytest.approx(math.exp(nll.mean() - nll_ref.mean()))
    assert s["kld_mean"] == pytest.approx(kld.mean())
    assert s["kld_stderr"] == pytest.approx(math.sqrt(((kld ** 2).mean() - kld.mean() ** 2) / (n - 1)))
    assert (s["kld_p99"], s["kld_p999"]) == (kld_percentile(kld, 0.99), kld_percentile(kld, 0.999))
    # llama-perplexity's float32 index and interpolation: close to numpy's float64 ones, not equal
    assert s["kld_p999"] == pytest.approx(np.percentile(kld, 99.9), rel=1e-4)
    assert s["kld_p999"] != np.percentile(kld, 99.9)
    assert s["kld_median"] == kld_median(kld) == pytest.approx(np.median(kld), rel=1e-6)
    assert s["same_top_p"] == pytest.approx(same.mean())
    assert s["same_top_p_stderr"] == pytest.approx(math.sqrt(same.mean() * (1 - same.mean()) / (n - 1)))
    var = ((nll ** 2).mean() - nll.mean() ** 2) / (n - 1)
    assert s["ppl_stderr"] == pytest.approx(s["ppl"] * math.sqrt(var))


def test_kld_percentiles_are_llama_perplexitys() -> None:
    """Worked by hand from llama-perplexity's formula on the values 0..10 (n = 11):

    * 0.99f is 16609444 / 2^24; times (n - 1) = 10 it is 166094440 / 2^24, exactly halfway
      between two float32 numbers (their spacing at 9.9 is 16 / 2^24), so it rounds to the even
      one, 10380902 / 2^20 = 9.8999996185302734375: i = 9, t = 0.8999996185302734375, and
      (1 - t) * 9 + t * 10 = 9 + t = 9.8999996185302734375 (each step exact in float32);
    * 0.999f is 16760439 / 2^24; times 10 it is 10475274.375 / 2^20, which rounds to
      10475274 / 2^20 = 9.989999771118164062: 9 + t = 9.989999771118164062.

    numpy's linear percentile (in float64) gives 9.9 and 9.99 instead.
    """
    values = np.arange(11, dtype=np.float64)[::-1].copy()  # unsorted: the function sorts
    assert kld_percentile(values, 0.99) == 9.8999996185302734375
    assert kld_percentile(values, 0.999) == 9.989999771118164062
    assert kld_percentile(values, 0.0) == 0.0 and kld_percentile(values, 1.0) == 10.0
    assert kld_percentile(values, 0.5) == 5.0
    assert kld_median(values) == 5.0 and kld_median(np.array([4.0, 1.0, 3.0, 2.0])) == 2.5
    # values are float32 first, as llama-perplexity stores them: 0.1 becomes 0.100000001490116...
    assert kld_median(np.array([0.1])) == float(np.float32(0.1)) != 0.1
    s = summarize(values, np.ones(11), np.ones(11), np.ones(11, dtype=bool))
    assert (s["kld_p99"], s["kld_p999"], s["kld_median"]) == (9.8999996185302734375, 9.989999771118164062, 5.0)


# --- against llama.cpp ----------------------------------------------------------------------


def test_a_model_against_itself(tiny_gguf: Path, store, tmp_path: Path) -> None:
    text = make_text(tmp_path / "self.txt", 600, seed=11)
    events: list[dict] = []
    (row,) = measure_quality(store, QualityOptions(models=[str(tiny_gguf)], reference=str(tiny_gguf), text=text,
                                                   n_ctx=64, n_chunks=6, n_threads=1), on_event=events.append)
    assert row["status"] == "ok" and row["n_chunks"] == 6 and row["n_tokens_scored"] == 6 * 31
    assert row["kld_mean"] == 0.0 and row["kld_p99"] == 0.0 and row["kld_p999"] == 0.0
    assert row["ppl_ratio"] == 1.0 and row["ppl"] == row["ppl_ref"] and row["same_top_p"] == 1.0
    assert 1.0 < row["ppl"] < 400  # a random model over a 333-token vocabulary
    stored = store.get("quality", row["id"])
    assert stored["kld_mean"] == 0.0 and stored["ppl_ratio"] == 1.0 and stored["reference_model_id"] == row["model_id"]
    assert stored["run_id"] == row["run_id"] and stored["machine_id"] and stored["text_name"] == "self.txt"
    runs = store.query("select kind, status, config from runs order by started_at")
    assert [(r["kind"], r["status"]) for r in runs] == [("quality", "ok"), ("quality", "ok")]
    assert json.loads(runs[0]["config"])["mode"] == "reference"
    progress = [e for e in events if e.get("event") == "progress"]
    assert [e["chunk"] for e in progress if e["stage"] == "reference"] == [1, 2, 3, 4, 5, 6]


def test_reference_cache_is_reused_and_grown(tiny_gguf: Path, store, tmp_path: Path) -> None:
    text = make_text(tmp_path / "reuse.txt", 700, seed=12)
    small = write_variant(tmp_path, tiny_gguf)
    opts = dict(models=[str(small)], reference=str(tiny_gguf), text=text, n_ctx=64, n_threads=1)
    seen: list[dict] = []

    def ready(e: dict) -> None:
        if e.get("event") == "reference_ready":
            seen.append(e)

    a = measure_quality(store, QualityOptions(**opts, n_chunks=3), on_event=ready)[0]
    b = measure_quality(store, QualityOptions(**opts, n_chunks=2), on_event=ready)[0]
    c = measure_quality(store, QualityOptions(**opts, n_chunks=5), on_event=ready)[0]
    assert [e["built"] for e in seen] == [True, False, True]
    assert [e["n_chunk"] for e in seen] == [3, 3, 5]
    assert (a["n_chunks"], b["n_chunks"], c["n_chunks"]) == (3, 2, 5)
    assert a["kld_mean"] > 0 and b["kld_mean"] > 0
    # the cache holds every scored position: (k + m) entries of 6 bytes and 24 bytes of exact figures
    path = Path(seen[-1]["path"])
    meta = json.loads((path / "meta.json").read_text())
    n_pos = 5 * (64 - 1 - 32)
    arrays = n_pos * (meta["top_k"] + meta["tail_samples"]) * 6 + n_pos * 20 + 5 * 64 * 4
    assert cache_bytes(path) - len((path / "meta.json").read_bytes()) == arrays + 8 * 128  # + 8 npy headers


def write_variant(tmp_path: Path, tiny: Path) -> Path:
    """The tiny model requantized to Q8_0: same vocabulary, slightly different logits."""
    from lab.library import LocalModel
    from lab.quantize import build_ladder
    from lab.store import Store

    s = Store(tmp_path / "variant.db")
    (step,) = build_ladder(s, LocalModel(tiny.name, tiny, "path", tiny.stat().st_size), ["Q8_0"],
                           out_dir=tmp_path / "variant", n_threads=1)
    s.close()
    return step.path


def test_user_errors(tiny_gguf: Path, store, tmp_path: Path, demo_gguf: Path) -> None:
    opts = dict(models=[str(tiny_gguf)], reference=str(tiny_gguf), n_ctx=64, n_threads=1)
    with pytest.raises(LabError, match="No such text file"):
        measure_quality(store, QualityOptions(**opts, text=tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(LabError, match="empty.txt is empty"):
        measure_quality(store, QualityOptions(**opts, text=tmp_path / "empty.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ol\xe9".encode("latin-1"))
    with pytest.raises(LabError, match="latin1.txt is not UTF-8 text"):
        measure_quality(store, QualityOptions(**opts, text=tmp_path / "latin1.txt"))
    (tmp_path / "short.txt").write_text("just a few words")
    with pytest.raises(LabError, match=r"The text has \d+ tokens; a context of 64 needs at least 128"):
        measure_quality(store, QualityOptions(**opts, text=tmp_path / "short.txt"))
    with pytest.raises(LabError, match="-c 4 is too small"):
        measure_quality(store, QualityOptions(**dict(opts, n_ctx=4), text=tmp_path / "short.txt"))
    # another tokenizer: the model's run fails with a reason, the others go on
    text = make_text(tmp_path / "t.txt", 400, seed=13)
    rows = measure_quality(store, QualityOptions(models=[str(demo_gguf), str(tiny_gguf)], reference=str(tiny_gguf),
                                                 text=text, n_ctx=64, n_chunks=2, n_threads=1))
    assert rows[0]["status"] == "failed" and "vocabulary of 49152 tokens and the reference 333" in rows[0]["error"]
    assert rows[1]["status"] == "ok" and rows[1]["kld_mean"] == 0.0
    assert store.query("select count(*) as n from quality")[0]["n"] == 1


def test_cli_quality_json(tiny_gguf: Path, tmp_path: Path) -> None:
    text = make_text(tmp_path / "cli.txt", 500, seed=14)
    out = subprocess.run([sys.executable, "-m", "lab", "quality", str(tiny_gguf), "--reference", str(tiny_gguf),
                          "--text", str(text), "-c", "64", "--chunks", "3", "-t", "1", "-o", "json",
                          "--db", str(tmp_path / "q.db")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (rec,) = json.loads(out.stdout)
    for key in ("ppl", "ppl_ratio", "kld_mean", "kld_p99", "kld_p999", "same_top_p"):
        assert key in rec
    assert rec["kld_mean"] == 0.0 and rec["ppl_ratio"] == 1.0 and rec["same_top_p"] == 1.0
    assert rec["n_tokens_scored"] == 3 * 31
    out = subprocess.run([sys.executable, "-m", "lab", "quality", str(tiny_gguf), "--reference", str(tiny_gguf),
                          "--text", str(tmp_path / "missing.txt")], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.strip() == f"error: No such text file: {tmp_path / 'missing.txt'}."


# --- the demo ladder ------------------------------------------------------------------------


_EXACT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from lab.engine import llm
    from lab.engine.quality_job import ChunkDecoder
    from lab.quality_numerics import log_softmax32
    ref, cands, text, n_ctx, n_chunk = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    def lps(path, toks):
        m = llm.Model(path); d = ChunkDecoder(m, n_ctx, 1, 2)  # repack as the quality job decides it
        out = [log_softmax32(d.decode([toks[i*n_ctx:(i+1)*n_ctx]], n_ctx // 2)[0, :-1]) for i in range(n_chunk)]
        d.close(); m.close(); return np.concatenate(out).astype(np.float64)
    m = llm.Model(ref, repack=False); toks = m.tokenize(open(text).read(), add_special=True, parse_special=False); m.close()
    P = lps(ref, toks); p = np.exp(P)
    print(json.dumps({c: float((p * (P - lps(c, toks))).sum(1).mean()) for c in cands}))
""")


def test_demo_ladder_kld_order_and_exactness(demo_ladder, store, tmp_path: Path) -> None:
    quants = ["Q8_0", "Q4_0", "Q2_K"]
    rows = measure_quality(store, QualityOptions(models=[str(demo_ladder[q]) for q in quants],
                                                 reference=str(demo_ladder["F16"]), n_ctx=256, n_chunks=2, n_threads=2))
    by = dict(zip(quants, rows))
    assert all(r["status"] == "ok" and r["n_tokens_scored"] == 2 * 127 for r in rows)
    assert 0 < by["Q8_0"]["kld_mean"] < by["Q4_0"]["kld_mean"] < by["Q2_K"]["kld_mean"]
    assert 1.0 < by["Q4_0"]["ppl_ratio"] < by["Q2_K"]["ppl_ratio"]
    assert by["Q8_0"]["same_top_p"] > by["Q4_0"]["same_top_p"] >= by["Q2_K"]["same_top_p"]
    assert by["Q8_0"]["kld_mean"] < 0.02 and by["Q2_K"]["kld_mean"] > 0.2
    # the compact cache against the full-vocabulary KLD of the same positions
    out = subprocess.run([sys.executable, "-c", _EXACT, str(demo_ladder["F16"]),
                          ",".join(str(demo_ladder[q]) for q in quants), str(DEFAULT_TEXT), "256", "2"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    exact = json.loads(out.stdout)
    # (254 positions only: the tail estimate's noise is largest for the smallest KLD)
    for q, rel in (("Q8_0", 0.03), ("Q4_0", 0.005), ("Q2_K", 0.005)):
        assert by[q]["kld_mean"] == pytest.approx(exact[str(demo_ladder[q])], rel=rel), q


def test_default_text_is_long_enough_and_its_cache_small(demo_gguf: Path) -> None:
    notice = (DEFAULT_TEXT.parent / "quality_text.NOTICE.md").read_text()
    assert "Python Software Foundation License" in notice and "pydoc_data.topics" in notice
    code = ("import sys; from lab.engine import llm; m = llm.Model(sys.argv[1], repack=False); "
            "print(len(m.tokenize(open(sys.argv[2], encoding='utf-8').read(), add_special=True, parse_special=False)))")
    out = subprocess.run([sys.executable, "-c", code, str(demo_gguf), str(DEFAULT_TEXT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    n_tokens = int(out.stdout)
    assert n_tokens >= 20000
    n_pos = (n_tokens // 512) * (512 - 1 - 256)
    cache = n_pos * ((TOP_K + TAIL_SAMPLES) * 6 + 20) + (n_tokens // 512) * 512 * 4
    assert cache < 200e6
    # the same vocabulary size as a 128k-vocabulary model (8-byte entries) still fits
    assert n_pos * ((TOP_K + TAIL_SAMPLES) * 8 + 20) < 200e6
