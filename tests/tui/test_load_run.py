"""Run screen, Load mode: a real load on a tiny GGUF, served level by level in the engine child,
watched live, stored, cancellable; its figures on screen are the stored ones; the Results chart
draws the throughput-latency curve from the stored rows; bad input is refused in words."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from textual.widgets import Checkbox, DataTable, Input

from conftest import screen_text, wait_for
from lab.errors import LabError
from lab.store import Store
from lab.tui import data
from lab.tui import format as fmt
from lab.tui.widgets.line import Line
from test_run import fill, open_run_screen


async def open_load_mode(app, pilot) -> None:
    await open_run_screen(app, pilot)
    await pilot.press("ctrl+o")
    await wait_for(pilot, lambda: app.screen.query_one("#f-load", Checkbox).value)
    assert app.screen.has_class("-load")


def _line(app, widget_id: str) -> str:
    """What a live line shows: a Line's text (it draws itself as a strip), else the render."""
    widget = app.screen.query_one(f"#{widget_id}")
    return widget.text if isinstance(widget, Line) else str(widget.render())


async def test_a_real_load_shows_live_levels_and_the_stored_figures(make_app, tiny_gguf: Path, seeded_db: Path) -> None:
    app = make_app()
    seen: list[str] = []  # the live line as it changed during the run
    async with app.run_test(size=(140, 40)) as pilot:
        await open_load_mode(app, pilot)
        fill(app, models=str(tiny_gguf), users="1,2", duration_s="2", max_tokens="8", slo_ttft_ms="60000",
             threads="1")
        await pilot.press("ctrl+r")
        assert app.live.active and app.live.kind == "load" and app.live.n_levels == 2

        def watch() -> bool:
            text = _line(app, "run-speed")
            if text and (not seen or seen[-1] != text):
                seen.append(text)
            return not app.live.active

        await wait_for(pilot, watch, timeout=120)
        assert app.live.status == "ok", app.live.error
        text = screen_text(app)
        assert "Done: 2 levels stored." in text and "last run: ok" in text
        # while levels ran, the live line showed each level's active sequences and queue: every
        # user's request is running or waiting for a slot, save the instant between two of them
        shown_counts = [tuple(map(int, m.groups())) for m in
                        (re.match(r"users (\d+)  active (\d+)  queue (\d+)", s) for s in seen) if m]
        assert {u for u, _, _ in shown_counts} == {1, 2}, seen
        assert all(a + q <= u for u, a, q in shown_counts), seen
        assert any(a + q == u for u, a, q in shown_counts if u == 1), seen
        assert any(a + q == u for u, a, q in shown_counts if u == 2), seen
        table = app.screen.query_one("#run-results", DataTable)
        shown = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        speed, reps = _line(app, "run-speed"), _line(app, "run-reps")
        assert "RSS" in text and "peak" in text  # the memory/CPU monitor ran during the load
        run_id = app.live.results[0]["run_id"]
        await pilot.press("3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ResultsScreen")
        await pilot.press("slash")
        app.screen.query_one("#filter", Input).value = f"run:{run_id[:8]}"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "rows 1–2 of 2" in screen_text(app))
        await pilot.press("g")
        await wait_for(pilot, lambda: "load by users" in screen_text(app), timeout=20)
        chart = screen_text(app)

    store = Store(seeded_db)
    (run,) = store.runs(model=tiny_gguf.name)
    assert run["status"] == "ok" and run["kind"] == "load"
    rows = store.results(run=run["id"], order="test_time")
    assert [r["test"] for r in rows] == ["load u1", "load u2"] and [r["load_users"] for r in rows] == [1, 2]
    for row in rows:
        assert row["load_completed"] > 0 and row["load_completed"] + row["load_failed"] == row["load_requests"]
        n = store.query("select count(*) n from load_requests where result_id = ?", [row["id"]])[0]["n"]
        assert n == row["load_requests"]
    # the finished-level table is the stored rows, cell by cell
    assert shown == [[f"{r['load_users']} user{'s' if r['load_users'] > 1 else ''}", str(r["load_requests"]), str(r["load_completed"]),
                      str(r["load_failed"]), fmt.num(r["output_tps"]), fmt.num(r["ttft_p95_ms"], 0),
                      fmt.num(r["itl_p95_ms"]), fmt.num(r["goodput_rps"], 2), fmt.num(r["slo_attainment"]),
                      fmt.human_bytes(r["peak_rss_bytes"]), fmt.human_bytes(r["kv_bytes"])] for r in rows]
    assert all(r["peak_rss_bytes"] and r["kv_bytes"] for r in rows)
    # the live lines end on the last level's final figures, which are the stored ones
    last = rows[-1]
    assert speed == (f"users 2  active 0  queue 0  sent {last['load_requests']}  done {last['load_completed']}  "
                     f"failed {last['load_failed']}")
    assert reps == (f"TTFT p50/p95 {last['ttft_p50_ms']:.0f}/{last['ttft_p95_ms']:.0f} ms  "
                    f"ITL p50/p95 {fmt.num(last['itl_p50_ms'])}/{fmt.num(last['itl_p95_ms'])} ms")
    # the Results chart's curve: output t/s and p95 TTFT against users, with the SLO attainment
    bars, _ = data.chart_bars(store, {"run": run["id"][:8]})
    name = f"{tiny_gguf.name} load by users (TTFT ≤ 60000 ms)"
    labels = [f"u={r['load_users']} SLO {r['slo_attainment']:.0f}%" for r in rows]
    assert [(b.label, b.value, b.n, b.unit) for b in bars[f"{name}: output t/s"]] == [
        (label, r["output_tps"], 1, None) for label, r in zip(labels, rows)]
    assert [(b.label, b.value, b.unit) for b in bars[f"{name}: TTFT p95"]] == [
        (label, r["ttft_p95_ms"], "ms") for label, r in zip(labels, rows)]
    assert f"{name}: TTFT p95 (ms, mean of n results)" in chart and labels[1] in chart
    assert f"{rows[1]['output_tps']:,.1f}  n=1" in chart
    store.close()


