"""The ladder view's rows: one per quant of a base model, every figure from the store, None
where nothing was measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.ladder import accuracy_by_model, ladder_table, quality_by_model


@pytest.fixture
def store(tmp_path: Path):
    from lab.store import Store

    s = Store(tmp_path / "lab.db")
    yield s
    s.close()


def test_ladder_table(tiny_gguf: Path, store, tmp_path: Path) -> None:
    from lab.bench import BenchOptions, run_bench
    from lab.evals.runner import EvalOptions, run_eval
    from lab.library import LocalModel
    from lab.quality import QualityOptions, measure_quality
    from lab.quantize import build_ladder

    base = LocalModel(tiny_gguf.name, tiny_gguf, "path", tiny_gguf.stat().st_size)
    steps = build_ladder(store, base, ["Q8_0", "Q4_0"], out_dir=tmp_path / "ladder", n_threads=1)
    q8, q4 = (s.path for s in steps)
    base_id = store.query("select id from models where path = ?", [str(tiny_gguf)])[0]["id"]

    # nothing measured yet: every figure but the size is None
    rows = ladder_table(store, base_id)
    assert [r["file_type"] for r in rows] == ["F32", "Q8_0", "Q4_0"]
    assert [r["is_base"] for r in rows] == [True, False, False]
    assert rows[0]["file_size"] > rows[1]["file_size"] > rows[2]["file_size"] > 0
    for r in rows:
        assert all(r[k] is None for k in ("pp", "tg", "peak_rss_bytes", "kld_mean", "ppl_ratio", "accuracy",
                                          "format_valid_rate"))
    assert [r["n_fallback"] for r in rows] == [None, 0, 1]  # the base was not built here

    # a thread sweep, 2 then 1: the ladder shows pp and tg of ONE thread count (the faster tg),
    # never the newest pp of one beside the tg of the other
    run_bench(BenchOptions(models=[str(q4)], n_prompt=[32], n_gen=[8], repetitions=1, threads=[2, 1]), store)
    by_threads = {t: {r["test"]: r["avg_ts"] for r in store.query(
        "select test, avg_ts from results where n_threads = ? and model_filename = ?", [t, q4.name])} for t in (1, 2)}
    best = max(by_threads, key=lambda t: by_threads[t]["tg8"])
    text = tmp_path / "t.txt"
    text.write_text(" ".join(["a quick test of the ladder view"] * 80))
    measure_quality(store, QualityOptions(models=[str(q8), str(q4)], reference=str(tiny_gguf), text=text,
                                          n_ctx=64, n_chunks=3, n_threads=1))
    suite = tmp_path / "s.jsonl"
    suite.write_text("\n".join(json.dumps({"id": f"i{i}", "prompt": "Yes or no?", "scorer": "choice",
                                           "choices": ["yes", "no"], "expected": "yes", "constraint": "choices"})
                               for i in range(3)) + "\n")
    run_eval(store, EvalOptions(models=[str(q8)], suite=suite, n_threads=1))

    base_row, q8_row, q4_row = ladder_table(store, base_id)
    assert q4_row["pp_test"] == "pp32" and q4_row["tg_test"] == "tg8"
    assert (q4_row["pp"], q4_row["tg"]) == (by_threads[best]["pp32"], by_threads[best]["tg8"]) and q4_row["pp"] > 0
    assert q4_row["config"].startswith(f"t={best} ngl=") and q4_row["other_configs"] == 1
    assert q4_row["peak_rss_bytes"] > 0
    assert q8_row["pp"] is None and q8_row["peak_rss_bytes"] is None
    assert 0 < q8_row["kld_mean"] < q4_row["kld_mean"] and q8_row["ppl_ratio"] and q4_row["ppl_ratio"]
    assert q8_row["reference_model_id"] == base_id
    assert base_row["kld_mean"] is None  # the reference itself was not compared
    assert q8_row["accuracy"] is not None and q8_row["format_valid_rate"] == 1.0
    assert q8_row["eval_suite"] == "s" and q8_row["eval_constrained"] is True
    assert q4_row["accuracy"] is None and base_row["accuracy"] is None
    assert ladder_table(store, base_id, suite="other")[1]["accuracy"] is None
    assert ladder_table(store, base_id, machine_id="elsewhere")[2]["pp"] is None
    # the Library's columns: the newest figures of every model in one query each
    quality = quality_by_model(store)
    assert set(quality) == {q8_row["model_id"], q4_row["model_id"]}
    assert quality[q4_row["model_id"]]["kld_mean"] == q4_row["kld_mean"]
    acc = accuracy_by_model(store)
    assert list(acc) == [q8_row["model_id"]] and acc[q8_row["model_id"]]["accuracy"] == q8_row["accuracy"]
    assert accuracy_by_model(store, constrained=False) == {} and accuracy_by_model(store, suite="s")


def test_ladder_rows_share_one_configuration(store) -> None:
    """The base measured at 1 and 4 threads, its quant at 1 only: both rows show the 1-thread
    figures (the configuration both were measured at), not the base's faster 4-thread ones."""
    store.upsert_machine({"id": "m" * 16, "hostname": "box"})
    store.upsert_model({"id": "base", "model_filename": "x.F16.gguf", "file_type": "F16", "file_size": 2000})
    store.upsert_model({"id": "q4", "model_filename": "x.Q4_0.gguf", "file_type": "Q4_0", "file_size": 600,
                        "base_model_id": "base"})
    figures = {("base", 1): (100.0, 10.0, 900), ("base", 4): (300.0, 25.0, 950), ("q4", 1): (150.0, 20.0, 400)}
    for (model, threads), (pp, tg, rss) in figures.items():
        run = store.create_run("bench", machine_id="m" * 16, model_id=model, model_filename=f"{model}.gguf", config={})
        for test, n_prompt, n_gen, ts in (("pp512", 512, 0, pp), ("tg128", 0, 128, tg)):
            store.add_result({"run_id": run, "machine_id": "m" * 16, "model_id": model, "test": test,
                              "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": 0, "n_threads": threads,
                              "n_gpu_layers": 0, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1,
                              "type_k": "f16", "type_v": "f16", "avg_ts": ts, "peak_rss_bytes": rss})
        store.finish_run(run, "ok")

    base, q4 = ladder_table(store, "base", machine_id="m" * 16)

    assert (base["pp"], base["tg"], base["peak_rss_bytes"]) == (100.0, 10.0, 900)
    assert (q4["pp"], q4["tg"], q4["peak_rss_bytes"]) == (150.0, 20.0, 400)
    assert base["config"] == q4["config"] == "t=1 ngl=0 b=2048 ub=512 fa=auto kv=f16/f16"
    assert (base["other_configs"], q4["other_configs"]) == (1, 0)
    # asked for 4 threads: the quant was never measured there, so it shows no speed
    base4, q4_4 = ladder_table(store, "base", machine_id="m" * 16, config={"n_threads": 4})
    assert (base4["tg"], q4_4["tg"], q4_4["config"]) == (25.0, None, None)


