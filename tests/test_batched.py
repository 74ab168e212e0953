"""Many sequences in one context (``bench --batched``): llama-batched-bench's rows, run by real
llama.cpp in an engine child on a tiny model, stored in real SQLite and printed in every format."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab.bench import BenchOptions, run_bench
from lab.engine import protocol
from lab.engine.batched import batched_tests
from lab.engine.protocol import BenchItem, BenchJob, ContextParams, ModelParams
from lab.engine.runner import run_child
from lab.store import Store

BATCHED_JSONL_KEYS = ["pp", "tg", "pl", "n_kv", "t_pp", "speed_pp", "t_tg", "speed_tg", "t", "speed"]


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", "bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def _check_definitions(row: dict, *, shared: bool = False) -> None:
    """llama-batched-bench's own definitions, row by row (one repetition)."""
    pp, tg, b = row["pp"], row["tg"], row["pl"]
    prompt = pp if shared else b * pp
    assert row["t"] == pytest.approx(row["t_pp"] + row["t_tg"])
    assert row["speed_pp"] == pytest.approx(prompt / row["t_pp"])
    assert row["speed_tg"] == pytest.approx(b * tg / row["t_tg"])
    assert row["speed"] == pytest.approx((prompt + b * tg) / row["t"])
    assert min(row["t_pp"], row["t_tg"], row["speed_pp"], row["speed_tg"], row["speed"]) > 0


