"""lab.report and its CLI faces: compare, model table, Pareto frontier, recommendation, and the
llama-bench import, on a real temporary store seeded with hand-made rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab import report
from lab.report import recommendation
from lab.errors import LabError
from lab.store import Store

MACHINE = "aaaaaaaaaaaaaaaa"
OTHER_MACHINE = "bbbbbbbbbbbbbbbb"


# --- seeding ----------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "lab.db")
    s.upsert_machine({"id": MACHINE, "hostname": "box", "cpu_info": "Test CPU"})
    s.upsert_machine({"id": OTHER_MACHINE, "hostname": "other", "cpu_info": "Other CPU"})
    return s


def add_model(store: Store, model_id: str, quant: str, file_size: int, *, params: int = 135_000_000) -> str:
    store.upsert_model({"id": model_id, "model_filename": f"tiny-{quant}.gguf", "path": f"/models/tiny-{quant}.gguf",
                        "file_type": quant,
                        "file_size": file_size, "model_size": file_size - 1000, "model_n_params": params,
                        "arch": "llama", "model_type": f"llama 135M {quant}"})
    return model_id


def add_result(store: Store, model_id: str, test: str, *, machine: str = MACHINE, time: str = "2025-01-01T00:00:00",
               **figures: Any) -> str:
    run_id = store.create_run("bench", machine_id=machine, model_id=model_id, model_filename=f"{model_id}.gguf",
                              config={})
    store.finish_run(run_id, "ok")
    row = {"run_id": run_id, "machine_id": machine, "model_id": model_id, "model_filename": f"{model_id}.gguf",
           "test": test, "n_threads": 2, "n_gpu_layers": 0, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1,
           "type_k": "f16", "type_v": "f16", "test_time": time}
    if test.startswith("pp"):
        row.update(n_prompt=int(test[2:].split()[0]), n_gen=0, n_depth=0)
    elif test.startswith("tg"):
        row.update(n_prompt=0, n_gen=int(test[2:].split()[0]), n_depth=0)
    row["n_ctx"] = (row.get("n_prompt") or 0) + (row.get("n_gen") or 0) or None
    row.update(figures)
    return store.add_result(row)


def add_quality(store: Store, model_id: str, kld: float | None, ppl_ratio: float | None,
                created: str = "2025-01-02T00:00:00") -> None:
    store.add_row("quality", {"model_id": model_id, "reference_model_id": "ref", "reference_filename": "tiny-F16.gguf",
                              "kld_mean": kld, "ppl_ratio": ppl_ratio, "created_at": created})


def add_eval(store: Store, model_id: str, accuracy: float, format_valid: float, *, suite: str = "orders",
             created: str = "2025-01-02T00:00:00", status: str = "ok") -> None:
    run_id = store.create_run("eval", machine_id=MACHINE, model_id=model_id, model_filename=None, config={})
    store.finish_run(run_id, status)
    store.add_row("eval_runs", {"run_id": run_id, "model_id": model_id, "suite": suite, "n_items": 20,
                                "accuracy": accuracy, "format_valid_rate": format_valid, "created_at": created})


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``rightsizer ARGS`` in-process through the real entry point (user errors become one
    sentence and an exit code there); registers this module's commands if the group lacks them."""
    from lab.cli import cli, main
    from lab.cli import report as report_cli

    for command in report_cli.COMMANDS:
        if command.name not in cli.commands:
            cli.add_command(command)
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# --- compare ----------------------------------------------------------------------------------


def test_compare_percent_differences_are_exact_and_none_stays_none(store: Store) -> None:
    a = add_model(store, "m" * 64, "Q8_0", 2000)
    base = add_result(store, a, "tg128", avg_ts=100.0, stddev_ts=1.0, peak_rss_bytes=1000, j_per_token=0.5, noisy=0)
    faster = add_result(store, a, "tg128", avg_ts=125.0, peak_rss_bytes=1500, j_per_token=0.25, noisy=1)
    slower = add_result(store, a, "tg128", avg_ts=80.0, peak_rss_bytes=None, j_per_token=None)

    rows = report.compare(store, [base, faster[-10:], slower[:24]])  # full id, short id (suffix), prefix

    assert [r["id"] for r in rows] == [base, faster, slower]
    assert [r["is_baseline"] for r in rows] == [True, False, False]
    assert rows[0]["avg_ts_diff_pct"] == 0.0
    assert rows[1]["avg_ts_diff_pct"] == 25.0
    assert rows[2]["avg_ts_diff_pct"] == -20.0
    assert rows[1]["peak_rss_bytes_diff_pct"] == 50.0
    assert rows[1]["j_per_token_diff_pct"] == -50.0
    # not measured: the figure and its difference are None, never 0
    assert rows[2]["peak_rss_bytes"] is None and rows[2]["peak_rss_bytes_diff_pct"] is None
    assert rows[2]["j_per_token_diff_pct"] is None
    assert rows[0]["ttft_ms"] is None and rows[0]["ttft_ms_diff_pct"] is None
    assert rows[0]["noisy"] is False and rows[1]["noisy"] is True and rows[2]["noisy"] is None
    assert rows[1]["short_id"] == faster[-10:]


def test_compare_run_id_expands_and_each_test_has_its_own_baseline(store: Store) -> None:
    a, b = add_model(store, "a" * 64, "Q8_0", 2000), add_model(store, "b" * 64, "Q4_0", 1000)
    run_a = store.create_run("bench", machine_id=MACHINE, model_id=a, model_filename="a", config={})
    run_b = store.create_run("bench", machine_id=MACHINE, model_id=b, model_filename="b", config={})
    for run, model, pp, tg in ((run_a, a, 400.0, 40.0), (run_b, b, 500.0, 30.0)):
        store.add_result({"run_id": run, "machine_id": MACHINE, "model_id": model, "test": "pp512",
                          "avg_ts": pp, "test_time": "2025-01-01T00:00:00"})
        store.add_result({"run_id": run, "machine_id": MACHINE, "model_id": model, "test": "tg128",
                          "avg_ts": tg, "test_time": "2025-01-01T00:00:01"})

    rows = report.compare(store, [run_a[-10:], run_b[-10:]])

    assert [(r["test"], r["avg_ts"], r["is_baseline"]) for r in rows] == [
        ("pp512", 400.0, True), ("tg128", 40.0, True), ("pp512", 500.0, False), ("tg128", 30.0, False)]
    assert rows[2]["avg_ts_diff_pct"] == 25.0
    assert rows[3]["avg_ts_diff_pct"] == -25.0