async def test_cancel_stops_the_load_and_keeps_the_finished_levels(make_app, tiny_gguf: Path, seeded_db: Path) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await open_load_mode(app, pilot)
        fill(app, models=str(tiny_gguf), users="1,2", duration_s="1", max_tokens="4", threads="1")
        await pilot.press("ctrl+r")
        assert app.live.active
        await wait_for(pilot, lambda: len(app.live.results) == 1 and app.live.test_name == "load u2", timeout=90)
        await pilot.press("c")
        await wait_for(pilot, lambda: not app.live.active, timeout=60)
        assert app.live.status == "cancelled"
        assert "Cancelled: 1 level kept." in screen_text(app)
        assert app.screen.query_one("#run-results", DataTable).row_count == 1
    store = Store(seeded_db)
    (run,) = store.runs(model=tiny_gguf.name)
    assert run["status"] == "cancelled"
    assert [r["test"] for r in store.results(run=run["id"])] == ["load u1"]
    store.close()


async def test_the_load_form_refuses_bad_input_in_words(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await open_load_mode(app, pilot)
        for fields, words in [
            (dict(users="0"), "users values must be at least 1"),
            (dict(users="1,2", rates="0.5"), "Give either users or rate levels, not both"),
            (dict(users="", rates=""), "Give the levels to serve: users (a comma list) or rate"),
            (dict(users="2", duration_s="0"), "secs must be above 0"),
            (dict(users="2", duration_s="1", rates="1..2"), "rate takes a comma list of requests per second"),
        ]:
            fill(app, **{"models": "demo", "rates": "", **fields})
            await pilot.press("ctrl+r")
            assert not app.live.active
            assert words in _line(app, "run-error"), words
        fill(app, users="", rates="", duration_s="1")
        app.screen.query_one("#f-find_max", Checkbox).value = True
        await pilot.press("ctrl+r")
        assert not app.live.active
        assert "find max needs an objective: SLO TTFT, ITL p95 or e2e (ms)" in _line(app, "run-error")
        # the mode switches back, and the bench form is what starts then
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: not app.screen.has_class("-load"))
        assert "load: off" in screen_text(app)


def test_the_load_form_gives_the_clis_defaults_and_options() -> None:
    from lab.load import LoadOptions, Objective

    options = data.build_load_options({"models": "demo", "users": "1,2,4,8", "duration_s": "30", "max_tokens": "128",
                                       "slots": "4", "max_users": "64", "threads": ""})
    cli = LoadOptions(model="demo", users=[1, 2, 4, 8])
    for name in ("users", "rates", "slots", "duration_s", "max_tokens", "objective", "find_max", "max_users",
                 "threads", "n_gpu_layers"):
        assert getattr(options, name) == getattr(cli, name), name
    options = data.build_load_options({"models": "demo", "rates": "0.5, 2", "duration_s": "5", "slo_ttft_ms": "500",
                                       "slo_itl_p95_ms": "80", "find_max": True, "max_users": "16", "threads": "2"})
    assert options.rates == [0.5, 2.0] and options.users == [] and options.threads == 2 and options.find_max
    assert options.objective == Objective(ttft_ms=500.0, itl_p95_ms=80.0) and options.max_users == 16
    with pytest.raises(LabError, match="A load run serves one model"):
        data.build_load_options({"models": "demo,other", "users": "1"})
    with pytest.raises(LabError, match="SLO TTFT must be a number"):
        data.build_load_options({"models": "demo", "users": "1", "slo_ttft_ms": "fast"})


def test_load_curves_average_rows_per_level_and_keep_objectives_apart() -> None:
    base = {"model_filename": "m.gguf", "slo": '{"ttft_ms": 500.0}'}
    rows = [dict(base, load_users=2, output_tps=30.0, ttft_p95_ms=200.0, slo_attainment=100.0),
            dict(base, load_users=1, output_tps=20.0, ttft_p95_ms=100.0, slo_attainment=100.0),
            dict(base, load_users=2, output_tps=40.0, ttft_p95_ms=None, slo_attainment=90.0),
            dict(base, load_rate=0.5, output_tps=5.0, ttft_p95_ms=50.0, slo_attainment=None),
            dict(base, slo='{"e2e_ms": 900.0}', load_users=1, output_tps=21.0, ttft_p95_ms=90.0, slo_attainment=0.0),
            dict(base, test="tg128", avg_ts=50.0)]  # not a load row
    curves = data.load_curves(rows)
    assert [(b.label, b.value, b.n) for b in curves["m.gguf load by users (TTFT ≤ 500 ms): output t/s"]] == [
        ("u=1 SLO 100%", 20.0, 1), ("u=2 SLO 95%", 35.0, 2)]
    assert [(b.label, b.value, b.n) for b in curves["m.gguf load by users (TTFT ≤ 500 ms): TTFT p95"]] == [
        ("u=1 SLO 100%", 100.0, 1), ("u=2 SLO 95%", 200.0, 1)]
    assert [(b.label, b.value) for b in curves["m.gguf load by rate (TTFT ≤ 500 ms): output t/s"]] == [
        ("0.5/s SLO n/a", 5.0)]
    assert [(b.label, b.value) for b in curves["m.gguf load by users (e2e ≤ 900 ms): TTFT p95"]] == [
        ("u=1 SLO 0%", 90.0)]
    assert len(curves) == 6