def test_ladder_rows_carry_the_estimate_over_the_measured_peak(tmp_path) -> None:
    """The ladder's est/RSS is the estimate of the very test whose peak RSS the row shows."""
    from lab.ladder import ladder_table
    from lab.store import Store

    s = Store(tmp_path / "lab.db")
    s.upsert_machine({"id": "m1", "hostname": "box"})
    s.upsert_model({"id": "base", "model_filename": "b.gguf", "file_type": "F16", "file_size": 300})
    s.upsert_model({"id": "q4", "model_filename": "q.gguf", "file_type": "Q4_0", "file_size": 100,
                    "base_model_id": "base"})
    run = s.create_run("bench", machine_id="m1", model_id="q4", model_filename="q.gguf", config={})
    common = {"run_id": run, "machine_id": "m1", "model_id": "q4", "model_filename": "q.gguf", "n_depth": 0,
              "n_threads": 2, "n_gpu_layers": 0, "n_batch": 2048, "n_ubatch": 512, "type_k": "f16",
              "type_v": "f16", "flash_attn": -1}
    s.add_result(dict(common, test="pp512", n_prompt=512, n_gen=0, avg_ts=100.0,
                      peak_rss_bytes=200 * 2**20, est_memory_bytes=220 * 2**20))
    s.add_result(dict(common, test="tg128", n_prompt=0, n_gen=128, avg_ts=10.0,
                      peak_rss_bytes=150 * 2**20, est_memory_bytes=100 * 2**20))
    rows = {r["model_id"]: r for r in ladder_table(s, "base", machine_id="m1")}
    assert rows["q4"]["peak_rss_bytes"] == 200 * 2**20
    assert rows["q4"]["est_rss_ratio"] == pytest.approx(1.1)
    assert rows["base"]["est_rss_ratio"] is None