def test_compare_unknown_and_ambiguous_ids_are_user_errors(store: Store) -> None:
    a = add_model(store, "c" * 64, "Q8_0", 2000)
    first = add_result(store, a, "tg128", avg_ts=1.0)
    add_result(store, a, "tg128", avg_ts=2.0)
    with pytest.raises(LabError, match="No result or run has the id 'ffffffffff'"):
        report.compare(store, ["ffffffffff"])
    with pytest.raises(LabError, match="matches 2 results"):
        report.compare(store, [first[:4]])  # both ids share their timestamp head
    with pytest.raises(LabError, match="not a result id"):
        report.compare(store, ["not-hex"])


# --- model table ------------------------------------------------------------------------------


def test_model_table_takes_the_newest_measurement_and_joins_quality_and_eval(store: Store) -> None:
    q4 = add_model(store, "4" * 64, "Q4_K_M", 1000)
    q8 = add_model(store, "8" * 64, "Q8_0", 2000)
    add_result(store, q4, "tg128", time="2025-01-01T00:00:00", avg_ts=10.0, peak_rss_bytes=900)
    add_result(store, q4, "tg128", time="2025-01-03T00:00:00", avg_ts=12.0, peak_rss_bytes=1100, j_per_token=0.1)
    add_result(store, q4, "pp512", time="2025-01-03T00:00:00", avg_ts=300.0, peak_rss_bytes=1300)
    add_result(store, q4, "chat", time="2025-01-03T00:00:00", avg_ts=11.0, ttft_ms=80.0, itl_p95_ms=95.0,
               peak_rss_bytes=1200)
    add_result(store, q4, "tg128 @ d512", time="2025-01-04T00:00:00", avg_ts=1.0)  # a depth test: not tg128
    add_result(store, q8, "tg128", avg_ts=8.0, peak_rss_bytes=2100)
    add_result(store, q8, "tg128", machine=OTHER_MACHINE, avg_ts=50.0)
    add_quality(store, q4, kld=0.02, ppl_ratio=1.01, created="2025-01-01T00:00:00")
    add_quality(store, q4, kld=0.03, ppl_ratio=1.02, created="2025-01-05T00:00:00")
    add_eval(store, q4, accuracy=0.85, format_valid=1.0)
    add_eval(store, q4, accuracy=0.10, format_valid=0.2, created="2025-02-01T00:00:00", status="failed")

    rows = report.model_table(store, MACHINE)

    assert [r["file_type"] for r in rows] == ["Q4_K_M", "Q8_0"]  # smallest file first
    q4_row, q8_row = rows
    assert q4_row["tg_ts"] == 12.0 and q4_row["pp_ts"] == 300.0
    assert q4_row["ttft_ms"] == 80.0 and q4_row["itl_p95_ms"] == 95.0
    assert q4_row["peak_rss_bytes"] == 1300  # the largest of the tests shown
    assert q4_row["j_per_token"] == 0.1
    assert q4_row["file_size"] == 1000 and q4_row["model_n_params"] == 135_000_000
    assert (q4_row["kld_mean"], q4_row["ppl_ratio"]) == (0.03, 1.02)  # newest quality row
    assert (q4_row["accuracy"], q4_row["format_valid_rate"]) == (0.85, 1.0)  # the failed eval is left out
    assert q4_row["hostname"] == "box" and q4_row["imported"] is False
    # never measured: None, not 0
    for key in ("pp_ts", "ttft_ms", "itl_p95_ms", "j_per_token", "kld_mean", "ppl_ratio", "accuracy",
                "format_valid_rate"):
        assert q8_row[key] is None, key
    assert q8_row["tg_ts"] == 8.0

    both = report.model_table(store)
    assert sorted((r["file_type"], r["hostname"]) for r in both) == [
        ("Q4_K_M", "box"), ("Q8_0", "box"), ("Q8_0", "other")]


# --- Pareto -----------------------------------------------------------------------------------


def test_pareto_front_of_a_hand_made_set() -> None:
    a = {"name": "A", "tg_ts": 10.0, "peak_rss_bytes": 100, "kld_mean": 0.05}
    b = {"name": "B", "tg_ts": 20.0, "peak_rss_bytes": 200, "kld_mean": 0.05}
    c = {"name": "C", "tg_ts": 15.0, "peak_rss_bytes": 250, "kld_mean": 0.05}  # B beats it everywhere
    d = {"name": "D", "tg_ts": 5.0, "peak_rss_bytes": 100, "kld_mean": 0.05}  # A beats it on speed
    e = {"name": "E", "tg_ts": 10.0, "peak_rss_bytes": 100, "kld_mean": 0.05}  # ties A: both stay
    f = {"name": "F", "tg_ts": None, "peak_rss_bytes": 50, "kld_mean": 0.01}  # never measured
    g = {"name": "G", "tg_ts": 1.0, "peak_rss_bytes": 1000, "kld_mean": 0.001}  # best quality

    two = report.pareto_front([a, b, c, d, e, f], {"tg_ts": "max", "peak_rss_bytes": "min"})
    assert [r["name"] for r in two.front] == ["A", "B", "E"]
    assert [(r["name"], missing) for r, missing in two.excluded] == [("F", ["tg_ts"])]
    assert two.note() == "1 row left out of the frontier because it lacks tg_ts (never measured)."
    assert two.contains(a) and not two.contains(c)

    three = report.pareto_front([a, b, c, d, f, g], ["+tg_ts", "-peak_rss_bytes", "-kld_mean"])
    assert [r["name"] for r in three.front] == ["A", "B", "G"]
    assert report.pareto_front([a, b], [("tg_ts", "max")]).front == [b]
    assert report.pareto_front([a], {"tg_ts": "max"}).note() is None
    with pytest.raises(ValueError):
        report.pareto_front([a], {"tg_ts": "up"})


# --- recommend --------------------------------------------------------------------------------