def test_rows_carry_llama_batched_bench_figures(tiny_gguf: Path, tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    out = _cli(str(tiny_gguf), "--batched", "-npp", "24", "-ntg", "12", "-npl", "1,4", "-t", "1",
               "-o", "json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["test"] for r in rows] == ["pp24+tg12 x1", "pp24+tg12 x4"]
    for row, b in zip(rows, (1, 4)):
        assert all(k in row for k in BATCHED_JSONL_KEYS)
        assert (row["pp"], row["tg"], row["pl"], row["n_kv"]) == (24, 12, b, b * (24 + 12))
        assert (row["n_prompt"], row["n_gen"], row["n_seq"]) == (24, 12, b)
        _check_definitions(row)
        assert row["repetitions"] == 1 and len(row["samples_pp_ns"]) == len(row["samples_tg_ns"]) == 1
        assert row["avg_ts"] == pytest.approx(row["speed"])
        assert row["peak_rss_bytes"] > tiny_gguf.stat().st_size
        assert row["peak_vram_bytes"] is None  # no GPU here: unknown, never 0
        # a split KV cache: every sequence gets its own stream of 36 cells rounded up to 256
        assert row["n_ctx"] == 256 * b
    assert rows[1]["kv_bytes"] == 4 * rows[0]["kv_bytes"] > 0
    stored = Store(db).results(order="test_time")
    assert [(r["n_seq"], r["n_kv"]) for r in stored] == [(1, 36), (4, 144)]
    assert stored[1]["s_tg"] == pytest.approx(rows[1]["speed_tg"])


def test_shared_prompt_and_unified_cache_count_as_llama_batched_bench(tiny_gguf: Path, tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    common = ["--batched", "-npp", "200", "-ntg", "8", "-npl", "3", "-pps", "-t", "1", "-o", "jsonl", "--db", str(db)]
    split = _cli(str(tiny_gguf), *common)
    unified = _cli(str(tiny_gguf), *common, "-kvu")
    assert split.returncode == 0, split.stderr
    assert unified.returncode == 0, unified.stderr
    (s,), (u,) = ([json.loads(x) for x in p.stdout.splitlines()] for p in (split, unified))
    assert s["test"] == "pp200+tg8 x3 pps" and u["test"] == "pp200+tg8 x3 pps kvu"
    # llama-batched-bench's N_KV: a split cache holds the prompt once per sequence, a unified one once
    assert s["n_kv"] == 3 * (200 + 8) and u["n_kv"] == 200 + 3 * 8
    for row in (s, u):
        _check_definitions(row, shared=True)
    # the unified context is one stream of 224 cells (rounded to 256); the split one three of 256
    assert u["n_ctx"] == 256 and s["n_ctx"] == 3 * 256
    assert s["kv_bytes"] == 3 * u["kv_bytes"]


@pytest.mark.parametrize("shared, unified", [(False, False), (True, False), (True, True)])
def test_every_sequence_holds_its_prompt_and_generated_tokens(tiny_gguf: Path, shared: bool, unified: bool) -> None:
    tests = batched_tests([20, 33], [7], [1, 3], pp_shared=shared, kv_unified=unified)
    job = BenchJob(ModelParams(str(tiny_gguf)), [BenchItem(t, ContextParams(n_threads=1, n_batch=16)) for t in tests],
                   repetitions=2)
    ends = []
    child = run_child(job.to_wire(), on_event=lambda e: ends.append(e) if e["event"] == protocol.TEST_END else None)
    assert child.status == "ok", child.error
    # n_batch 16 splits the prompts into sub-batches; the generation steps ran for all B in lock-step
    assert [e["seq_tokens"] for e in ends] == [[27], [27] * 3, [40], [40] * 3]
    assert [len(e["samples_pp_ns"]) for e in ends] == [2] * 4


def test_kv_bytes_match_the_buffer_llama_cpp_allocates(tiny_gguf: Path, tmp_path: Path) -> None:
    events: list[dict] = []
    opts = BenchOptions(models=[str(tiny_gguf)], batched=True, n_pp=[40], n_tg=[8], n_pl=[2, 5],
                        threads=[1], repetitions=2)
    outcome = run_bench(opts, Store(tmp_path / "lab.db"), on_event=events.append)
    assert outcome.status == "ok"
    logged = [float(m.group(1)) for e in events if e["event"] == "log"
              for m in [re.search(r"KV buffer size =\s+([\d.]+) MiB", e["line"])] if m]
    assert len(logged) == 2
    rows = outcome.results
    assert [r["kv_bytes"] / 2**20 for r in rows] == pytest.approx(logged, abs=0.006)
    for r in rows:  # -r 2: both repetitions kept, and each is a whole llama-batched-bench row
        pp_ns, tg_ns, total = json.loads(r["samples_pp_ns"]), json.loads(r["samples_tg_ns"]), r["samples_ns"]
        assert r["repetitions"] == 2 and len(pp_ns) == len(tg_ns) == 2
        assert [a + b for a, b in zip(pp_ns, tg_ns)] == total
        assert r["t_pp"] == pytest.approx(sum(pp_ns) / 2e9)
        assert r["s_tg"] == pytest.approx(sum(r["n_seq"] * 8e9 / x for x in tg_ns) / 2)
    assert len([e for e in events if e["event"] == "rep"]) == 4


def test_every_output_format_has_the_columns(tiny_gguf: Path, tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    args = [str(tiny_gguf), "--batched", "-npp", "8", "-ntg", "4", "-npl", "2", "-t", "1", "--db", str(db)]
    table = _cli(*args)
    assert table.returncode == 0, table.stderr
    head = table.stdout.splitlines()[0]
    for title in ("PP", "TG", "B", "N_KV", "T_PP s", "S_PP t/s", "T_TG s", "S_TG t/s", "T s", "S t/s",
                  "peak RSS", "VRAM", "KV cache"):
        assert f" {title} " in head
    cells = [c.strip() for c in table.stdout.splitlines()[2].split("|")[1:-1]]
    assert cells[2:6] == ["8", "4", "2", "24"] and cells[-2] == "n/a"
    assert "computed from the GGUF header" in table.stdout
    rows = list(csv.DictReader(io.StringIO(_cli(*args, "-o", "csv").stdout)))
    assert (rows[0]["n_seq"], rows[0]["n_kv"]) == ("2", "24") and float(rows[0]["s_tg"]) > 0
    # stored rows read back later still carry llama-batched-bench's keys
    listed = subprocess.run([sys.executable, "-m", "lab", "results", "-o", "json", "--db", str(db)],
                            capture_output=True, text=True, timeout=120)
    back = json.loads(listed.stdout)
    assert len(back) == 2 and all((r["pl"], r["n_kv"], r["pp"]) == (2, 24, 8) for r in back)
    assert back[0]["test"] == "pp8+tg4 x2"


def test_a_context_too_large_or_mixed_flags_give_one_sentence(tiny_gguf: Path, tmp_path: Path) -> None:
    db = ["--db", str(tmp_path / "lab.db")]
    big = _cli(str(tiny_gguf), "--batched", "-npp", "512", "-ntg", "128", "-npl", "1,4", *db)
    assert big.returncode != 0
    assert "pp512+tg128 x4 needs a context of 2560 tokens, more than the 2048 tokens" in big.stderr
    assert "Traceback" not in big.stderr and not big.stdout
    limited = _cli(str(tiny_gguf), "--batched", "-npp", "64", "-ntg", "16", "-npl", "8", "-c", "600", *db)
    assert limited.returncode != 0 and "needs a context of 640 tokens, more than the limit of 600 set with -c" in limited.stderr
    mixed = _cli(str(tiny_gguf), "-npp", "16", *db)
    assert mixed.returncode != 0 and "-npp need --batched" in mixed.stderr
    other = _cli(str(tiny_gguf), "--batched", "-p", "16", *db)
    assert other.returncode != 0 and "-p belong to single-sequence tests" in other.stderr
    zero = _cli(str(tiny_gguf), "--batched", "-npl", "0", *db)
    assert zero.returncode != 0 and "-npl" in zero.stderr and "Traceback" not in zero.stderr


def test_the_app_charts_speed_against_the_number_of_sequences(tiny_gguf: Path, tmp_path: Path) -> None:
    from lab.tui.data import chart_bars

    store = Store(tmp_path / "lab.db")
    opts = BenchOptions(models=[str(tiny_gguf)], batched=True, n_pp=[8], n_tg=[4], n_pl=[1, 3, 2], threads=[1],
                        repetitions=1)
    rows = {r["n_seq"]: r for r in run_bench(opts, store).results}
    run_bench(BenchOptions(models=[str(tiny_gguf)], n_prompt=[8], n_gen=[0], threads=[1], repetitions=1), store)
    groups, _ = chart_bars(store, {})
    total = groups[f"{tiny_gguf.name} pp8+tg4: S_TG, all sequences"]
    each = groups[f"{tiny_gguf.name} pp8+tg4: S_TG per sequence"]
    assert [b.label for b in total] == [b.label for b in each] == ["B=1", "B=2", "B=3"]
    assert [b.value for b in total] == pytest.approx([rows[b]["s_tg"] for b in (1, 2, 3)])
    assert [b.value for b in each] == pytest.approx([rows[b]["s_tg"] / b for b in (1, 2, 3)])
    assert "pp8" in groups and not any(k.startswith("pp8+tg4 x") for k in groups)
