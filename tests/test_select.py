"""lab.select and its users: every figure of a model comes from one configuration, named; the
recommendation judges the configuration asked for, picks by preference, lists every model with a
stored figure, and prints the command lines of its pick. Seeded through the Store API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab import report
from lab.select import Config, best_speeds, command_lines, parse_flash_attn, select
from lab.store import Store

BOX = "b" * 16
CPU = {"n_gpu_layers": 0, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "type_k": "f16", "type_v": "f16"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "lab.db")
    s.upsert_machine({"id": BOX, "hostname": "box"})
    yield s
    s.close()


def model(store: Store, quant: str, file_size: int, weights: int | None = None) -> str:
    model_id = quant.lower().ljust(64, "0")
    store.upsert_model({"id": model_id, "model_filename": f"m-{quant}.gguf", "path": f"/models/m {quant}.gguf",
                        "file_type": quant, "file_size": file_size, "model_size": weights or file_size - 100})
    return model_id


def bench(store: Store, model_id: str, time: str, *, pp: float | None = None, tg: float | None = None,
          rss: int | None = None, vram: int | None = None, **config: Any) -> None:
    """One bench run at one configuration, stored as the bench stores it."""
    cfg = {**CPU, "n_threads": 2, **config}
    run = store.create_run("bench", machine_id=BOX, model_id=model_id, model_filename=f"{model_id[:4]}.gguf",
                           config={}, build_commit="abc1234")
    for test, n_prompt, n_gen, ts in (("pp512", 512, 0, pp), ("tg128", 0, 128, tg)):
        if ts is not None:
            store.add_result({"run_id": run, "machine_id": BOX, "model_id": model_id, "test": test,
                              "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": 0, "n_ctx": n_prompt + n_gen,
                              "avg_ts": ts, "peak_rss_bytes": rss, "peak_vram_bytes": vram, "test_time": time, **cfg})
    store.finish_run(run, "ok")


def quality(store: Store, model_id: str, kld: float) -> None:
    store.add_row("quality", {"model_id": model_id, "kld_mean": kld, "ppl_ratio": 1 + kld,
                              "created_at": "2025-02-01T00:00:00"})


def test_config_label_flags_and_command_lines() -> None:
    cfg = Config.of({"n_threads": 2, **CPU})
    assert cfg.label() == "t=2 ngl=0 b=2048 ub=512 fa=auto kv=f16/f16"
    assert Config.of({"n_threads": 8, "flash_attn": 1}).label() == "t=8 ngl=? b=? ub=? fa=on kv=?/?"
    lines = command_lines("/models/m Q4.gguf", cfg, 640)
    assert lines["llama-server"] == ("llama-server -m '/models/m Q4.gguf' -t 2 -ngl 0 -b 2048 -ub 512 "
                                     "-fa auto -ctk f16 -ctv f16 -c 640")
    assert lines["llama-cli"].startswith("llama-cli -m '/models/m Q4.gguf' -t 2 ")
    # a setting the result did not record is left to llama.cpp, never guessed
    assert Config(n_threads=4).llama_args() == ["-t", "4"]
    assert [parse_flash_attn(v) for v in ("on", "OFF", "auto", "1")] == [1, 0, -1, 1]
    with pytest.raises(ValueError):
        parse_flash_attn("maybe")


def test_model_table_never_mixes_configurations(store: Store) -> None:
    q4 = model(store, "Q4_0", 1000)
    # 2 threads first (both tests), then a 1-thread run whose pp is the newest pp stored
    bench(store, q4, "2025-01-01T00:00:00", pp=180.0, tg=18.0, rss=900, n_threads=2)
    bench(store, q4, "2025-01-02T00:00:00", pp=100.0, tg=10.0, rss=700, n_threads=1)
    bench(store, q4, "2025-01-03T00:00:00", pp=110.0, n_threads=1, n_batch=512)  # a third configuration, pp only

    row = report.model_table(store, BOX)[0]
    # the best measured configuration: both tests, fastest tg — and both figures from it
    assert (row["pp_ts"], row["tg_ts"], row["peak_rss_bytes"]) == (180.0, 18.0, 900)
    assert row["config"] == "t=2 ngl=0 b=2048 ub=512 fa=auto kv=f16/f16"
    assert row["other_configs"] == 2 and row["builds"] == ["abc1234"] and row["n_ctx"] == 512

    one = report.model_table(store, BOX, config={"n_threads": 1, "n_batch": 2048})[0]
    assert (one["pp_ts"], one["tg_ts"], one["config"]) == (100.0, 10.0, "t=1 ngl=0 b=2048 ub=512 fa=auto kv=f16/f16")
    # asked for a configuration never measured with tg: no tg figure, not another configuration's
    small = report.model_table(store, BOX, config={"n_batch": 512})[0]
    assert (small["pp_ts"], small["tg_ts"]) == (110.0, None)

    speeds = best_speeds(store, BOX)[q4]
    assert (speeds["pp"], speeds["tg"], speeds["config"]) == (180.0, 18.0, row["config"])


def test_select_any_size_and_common_configuration(store: Store) -> None:
    a, b = model(store, "Q8_0", 2000), model(store, "Q4_0", 1000)
    rows = {a: [("pp64", 400.0, 4), ("tg16", 40.0, 4), ("tg16", 30.0, 1)], b: [("pp64", 300.0, 1), ("tg16", 35.0, 1)]}
    for m, tests in rows.items():
        run = store.create_run("bench", machine_id=BOX, model_id=m, model_filename="x", config={})
        for test, ts, threads in tests:
            n_prompt, n_gen = (64, 0) if test == "pp64" else (0, 16)
            store.add_result({"run_id": run, "machine_id": BOX, "model_id": m, "test": test, "n_prompt": n_prompt,
                              "n_gen": n_gen, "n_depth": 0, "avg_ts": ts, "n_threads": threads, **CPU})
    # pp512 / tg128 never ran: with any_size each model uses the sizes it ran, at its best
    # configuration (the one covering both tests)
    each = {s.model_id: s for s in select(store, machine_id="box", any_size=True)}
    assert (each[a].pp_test, each[a].tg_test) == ("pp64", "tg16")
    assert (each[a].config.n_threads, each[a].pp["avg_ts"], each[a].tg["avg_ts"]) == (4, 400.0, 40.0)
    assert (each[b].config.n_threads, each[b].pp["avg_ts"], each[b].tg["avg_ts"]) == (1, 300.0, 35.0)
    # common: the configuration measured on both models; a's 4-thread pp is not put beside it
    shared = {s.model_id: s for s in select(store, machine_id=BOX, any_size=True, common=True)}
    assert {s.config.n_threads for s in shared.values()} == {1}
    assert (shared[a].pp, shared[a].tg["avg_ts"], shared[a].other_configs) == (None, 30.0, 1)
    assert select(store, machine_id=BOX) == []  # no pp512, tg128 or chat anywhere


@pytest.fixture
def candidates(store: Store) -> dict[str, str]:
    """Q2_K smallest, Q4_K_M fastest, Q8_0 closest to the reference, Q3_K_M least memory, F16
    too slow; Q5_K_M has a KLD but was never benchmarked."""
    ids = {}
    spec = [  # quant, file size, tg, rss, vram, kld
        ("Q2_K", 500, 30.0, 700, 800, 0.30),
        ("Q3_K_M", 600, 31.0, 650, None, 0.20),
        ("Q4_K_M", 800, 45.0, 1000, 700, 0.05),
        ("Q8_0", 1400, 32.0, 1200, None, 0.001),
        ("F16", 2600, 10.0, 2700, None, 0.0),
    ]
    for quant, size, tg, rss, vram, kld in spec:
        ids[quant] = model(store, quant, size)
        bench(store, ids[quant], "2025-01-01T00:00:00", pp=10 * tg, tg=tg, rss=rss, vram=vram)
        quality(store, ids[quant], kld)
    ids["Q5_K_M"] = model(store, "Q5_K_M", 900)
    quality(store, ids["Q5_K_M"], 0.01)
    return ids


def test_recommend_prefer_picks_differ(store: Store, candidates: dict[str, str]) -> None:
    picks = {p: report.recommend(store, machine_id=BOX, min_tg=30, prefer=p) for p in report.PREFER}
    assert {p: r.pick.row["file_type"] for p, r in picks.items()} == {
        "smallest": "Q2_K", "fastest": "Q4_K_M", "quality": "Q8_0", "cheapest": "Q3_K_M"}
    # "the highest quality that reaches 30 t/s": F16 is closer still, but too slow
    best = picks["quality"]
    assert best.summary().startswith("m-Q8_0.gguf (Q8_0, file 1.37 KiB) is the highest-quality of 4 candidates")
    assert [c.row["file_type"] for c in best.failing] == ["F16"]
    assert any("stand-in" in n for n in picks["cheapest"].notes)
    assert best.commands()["llama-server"] == (
        "llama-server -m '/models/m Q8_0.gguf' -t 2 -ngl 0 -b 2048 -ub 512 -fa auto -ctk f16 -ctv f16 -c 512")


def test_recommend_lists_models_without_speed_results(store: Store, candidates: dict[str, str]) -> None:
    rec = report.recommend(store, machine_id=BOX, min_tg=30)
    # benchmarked never, but it has a KLD: a candidate, unverified, never dropped
    assert [c.row["file_type"] for c in rec.unverified] == ["Q5_K_M"]
    assert rec.unverified[0].reason() == "not measured: tg128 t/s"
    assert rec.unverified[0].row["config"] is None
    # on a quality limit alone it can be the pick, and the summary says no speed was measured
    only = report.recommend(store, machine_id=BOX, max_kld=0.02)
    assert [c.row["file_type"] for c in only.passing] == ["Q5_K_M", "Q8_0", "F16"]
    assert only.pick.row["file_type"] == "Q5_K_M"
    assert only.summary().endswith("No speed was measured for it.")
    assert only.commands()["llama-server"] == "llama-server -m '/models/m Q5_K_M.gguf'"


def test_recommend_judges_the_configuration_asked_for(store: Store) -> None:
    q4 = model(store, "Q4_0", 1000)
    bench(store, q4, "2025-01-01T00:00:00", pp=400.0, tg=40.0, rss=900, n_gpu_layers=99, vram=600)
    bench(store, q4, "2025-01-02T00:00:00", pp=100.0, tg=12.0, rss=1500, n_gpu_layers=0)

    best = report.recommend(store, machine_id=BOX, min_tg=30)
    assert best.pick is not None and best.pick.row["config"].startswith("t=2 ngl=99 ")
    assert any("best measured configuration" in n for n in best.notes)
    cpu = report.recommend(store, machine_id=BOX, min_tg=30, config={"n_gpu_layers": 0})
    assert cpu.pick is None and cpu.failing[0].first_failure.value == 12.0
    assert any("judged at -ngl 0 (other settings: as measured)" in n for n in cpu.notes)
    # peak VRAM: measured on the GPU configuration, unverified (never 0) on the CPU one
    vram = report.recommend(store, machine_id=BOX, max_vram_bytes=500)
    assert vram.failing[0].first_failure.value == 600
    assert report.recommend(store, machine_id=BOX, max_vram_bytes=500, config={"n_gpu_layers": 0}).unverified


def test_cli_recommend_prefer_config_and_command_line(store: Store, candidates: dict[str, str],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from test_report import run_cli

    db = str(store.path)
    code, out, err = run_cli(["--db", db, "recommend", "--machine", BOX, "--min-tg", "30", "--prefer", "quality",
                              "-t", "2", "-fa", "auto", "-ctk", "f16"], capsys)
    assert code == 0, err
    assert out.startswith("m-Q8_0.gguf (Q8_0, file 1.37 KiB) is the highest-quality of 4 candidates")
    assert ("  llama-server -m '/models/m Q8_0.gguf' -t 2 -ngl 0 -b 2048 -ub 512 -fa auto -ctk f16 -ctv f16 -c 512\n"
            in out)
    assert "  llama-cli -m '/models/m Q8_0.gguf' -t 2 " in out
    assert "judged at -t 2 -fa auto -ctk f16 (other settings" in out
    header = next(line for line in out.splitlines() if line.startswith("| model file"))
    assert " file |" in header and " weights |" in header and "| measured at " in header and " size " not in header

    code, out, _ = run_cli(["--db", db, "recommend", "--machine", BOX, "--min-tg", "30", "-t", "3", "-o", "json"],
                           capsys)
    doc = json.loads(out)
    assert code == 1 and doc["pick"] is None and doc["config"] == {"n_threads": 3}
    assert {c["status"] for c in doc["candidates"]} == {"unverified"}

    code, _, err = run_cli(["--db", db, "recommend", "-fa", "sometimes"], capsys)
    assert code == 2 and "flash attention is on, off or auto" in err


def test_a_result_measured_while_paged_fails_a_memory_limit(tmp_path) -> None:
    """A swapped result (paged during its timed repetitions) never meets --max-memory, even
    when its peak RSS is under the limit; the same figures unflagged pass."""
    from lab.report import recommend
    from lab.store import Store

    s = Store(tmp_path / "lab.db")
    s.upsert_machine({"id": "m1", "hostname": "box"})
    for mid, swapped in (("paged", 1), ("fits", 0)):
        s.upsert_model({"id": mid, "model_filename": f"{mid}.gguf", "file_type": "Q4_0", "file_size": 100})
        run = s.create_run("bench", machine_id="m1", model_id=mid, model_filename=f"{mid}.gguf", config={})
        s.add_result({"run_id": run, "machine_id": "m1", "model_id": mid, "model_filename": f"{mid}.gguf",
                      "test": "tg128", "n_prompt": 0, "n_gen": 128, "n_depth": 0, "n_threads": 2,
                      "n_gpu_layers": 0, "n_batch": 2048, "n_ubatch": 512, "type_k": "f16", "type_v": "f16",
                      "flash_attn": -1, "avg_ts": 50.0, "peak_rss_bytes": 150 * 2**20, "swapped": swapped})
    rec = recommend(s, machine_id="m1", max_memory_bytes=160 * 2**20)
    status = {c.row["model_id"]: c for c in rec.candidates}
    assert status["fits"].status == "pass"
    assert status["paged"].status == "fail"
    assert "paged" in status["paged"].reason() and "swapped" in status["paged"].reason()


def test_an_endpoint_is_never_the_pick(tmp_path) -> None:
    """An endpoint with stored figures is a candidate to compare against, but the pick is always a
    model that runs here, even when the endpoint ranks first."""
    from lab.report import recommend
    from lab.store import Store

    s = Store(tmp_path / "lab.db")
    s.upsert_machine({"id": "m1", "hostname": "box"})
    for mid, name, ts in (("ep", "endpoint:big", 500.0), ("q4", "q4.gguf", 50.0)):
        s.upsert_model({"id": mid, "model_filename": name, "file_type": "Q4_0", "file_size": 100})
        run = s.create_run("bench", machine_id="m1", model_id=mid, model_filename=name, config={})
        s.add_result({"run_id": run, "machine_id": "m1", "model_id": mid, "model_filename": name,
                      "test": "tg128", "n_prompt": 0, "n_gen": 128, "n_depth": 0, "n_threads": 2,
                      "n_gpu_layers": 0, "n_batch": 2048, "n_ubatch": 512, "type_k": "f16", "type_v": "f16",
                      "flash_attn": -1, "avg_ts": ts})
    rec = recommend(s, machine_id="m1", min_tg=10, prefer="fastest")
    assert [c.row["model_id"] for c in rec.passing] == ["ep", "q4"]
    assert rec.pick is not None and rec.pick.row["model_id"] == "q4"
    assert any("never picked" in n for n in rec.notes)