@pytest.fixture
def ladder(store: Store) -> dict[str, str]:
    """A quant ladder on MACHINE: Q2_K is fast but inaccurate, Q3_K_M has no eval, Q4_K_M and
    Q5_K_M pass, Q8_0 is too slow and too big, F16 is too slow."""
    ids: dict[str, str] = {}
    spec = [  # quant, size, tg, rss, accuracy, kld
        ("Q2_K", 500, 40.0, 700, 0.60, 0.30),
        ("Q3_K_M", 600, 35.0, 800, None, 0.12),
        ("Q4_K_M", 800, 30.0, 1000, 0.85, 0.04),
        ("Q5_K_M", 900, 28.0, 1100, 0.88, 0.02),
        ("Q8_0", 1400, 15.0, 1600, 0.90, 0.001),
        ("F16", 2600, 10.0, 1200, None, 0.0),
    ]
    for quant, size, tg, rss, acc, kld in spec:
        model = add_model(store, quant.lower().ljust(64, "0"), quant, size)
        ids[quant] = model
        add_result(store, model, "tg128", avg_ts=tg, peak_rss_bytes=rss)
        add_quality(store, model, kld=kld, ppl_ratio=1 + kld)
        if acc is not None:
            add_eval(store, model, accuracy=acc, format_valid=1.0)
    return ids


def test_recommend_picks_the_smallest_passing_quant_and_says_why_others_fail(store: Store, ladder: dict[str, str]) -> None:
    rec = report.recommend(store, machine_id=MACHINE, min_tg=20, max_memory_bytes=1500, min_accuracy=0.8)

    assert rec.pick is not None and rec.pick.row["file_type"] == "Q4_K_M"
    assert [c.row["file_type"] for c in rec.passing] == ["Q4_K_M", "Q5_K_M"]
    assert [c.row["file_type"] for c in rec.failing] == ["Q2_K", "Q8_0", "F16"]
    first = {c.row["file_type"]: c.first_failure for c in rec.failing}
    assert first["Q2_K"].name == "min_accuracy"
    assert first["Q2_K"].value == 0.60 and first["Q2_K"].delta == pytest.approx(-0.20)
    assert first["Q2_K"].delta_pct == pytest.approx(-25.0)
    # Q8_0 fails speed and memory; the first limit in order (speed) is the one reported
    assert first["Q8_0"].name == "min_tg" and first["Q8_0"].delta == -5.0 and first["Q8_0"].delta_pct == -25.0
    assert [c.name for c in rec.failing[1].checks if c.status == "fail"] == ["min_tg", "max_memory_bytes"]
    # F16 fails speed and has no accuracy: failed is what it is, and the missing figure is listed too
    assert first["F16"].name == "min_tg" and [c.name for c in rec.failing[2].unverified] == ["min_accuracy"]
    # Q3_K_M never ran the eval: unverified, not passed, although it is smaller than the pick
    assert [c.row["file_type"] for c in rec.unverified] == ["Q3_K_M"]
    assert rec.unverified[0].reason() == "not measured: accuracy"
    assert rec.machine_id == MACHINE
    assert rec.summary().startswith("tiny-Q4_K_M.gguf (Q4_K_M, file 800 B) is the smallest of 2 candidates")
    assert rec.summary().endswith("Measured at t=2 ngl=0 b=2048 ub=512 fa=auto kv=f16/f16.")
    assert "tg128 t/s 30 ≥ 20" in rec.summary()
    assert first["Q8_0"].describe() == "tg128 t/s 15 is 5 below the minimum 20 (-25.0%)"


def test_recommend_ties_on_size_break_by_peak_rss_and_quality_limits(store: Store) -> None:
    light = add_model(store, "1" * 64, "Q4_0", 1000)
    heavy = add_model(store, "2" * 64, "Q4_1", 1000)
    add_result(store, heavy, "tg128", avg_ts=30.0, peak_rss_bytes=1300)
    add_result(store, light, "tg128", avg_ts=30.0, peak_rss_bytes=1200)
    add_quality(store, light, kld=0.05, ppl_ratio=1.04)
    add_quality(store, heavy, kld=0.01, ppl_ratio=1.01)

    assert report.recommend(store, machine_id=MACHINE, min_tg=10).pick.row["model_id"] == light
    rec = report.recommend(store, machine_id=MACHINE, max_kld=0.02, max_ppl_ratio=1.02)
    assert rec.pick.row["model_id"] == heavy
    assert rec.failing[0].first_failure.name == "max_kld"
    assert rec.failing[0].first_failure.delta == pytest.approx(0.03)


def test_recommend_nothing_passes_and_missing_figures_are_unverified(store: Store, ladder: dict[str, str]) -> None:
    rec = report.recommend(store, machine_id=MACHINE, max_ttft_ms=200)  # no chat test was ever run
    assert rec.pick is None and not rec.passing and not rec.failing
    assert len(rec.unverified) == 6
    assert rec.summary() == ("No model meets every limit: of 6 candidates, 6 could not be checked "
                             "(a figure was never measured).")
    with pytest.raises(LabError, match="fraction between 0 and 1"):
        report.recommend(store, machine_id=MACHINE, min_accuracy=80)
    with pytest.raises(LabError, match="No results are stored for machine 'nope'"):
        report.recommend(store, machine_id="nope")


