"""Results: paged, sorted and filtered in SQLite; select, compare, chart, open a run."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Input

from conftest import screen_text, wait_for

from lab.ids import short_id


def _results(app) -> DataTable:
    return app.screen.query_one("#results", DataTable)


def _column(table: DataTable, index: int) -> list[str]:
    return [str(table.get_row_at(i)[index]) for i in range(table.row_count)]


async def open_results(app, pilot) -> None:
    await pilot.press("3")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "ResultsScreen" and _results(app).row_count == 12)


async def test_results_sort_and_filter(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(140, 36)) as pilot:
        await open_results(app, pilot)
        times = _column(_results(app), 1)
        assert times == sorted(times, reverse=True)  # newest first
        # the run column shows each run's short id, as the CLI prints it (the random tail)
        store = app.open_store()
        try:
            runs = {short_id(r["run_id"]) for r in store.query("select distinct run_id from results")}
        finally:
            store.close()
        assert {cell.split()[0] for cell in _column(_results(app), 13)} == runs and len(runs) > 1
        assert "rows 1–12 of 12" in screen_text(app)
        # s cycles the sort column: time -> machine -> model file -> quant -> test -> t/s
        for _ in range(5):
            await pilot.press("s")
        await wait_for(pilot, lambda: "sorted by t/s ↓" in screen_text(app))
        speeds = [float(v.split(" ± ")[0]) for v in _column(_results(app), 6)]
        assert speeds == sorted(speeds, reverse=True) and speeds[0] == 9010.0
        await pilot.press("S")
        await wait_for(pilot, lambda: "sorted by t/s ↑" in screen_text(app))
        assert float(_column(_results(app), 6)[0].split(" ± ")[0]) == 121.4
        # filter: a bare word matches the model file, keys narrow further
        await pilot.press("slash")
        assert app.screen.query_one("#filter", Input).has_focus
        await pilot.press(*"smol quant:Q8_0 machine:big-box", "enter")
        await wait_for(pilot, lambda: _results(app).row_count == 2)
        assert set(_column(_results(app), 2)) == {"big-box"} and set(_column(_results(app), 4)) == {"Q8_0"}
        await pilot.press("slash", *"colour:red", "enter")
        await wait_for(pilot, lambda: any("Unknown filter 'colour'" in n.message for n in app._notifications))
        assert _results(app).row_count == 2  # a bad filter changes nothing


async def test_select_two_and_compare_with_percent_difference(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await open_results(app, pilot)
        await pilot.press("slash", *"test:tg128 machine:lab-box", "enter")
        await wait_for(pilot, lambda: _results(app).row_count == 4)
        # rows (newest first): Q8_0 121.4, Q4_1 171.7, tiny-4L, tiny-2L
        await pilot.press("space", "space")
        assert _column(_results(app), 0)[:2] == ["●", "●"] and "2 selected" in screen_text(app)
        await pilot.press("c")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CompareScreen")
        await wait_for(pilot, lambda: app.screen.query_one("#compare", DataTable).row_count > 5)
        text = screen_text(app)
        assert "base: SmolLM2-135M-Instruct.Q8_0" in text
        assert "171.7 (+41.4% better)" in text  # (171.7 - 121.4) / 121.4
        await pilot.press("escape")
        assert type(app.screen).__name__ == "ResultsScreen"
        await pilot.press("x")
        assert "selected" not in screen_text(app)


async def test_chart_draws_bars_and_scatter(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await open_results(app, pilot)
        await pilot.press("g")
        await wait_for(pilot, lambda: "12 results" in screen_text(app))
        text = screen_text(app)
        assert "pp512 (t/s" in text and "tg128 (t/s" in text and "█" in text
        assert "SmolLM2-135M-Instruct.Q4_1.gguf" in text and "287.3" in text  # mean of 171.7 and 402.9
        await pilot.press("v")
        text = screen_text(app)
        assert "tg t/s against file size" in text and "A SmolLM2" in text


async def test_open_run_shows_config_machine_and_sample_curves(make_app, seeded_db) -> None:
    from lab.store import Store
    from lab.tui.format import human_bytes

    store = Store(seeded_db)
    samples = store.samples("run0005-0000-4000-8000-00000run0005")
    store.close()
    assert len(samples) > 10
    app = make_app()
    async with app.run_test(size=(140, 44)) as pilot:
        await open_results(app, pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen")
        await wait_for(pilot, lambda: "status" in screen_text(app))
        text = screen_text(app)
        assert "run0005-0000-4000-8000-00000run0005" in text and "big-box" in text
        assert f"RSS: last {human_bytes(samples[-1]['rss_bytes'])}" in text and f"{len(samples)} samples" in text
        assert "GPU util: n/a" in text  # no GPU figures in these samples: n/a, not 0
        await pilot.press("escape")
        assert type(app.screen).__name__ == "ResultsScreen"


async def test_results_stay_instant_at_100k_rows(lab_home: Path) -> None:
    """100k stored results: the table holds one page; sorting and paging are done in SQLite."""
    import time

    from conftest import machine_context, FixedProbe
    from lab.store import Store
    from lab.tui.app import RightsizerApp

    db = lab_home / "big.db"
    store = Store(db)
    store.db["machines"].insert({"id": "m1", "hostname": "lab-box"})
    store.db["results"].insert_all(
        ({"id": f"r{i:06d}", "run_id": f"run{i // 10:05d}", "machine_id": "m1", "model_filename": f"model-{i % 50}.gguf",
          "test": ("pp512", "tg128")[i % 2], "avg_ts": 100.0 + (i * 7919) % 1000, "stddev_ts": 1.0,
          "test_time": f"2025-06-01T00:00:{i // 1000:02d}.{i % 1000:06d}+00:00"} for i in range(100_000)),
        batch_size=10_000, alter=True)
    store.close()
    app = RightsizerApp(db_path=db, machine=machine_context(), probe=FixedProbe(), memory_available=1 << 33,
                        poll_interval=0, cursor_blink=False, models=[])
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ResultsScreen" and _results(app).row_count == 200,
                       timeout=30)
        assert "of 100,000" in screen_text(app)
        for keys, expect in ((["s"] * 5, "sorted by t/s ↓"), (["n"], "rows 201–400"), (["S"], "sorted by t/s ↑")):
            start = time.perf_counter()
            await pilot.press(*keys)
            await wait_for(pilot, lambda: expect in screen_text(app) and _results(app).row_count == 200, timeout=10)
            assert time.perf_counter() - start < 3.0  # one page query (~0.1 s here), never 100k rows in the table