def test_recommend_defaults_to_this_machine_else_all_with_a_note(store: Store, ladder: dict[str, str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    add_result(store, ladder["Q2_K"], "tg128", machine=OTHER_MACHINE, avg_ts=99.0, peak_rss_bytes=10)
    monkeypatch.setattr(recommendation, "current_machine_id", lambda: MACHINE)
    here = report.recommend(store, min_tg=50)
    assert here.machine_id == MACHINE and here.pick is None
    assert not any(n.startswith("This machine") for n in here.notes)

    monkeypatch.setattr(recommendation, "current_machine_id", lambda: "cccccccccccccccc")
    anywhere = report.recommend(store, min_tg=50)
    assert anywhere.machine_id is None
    assert anywhere.pick is not None and anywhere.pick.row["machine_id"] == OTHER_MACHINE
    assert "This machine (cccccccccccccccc) has no results" in anywhere.notes[0]
    assert "2 other machines" in anywhere.notes[0]


# 1200 USD over 4 years x 8766 h x 0.5 busy = 0.068446 USD per busy hour, plus 35 W at 0.30 USD/kWh
# = 0.0105 USD/h: 0.078946 USD per busy hour, so 1M tokens at T t/s cost 21.9295 / T USD.
COSTS = {"price_usd": 1200, "lifetime_years": 4, "utilization": 0.5, "power_usd_per_kwh": 0.30, "watts": 35}


def test_recommend_cost_limit_and_cheapest_use_the_machine_cost_settings(store: Store, ladder: dict[str, str]) -> None:
    from lab.cost import set_machine_costs

    set_machine_costs(store, MACHINE, **COSTS)
    rec = report.recommend(store, machine_id=MACHINE, max_cost_per_mtok=0.75, min_accuracy=0.8, prefer="cheapest")
    cost = {c.row["file_type"]: c.row["usd_per_mtok"] for c in rec.candidates}
    assert cost == {"Q2_K": pytest.approx(21.9295 / 40, abs=1e-5), "Q3_K_M": pytest.approx(21.9295 / 35, abs=1e-5),
                    "Q4_K_M": pytest.approx(0.73098, abs=1e-5), "Q5_K_M": pytest.approx(0.78320, abs=1e-5),
                    "Q8_0": pytest.approx(1.46197, abs=1e-5), "F16": pytest.approx(2.19295, abs=1e-5)}
    assert rec.pick is not None and rec.pick.row["file_type"] == "Q4_K_M"
    # Q5_K_M meets accuracy but costs 0.7832 per 1M, over 0.75
    q5 = next(c for c in rec.failing if c.row["file_type"] == "Q5_K_M")
    assert q5.first_failure.name == "max_cost_per_mtok"
    assert q5.reason() == "USD per 1M tokens 0.7832 is 0.0332 over the limit 0.75 (+4.4%)"
    assert [c.row["file_type"] for c in rec.candidates] == ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q8_0", "F16"]
    assert rec.notes[-1].startswith("Cost is USD per 1M generated tokens")

    # cheapest without limits: the fastest quant is the cheapest per token here
    assert report.recommend(store, machine_id=MACHINE, prefer="cheapest").pick.row["file_type"] == "Q2_K"

    # a measured J/token replaces --watts for that candidate: 0.5 J/token at 0.30 USD/kWh = 0.041667 per 1M
    add_result(store, ladder["Q8_0"], "tg128", time="2025-02-01T00:00:00", avg_ts=15.0, peak_rss_bytes=1600,
               j_per_token=0.5)
    q8 = next(r for r in report.model_table(store, MACHINE) if r["file_type"] == "Q8_0")
    assert q8["usd_per_mtok"] == pytest.approx(0.068446 / (15 * 3600) * 1e6 + 0.041667, abs=1e-5)
    assert q8["cost_basis"] == "tg t/s, energy from measured J/token"


def test_recommend_cost_without_machine_settings_is_unverified_and_cheapest_falls_back_to_memory(
        store: Store, ladder: dict[str, str]) -> None:
    rec = report.recommend(store, machine_id=MACHINE, max_cost_per_mtok=1.0)
    assert rec.pick is None and len(rec.unverified) == 6
    assert rec.unverified[0].reason() == (
        "not measured: USD per 1M tokens (cost needs rightsizer machine set --price --lifetime-years "
        "--utilization --power-price)")
    assert rec.unverified[0].checks[0].describe() == "USD per 1M tokens could not be computed (limit ≤ 1)"
    assert any(n.startswith("No candidate has a cost figure") and n.endswith("a cost limit leaves them unverified.")
               for n in rec.notes)
    cheap = report.recommend(store, machine_id=MACHINE, prefer="cheapest")
    # no cost anywhere: least peak memory (Q2_K's 700 B) stands in, and the note says so
    assert cheap.pick.row["file_type"] == "Q2_K" and cheap.pick.row["usd_per_mtok"] is None
    assert [c.row["file_type"] for c in cheap.candidates] == ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "F16", "Q8_0"]
    assert any(n.endswith("'cheapest' ranks by peak memory (RSS + VRAM) as a stand-in.") for n in cheap.notes)


def test_cli_recommend_shows_the_cost_column_and_limit(store: Store, ladder: dict[str, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from lab.cost import set_machine_costs

    set_machine_costs(store, MACHINE, **COSTS)
    db = str(store.path)
    code, out, err = run_cli(["--db", db, "recommend", "--machine", MACHINE, "--max-cost-per-mtok", "0.6",
                              "-o", "md"], capsys)
    assert code == 0, err
    header = next(line for line in out.splitlines() if "status" in line and "USD/1M tok" in line)
    cells = [c.strip() for c in header.strip("|").split("|")]
    q2 = next(line for line in out.splitlines() if "tiny-Q2_K.gguf" in line and "PICK" in line)
    q2_cells = [c.strip() for c in q2.strip("|").split("|")]
    assert q2_cells[cells.index("USD/1M tok")] == "0.5482"
    assert q2_cells[cells.index("USD per 1M tokens ≤")] == "pass 0.5482"
    code, out, _ = run_cli(["--db", db, "recommend", "--machine", MACHINE, "--max-cost-per-mtok", "0.6",
                            "-o", "json"], capsys)
    data = json.loads(out)
    assert data["limits"] == {"max_cost_per_mtok": 0.6}
    assert data["pick"]["usd_per_mtok"] == pytest.approx(0.54824, abs=1e-5)
    assert [c["status"] for c in data["candidates"]] == ["pass", "fail", "fail", "fail", "fail", "fail"]


BASE_ITEMS = [True] * 27 + [False] * 9
Q4_ITEMS = [True] * 20 + [False] * 7 + [False] * 3 + [True] * 2 + [False] * 4


def add_eval_items(store: Store, model_id: str, label: str, correct: list[bool], *, suite: str = "orders",
                   tokens: tuple[int, int] | None = None) -> str:
    """An ok eval run of ``suite`` with one stored item per answer (item ids shared across runs)."""
    run_id = store.create_run("eval", machine_id=MACHINE, model_id=model_id, model_filename=label, config={})
    store.finish_run(run_id, "ok")
    n = sum(correct)
    eval_id = store.add_row("eval_runs", {"run_id": run_id, "model_id": model_id, "model_filename": label,
                                          "suite": suite, "suite_sha256": "abc", "n_items": len(correct),
                                          "n_correct": n, "accuracy": n / len(correct),
                                          "created_at": "2025-01-03T00:00:00"})
    store.add_rows("eval_items", [{"eval_run_id": eval_id, "model_id": model_id, "item_id": f"order-{i}",
                                   "item_index": i, "correct": int(c), "status": "ok",
                                   "n_prompt_tokens": tokens[0] if tokens else None,
                                   "n_tokens": tokens[1] if tokens else None} for i, c in enumerate(correct)])
    return eval_id


@pytest.fixture
def with_baseline(store: Store, ladder: dict[str, str]) -> dict[str, str]:
    """The ladder plus an endpoint "big" (prices 0.15 / 0.60 USD per 1M in / out) with an eval
    of the same 36 items (27 right) and a chat result; Q4_K_M answered 22 of them right and ran
    the chat test, Q8_0 answered exactly as the endpoint did."""
    from lab.cost import set_machine_costs
    from lab.endpoints import add_endpoint

    set_machine_costs(store, MACHINE, **COSTS)
    big = add_endpoint(store, "big", url="http://127.0.0.1:9/v1", model="big-model", price_in=0.15, price_out=0.60)
    add_eval_items(store, big.id, "endpoint:big", BASE_ITEMS, tokens=(100, 20))
    add_result(store, big.id, "chat", ttft_ms=400.0, e2e_ms=2000.0, avg_ts=50.0, model_filename="endpoint:big")
    add_eval_items(store, ladder["Q4_K_M"], "tiny-Q4_K_M.gguf", Q4_ITEMS)
    add_eval_items(store, ladder["Q8_0"], "tiny-Q8_0.gguf", BASE_ITEMS)
    add_result(store, ladder["Q4_K_M"], "chat", ttft_ms=100.0, e2e_ms=1000.0, avg_ts=25.0)
    return dict(ladder, big=big.id)


def test_recommend_baseline_pairs_accuracy_and_gives_latency_and_cost_ratios(store: Store,
                                                                              with_baseline: dict[str, str]) -> None:
    rec = report.recommend(store, machine_id=MACHINE, baseline="endpoint:big")
    rows = {c.row["model_filename"]: c.row for c in rec.candidates}
    assert rows["endpoint:big"]["is_baseline"] and rows["endpoint:big"]["vs_baseline"] is None
    q4 = rows["tiny-Q4_K_M.gguf"]["vs_baseline"]
    acc = q4["accuracy"]
    # 20 both right, 2 only Q4_K_M, 7 only the endpoint, 7 neither: -5/36, McNemar p = 92/512
    assert (acc["n"], acc["both_correct"], acc["only_a"], acc["only_b"], acc["neither"]) == (36, 20, 2, 7, 7)
    assert acc["difference"] == pytest.approx(-5 / 36)
    assert acc["difference_ci95"] == [pytest.approx(-0.296, abs=1e-3), pytest.approx(0.028, abs=1e-3)]
    assert acc["mcnemar_exact_p"] == pytest.approx(92 / 512)
    assert acc["verdict"].startswith("not distinguishable at n=36 (exact McNemar p = 0.18;")
    # chat 100 / 400 ms TTFT, 1000 / 2000 ms e2e; per token from the chat streams' 50 / 25 t/s
    assert (q4["ttft_ratio"], q4["e2e_ratio"], q4["token_time_ratio"], q4["token_time_basis"]) == (
        0.25, 0.5, 2.0, "chat t/s")
    # endpoint: (3600 x 0.15 + 720 x 0.60) / 1e6 USD for 720 generated tokens = 1.35 per 1M
    assert rec.baseline["usd_per_mtok"] == pytest.approx(1.35)
    assert q4["cost_ratio"] == pytest.approx(21.9295 / 30 / 1.35, abs=1e-5)
    q8 = rows["tiny-Q8_0.gguf"]["vs_baseline"]
    assert q8["accuracy"]["difference"] == 0 and q8["accuracy"]["mcnemar_exact_p"] == 1.0
    # Q8_0 has no chat test: no TTFT ratio, and its tg speed stands against the endpoint's stream
    assert q8["ttft_ratio"] is None and q8["token_time_ratio"] == pytest.approx(50 / 15)
    assert q8["token_time_basis"] == "candidate tg t/s against baseline chat t/s"
    # Q3_K_M never ran the eval
    assert rows["tiny-Q3_K_M.gguf"]["vs_baseline"]["accuracy_note"] == "the candidate has no eval run"
    assert rows["tiny-Q2_K.gguf"]["vs_baseline"]["accuracy_note"] == (
        "the candidate's eval run stored no scored items to pair")
    # a local model as baseline: the same pairing the other way round
    local = report.recommend(store, machine_id=MACHINE, baseline="tiny-Q4_K_M.gguf")
    flipped = {c.row["model_filename"]: c.row for c in local.candidates}["tiny-Q8_0.gguf"]["vs_baseline"]
    assert flipped["accuracy"]["difference"] == pytest.approx(5 / 36)
    assert flipped["token_time_ratio"] == pytest.approx(30 / 15) and flipped["token_time_basis"] == "tg t/s"
    with pytest.raises(LabError, match="No candidate is called 'nope.gguf'"):
        report.recommend(store, machine_id=MACHINE, baseline="nope.gguf")


def test_cli_recommend_baseline_columns(store: Store, with_baseline: dict[str, str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    db = str(store.path)
    code, out, err = run_cli(["--db", db, "recommend", "--machine", MACHINE, "--baseline", "endpoint:big",
                              "-o", "md"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("| model file"))
    titles = [c.strip() for c in header.strip("|").split("|")]

    def cells(name: str) -> dict[str, str]:
        line = next(line for line in lines if f"| {name} " in line)
        return dict(zip(titles, [c.strip() for c in line.strip("|").split("|")]))

    q4 = cells("tiny-Q4_K_M.gguf")
    assert q4["Δ accuracy vs baseline (95% CI)"] == "-13.9 pts [-29.6, +2.8] n=36"
    assert q4["McNemar"] == "not distinguishable (p=0.18)"
    assert q4["latency ×"] == "TTFT 0.25 e2e 0.50; per token 2.00 (chat t/s)"
    assert q4["cost ×"] == "0.54"
    assert cells("endpoint:big")["Δ accuracy vs baseline (95% CI)"] == "baseline"
    assert any(line.startswith("baseline: endpoint:big (accuracy: paired on the same suite items") for line in lines)
    code, out, _ = run_cli(["--db", db, "recommend", "--machine", MACHINE, "--baseline", "endpoint:big",
                            "-o", "json"], capsys)
    data = json.loads(out)
    assert data["baseline"]["label"] == "endpoint:big"
    assert next(c for c in data["candidates"] if c["file_type"] == "Q8_0")["vs_baseline"]["cost_ratio"] == (
        pytest.approx(21.9295 / 15 / 1.35, abs=1e-5))
    code, _, err = run_cli(["--db", db, "recommend", "--machine", MACHINE, "--baseline", "endpoint:nope"], capsys)
    assert code == 1 and err.startswith("error: No endpoint called 'nope' (registered: big)")


def test_parse_bytes() -> None:
    assert report.parse_bytes("2GiB") == 2 * 1024**3
    assert report.parse_bytes("1.5 G") == int(1.5 * 1024**3)
    assert report.parse_bytes("512MiB") == 512 * 1024**2
    assert report.parse_bytes("2GB") == 2_000_000_000
    assert report.parse_bytes("1000") == 1000
    with pytest.raises(LabError, match="not a memory size"):
        report.parse_bytes("two gigs")


# --- llama-bench import -----------------------------------------------------------------------


def _entry(n_prompt: int, n_gen: int, samples_ts: list[float], *, n_depth: int = 0, time: str) -> dict[str, Any]:
    samples_ns = [int((n_prompt + n_gen) * 1e9 / ts) for ts in samples_ts]
    mean_ts = sum(samples_ts) / len(samples_ts)
    mean_ns = sum(samples_ns) / len(samples_ns)
    return {
        "build_commit": "8cf427ff", "build_number": 5163, "cpu_info": "AMD Ryzen 7 7800X3D 8-Core Processor",
        "gpu_info": "NVIDIA GeForce RTX 4080", "backends": "CUDA",
        "model_filename": "models/Qwen2.5-7B-Instruct-Q4_K_M.gguf", "model_type": "qwen2 7B Q4_K - Medium",
        "model_size": 4677120000, "model_n_params": 7615616512, "n_batch": 2048, "n_ubatch": 512, "n_threads": 8,
        "cpu_mask": "0x0", "cpu_strict": False, "poll": 50, "type_k": "f16", "type_v": "f16", "n_gpu_layers": 99,
        "split_mode": "layer", "main_gpu": 0, "no_kv_offload": False, "flash_attn": False, "tensor_split": "0.00",
        "use_mmap": True, "embeddings": False, "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": n_depth,
        "test_time": time, "avg_ns": int(mean_ns),
        "stddev_ns": int((sum((x - mean_ns) ** 2 for x in samples_ns) / (len(samples_ns) - 1)) ** 0.5),
        "avg_ts": mean_ts, "stddev_ts": (sum((x - mean_ts) ** 2 for x in samples_ts) / (len(samples_ts) - 1)) ** 0.5,
        "samples_ns": samples_ns, "samples_ts": samples_ts,
    }


STEADY = [7100.0, 7120.0, 7080.0, 7110.0, 7090.0]  # CV 0.2%
NOISY = [119.0, 130.0, 119.5, 100.0, 117.5]  # CV 9%


def test_import_llama_bench_json_and_round_trip_through_results(store: Store, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    doc = [_entry(512, 0, STEADY, time="2025-04-24T11:58:50Z"), _entry(0, 128, NOISY, time="2025-04-24T11:58:51Z")]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc, indent=2))

    assert report.import_llama_bench(store, path) == 2

    code, out, err = run_cli(["--db", str(store.path), "results", "-o", "json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["test"] for r in rows] == ["pp512", "tg128"]
    assert rows[0]["avg_ts"] == doc[0]["avg_ts"] and rows[1]["avg_ts"] == doc[1]["avg_ts"]
    assert [r["noisy"] for r in rows] == [False, True]
    assert rows[1]["samples_ts"] == NOISY and rows[1]["samples_ns"] == doc[1]["samples_ns"]
    assert rows[0]["cpu_info"] == "AMD Ryzen 7 7800X3D 8-Core Processor" and rows[0]["build_commit"] == "8cf427ff"
    assert rows[0]["model_filename"] == "Qwen2.5-7B-Instruct-Q4_K_M.gguf"
    assert rows[0]["model_id"] == "file:Qwen2.5-7B-Instruct-Q4_K_M.gguf"
    assert rows[0]["file_type"] == "Q4_K_M"
    assert rows[0]["machine_id"].startswith("import-")
    assert rows[0]["n_gpu_layers"] == 99 and rows[0]["use_mmap"] == 1 and rows[0]["flash_attn"] == 0
    assert rows[0]["repetitions"] == 5
    assert rows[0]["test_time"] == "2025-04-24T11:58:50.000000+00:00"
    # figures llama-bench does not measure stay null, never 0
    for key in ("peak_rss_bytes", "j_per_token", "ttft_ms", "est_memory_bytes"):
        assert rows[0][key] is None, key

    machine = store.get("machines", rows[0]["machine_id"])
    assert machine["gpu_info"] == "NVIDIA GeForce RTX 4080" and machine["backends"] == "CUDA"
    assert machine["hostname"] is None and machine["ram_bytes"] is None
    run = store.runs(kind="llama-bench-import")[0]
    assert run["status"] == "ok" and run["label"] == "imported from bench.json"
    model = report.model_table(store, rows[0]["machine_id"])[0]
    assert (model["pp_ts"], model["tg_ts"], model["tg_noisy"]) == (doc[0]["avg_ts"], doc[1]["avg_ts"], True)
    assert model["imported"] is True and model["peak_rss_bytes"] is None

    with pytest.raises(LabError, match="already imported"):
        report.import_llama_bench(store, path)

    # the bench table: llama-bench's "size" is the weights' bytes, not the file's, and is named so
    from lab.cli.bench import _RowPrinter

    capsys.readouterr()
    _RowPrinter("table").add(store.results(order="test_time")[0])
    header, _, line = capsys.readouterr().out.splitlines()
    assert " weights |" in header and " size " not in header and "| 4.36 GiB |" in line


def test_import_llama_bench_jsonl_test_names(store: Store, tmp_path: Path) -> None:
    lines = [_entry(512, 128, STEADY, time="2025-04-24T12:00:00Z"),
             _entry(512, 0, STEADY, n_depth=4096, time="2025-04-24T12:00:01Z"),
             _entry(0, 128, STEADY, n_depth=4096, time="2025-04-24T12:00:02Z")]
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in lines) + "\n")

    assert report.import_llama_bench(store, path) == 3
    tests = [r["test"] for r in store.results(order="test_time")]
    assert tests == ["pp512+tg128", "pp512 @ d4096", "tg128 @ d4096"]


def test_import_links_a_file_already_known_by_sha256(store: Store, tmp_path: Path) -> None:
    entry = _entry(0, 128, STEADY, time="2025-04-24T12:00:00Z")
    known = "d" * 64
    store.upsert_model({"id": known, "model_filename": "Qwen2.5-7B-Instruct-Q4_K_M.gguf", "file_type": "Q4_K_M",
                        "model_size": entry["model_size"], "model_n_params": entry["model_n_params"],
                        "file_size": 4683073184})
    add_eval(store, known, accuracy=0.9, format_valid=1.0)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([entry]))

    report.import_llama_bench(store, path)

    assert [r["model_id"] for r in store.results()] == [known]
    assert store.get("models", "file:Qwen2.5-7B-Instruct-Q4_K_M.gguf") is None
    row = report.model_table(store)[0]
    assert (row["tg_ts"], row["accuracy"], row["file_size"]) == (entry["avg_ts"], 0.9, 4683073184)


@pytest.mark.parametrize("content,message", [
    ("this is not json\n", "bad.json line 1 is not llama-bench output; expected llama-bench -o json, jsonl, csv or sql"),
    ('{"build_commit": \n', "bad.json line 1 is not valid JSON"),
    ('[{"build_commit": "x",\n "cpu_info": }]', "bad.json line 2 is not valid JSON"),
    ("[]", "holds no llama-bench results"),
    ('[{"build_commit": "x", "cpu_info": "c", "model_filename": "m.gguf", "n_prompt": 512, "n_gen": 0}]',
     "bad.json entry 1 lacks the llama-bench keys avg_ns, avg_ts"),
    ('{"build_commit": "x"}\nnot json\n', "bad.json line 2 is not valid JSON"),
    ('[1]', "bad.json entry 1 is not a llama-bench result object"),
])
def test_import_errors_name_the_line_or_entry(store: Store, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LabError, match=message):
        report.import_llama_bench(store, path)
    assert store.results() == []


# llama-bench's test::get_fields() of a recent build, in its order, plus "kv_unified", a column
# this reader does not know (newer builds keep adding some): it must be ignored, not refused.
LLAMA_BENCH_FIELDS = [
    "build_commit", "build_number", "cpu_info", "gpu_info", "backends", "model_filename", "model_type",
    "model_size", "model_n_params", "n_batch", "n_ubatch", "n_threads", "cpu_mask", "cpu_strict", "poll",
    "type_k", "type_v", "n_gpu_layers", "n_cpu_moe", "split_mode", "main_gpu", "no_kv_offload", "flash_attn",
    "devices", "tensor_split", "tensor_buft_overrides", "use_mmap", "embeddings", "no_op_offload", "no_host",
    "kv_unified", "n_prompt", "n_gen", "n_depth", "test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts",
]
_INT = {"build_number", "model_size", "model_n_params", "n_batch", "n_ubatch", "n_threads", "poll", "n_gpu_layers",
        "n_cpu_moe", "main_gpu", "no_op_offload", "flash_attn", "n_prompt", "n_gen", "n_depth", "avg_ns", "stddev_ns"}
_BOOL = {"cpu_strict", "no_kv_offload", "use_mmap", "embeddings", "no_host", "kv_unified"}
_SQL_TYPES = {**{k: "INTEGER" for k in _INT | _BOOL}, "avg_ts": "REAL", "stddev_ts": "REAL"}


def _values(entry: dict[str, Any]) -> list[str]:
    """One test's values as llama-bench's get_values() writes them: std::to_string of numbers
    (6 decimals for doubles), 0/1 for booleans, flash_attn as -1/0/1."""
    e = dict(entry, flash_attn=-1, devices="auto", n_cpu_moe=0, no_host=False, kv_unified=False,
             tensor_buft_overrides="none", no_op_offload=0, test_time=entry["test_time"].replace(".000000", ""))
    out = []
    for key in LLAMA_BENCH_FIELDS:
        value = e[key]
        if isinstance(value, bool):
            out.append(str(int(value)))
        elif isinstance(value, float):
            out.append(f"{value:.6f}")
        else:
            out.append(str(value))
    return out


def llama_bench_csv(entries: list[dict[str, Any]]) -> str:
    """``llama-bench -o csv``: the field names joined by commas, then each test's values, every
    one in double quotes (a quote doubled)."""
    lines = [",".join(LLAMA_BENCH_FIELDS)]
    for e in entries:
        lines.append(",".join('"' + v.replace('"', '""') + '"' for v in _values(e)))
    return "\n".join(lines) + "\n"


def llama_bench_sql(entries: list[dict[str, Any]]) -> str:
    """``llama-bench -o sql``: CREATE TABLE IF NOT EXISTS llama_bench with SQLite types, a blank
    line, then one INSERT per test with every value in single quotes."""
    lines = ["CREATE TABLE IF NOT EXISTS llama_bench ("]
    for i, key in enumerate(LLAMA_BENCH_FIELDS):
        lines.append(f"  {key} {_SQL_TYPES.get(key, 'TEXT')}{',' if i < len(LLAMA_BENCH_FIELDS) - 1 else ''}")
    lines += [");", ""]
    for e in entries:
        values = ", ".join(f"'{v}'" for v in _values(e))
        lines.append(f"INSERT INTO llama_bench ({', '.join(LLAMA_BENCH_FIELDS)}) VALUES ({values});")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("fmt", ["csv", "sql"])
def test_import_llama_bench_csv_and_sql(store: Store, tmp_path: Path, fmt: str) -> None:
    entries = [_entry(512, 0, STEADY, time="2025-04-24T11:58:50Z"), _entry(0, 128, NOISY, time="2025-04-24T11:58:51Z"),
               _entry(0, 128, STEADY, n_depth=512, time="2025-04-24T11:58:52Z")]
    entries[0]["cpu_info"] = 'AMD "Zen 4" Ryzen 7, 8 cores'  # a comma and quotes inside a quoted CSV cell
    path = tmp_path / f"bench.{fmt}"
    path.write_text(llama_bench_csv(entries) if fmt == "csv" else llama_bench_sql(entries))

    assert report.read_llama_bench(path)[0] == fmt
    assert report.import_llama_bench(store, path) == 3

    rows = store.results(order="test_time")
    assert [r["test"] for r in rows] == ["pp512", "tg128", "tg128 @ d512"]
    for row, entry in zip(rows, entries):
        assert row["avg_ts"] == pytest.approx(entry["avg_ts"], abs=1e-6)  # written with 6 decimals
        assert row["avg_ns"] == entry["avg_ns"] and row["model_size"] == entry["model_size"]
        assert (row["n_threads"], row["n_gpu_layers"], row["n_batch"], row["n_ubatch"]) == (8, 99, 2048, 512)
        assert (row["type_k"], row["type_v"], row["flash_attn"], row["use_mmap"]) == ("f16", "f16", -1, 1)
        # -o csv and -o sql hold no repetitions: their count and CV are unknown, noisy from the stddev
        assert row["samples_ts"] is None and row["repetitions"] is None
    assert [r["noisy"] for r in rows] == [0, 1, 0]
    assert rows[0]["test_time"] == "2025-04-24T11:58:50.000000+00:00"
    assert rows[0]["model_id"] == "file:Qwen2.5-7B-Instruct-Q4_K_M.gguf" and rows[0]["file_type"] == "Q4_K_M"
    machines = {r["machine_id"] for r in rows}
    assert len(machines) == 2 and all(m.startswith("import-") for m in machines)  # two cpu_info texts
    assert store.get("machines", rows[0]["machine_id"])["cpu_info"] == 'AMD "Zen 4" Ryzen 7, 8 cores'
    config = report.model_table(store, rows[1]["machine_id"])[0]["config"]
    assert config == "t=8 ngl=99 b=2048 ub=512 fa=auto kv=f16/f16"


def test_import_llama_bench_sql_cannot_touch_other_files(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "evil.sql"
    victim = tmp_path / "victim.db"
    path.write_text(llama_bench_sql([_entry(512, 0, STEADY, time="2025-04-24T11:58:50Z")])
                    + f"ATTACH DATABASE '{victim}' AS v;\nCREATE TABLE v.t (x);\n")
    with pytest.raises(LabError, match="evil.sql is not llama-bench SQL output that can be read"):
        report.import_llama_bench(store, path)
    assert not victim.exists() and store.results() == []


def test_import_llama_bench_csv_errors_name_the_line(store: Store, tmp_path: Path) -> None:
    entries = [_entry(512, 0, STEADY, time="2025-04-24T11:58:50Z"), _entry(0, 128, STEADY, time="2025-04-24T11:58:51Z")]
    text = llama_bench_csv(entries).replace('"128"', '"many"')
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(LabError, match="bad.csv line 3 has n_gen = 'many', not a token count"):
        report.import_llama_bench(store, path)


def test_quant_from_model_type() -> None:
    assert report.quant_from_model_type("qwen2 7B Q4_K - Medium") == "Q4_K_M"
    assert report.quant_from_model_type("llama 7B mostly Q4_0") == "Q4_0"
    assert report.quant_from_model_type("llama 1B Q2_K - Medium") == "Q2_K"
    assert report.quant_from_model_type("llama 1B IQ4_XS - 4.25 bpw") == "IQ4_XS"
    assert report.quant_from_model_type("llama 1B all F32") == "F32"
    assert report.quant_from_model_type(None) is None


# --- the command line -------------------------------------------------------------------------


def test_cli_compare_and_recommend_exit_codes(store: Store, ladder: dict[str, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    db = str(store.path)
    a = add_result(store, ladder["Q4_K_M"], "pp512", avg_ts=200.0, peak_rss_bytes=1000)
    b = add_result(store, ladder["Q8_0"], "pp512", avg_ts=150.0, peak_rss_bytes=None)

    code, out, err = run_cli(["--db", db, "compare", a[-10:], b[-10:]], capsys)
    assert code == 0, err
    assert "-25.0%" in out and "base" in out and "n/a" in out

    code, out, _ = run_cli(["--db", db, "compare", a[-10:], b[-10:], "-o", "json"], capsys)
    assert [r["avg_ts_diff_pct"] for r in json.loads(out)] == [0.0, -25.0]

    code, out, err = run_cli(["--db", db, "recommend", "--machine", MACHINE, "--min-tg", "20",
                              "--max-memory", "1500B", "--min-accuracy", "0.8"], capsys)
    assert code == 0, err
    assert out.startswith("tiny-Q4_K_M.gguf (Q4_K_M, file 800 B) is the smallest of 2 candidates")
    assert ("  llama-server -m /models/tiny-Q4_K_M.gguf -t 2 -ngl 0 -b 2048 -ub 512 -fa auto -ctk f16 -ctv f16 "
            "-c 512\n") in out  # the largest context of the tests judged (pp512)
    assert "PICK" in out and "unverified" in out and "FAIL 15 (-25.0%)" in out

    code, out, _ = run_cli(["--db", db, "recommend", "--machine", MACHINE, "--min-tg", "20", "-o", "json"], capsys)
    assert code == 0 and json.loads(out)["pick"]["file_type"] == "Q2_K"

    code, out, err = run_cli(["--db", db, "recommend", "--machine", MACHINE, "--min-tg", "1000"], capsys)
    assert code == 1
    assert err.strip() == "error: No model meets every limit: of 6 candidates, 6 fail a limit."
    assert "FAIL" in out

    code, _, err = run_cli(["--db", db, "compare", "ffffffffff"], capsys)
    assert code == 1 and err.strip() == "error: No result or run has the id 'ffffffffff'."

    code, _, err = run_cli(["--db", db, "recommend", "--max-memory", "lots"], capsys)
    assert code == 2 and "not a memory size" in err


def test_cli_import_llama_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cli.db")
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([_entry(512, 0, STEADY, time="2025-04-24T11:58:50Z")]))
    code, out, err = run_cli(["--db", db, "import", "llama-bench", str(path)], capsys)
    assert code == 0, err
    assert out.startswith("imported 1 result from")

    code, _, err = run_cli(["--db", db, "import", "llama-bench", str(path)], capsys)
    assert code == 1 and "was already imported" in err and "Traceback" not in err

    code, _, err = run_cli(["--db", db, "import", "llama-bench", str(tmp_path / "none.json")], capsys)
    assert code == 1 and err.strip() == f"error: No such file: {tmp_path / 'none.json'}."


def test_cli_module_imports_only_click() -> None:
    code = ("import sys, lab.cli.report; "
            "heavy = [m for m in ('lab.report', 'sqlite_utils', 'lab.store', 'llama_cpp', 'textual') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_commands_are_registered_in_the_rightsizer_group() -> None:
    out = subprocess.run([sys.executable, "-m", "lab", "--help"], capture_output=True, text=True, timeout=60,
                         env={**os.environ})
    assert out.returncode == 0, out.stderr
    for command in ("compare", "recommend", "import"):
        assert command in out.stdout
