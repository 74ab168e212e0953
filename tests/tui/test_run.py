"""Run: a real benchmark of a tiny GGUF started from the Run screen, live, stored, cancellable;
engine failures and bad input are shown in the app, which keeps running."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from textual import events
from textual.widgets import Checkbox, DataTable, Input

from conftest import screen_text, wait_for
from lab.store import Store


def fill(app, **fields: str) -> None:
    screen = app.screen
    for key, value in fields.items():
        if key == "chat":
            screen.query_one("#f-chat", Checkbox).value = value == "1"
        else:
            screen.query_one(f"#f-{key}", Input).value = value


async def answer_time(app, key: str, answered) -> float:
    """Seconds from a key arriving to the first frame drawn for a screen ``answered(screen)``
    accepts. The frame is rendered as for a terminal; the headless driver only skips writing
    it. (Pilot.press waits for the whole process to go idle, which a benchmark's sampler threads
    never let happen: not a latency.)"""
    frames: list[float] = []
    draw = app._display

    def spy(screen, renderable) -> None:  # type: ignore[no-untyped-def]
        draw(screen, renderable)
        if renderable is not None and answered(screen):
            frames.append(time.perf_counter())

    app._display = spy
    try:
        start = time.perf_counter()
        app.post_message(events.Key(key, key))
        while not frames and time.perf_counter() - start < 5:
            await asyncio.sleep(0.002)
    finally:
        del app._display
    return (frames[0] if frames else time.perf_counter()) - start


async def open_run_screen(app, pilot) -> None:
    await pilot.press("2")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "RunScreen")
    await wait_for(pilot, lambda: app.screen.query_one("#f-threads", Input).value == "2")


async def test_a_real_run_from_the_run_screen_shows_and_stores_its_results(make_app, tiny_gguf: Path, seeded_db: Path) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await open_run_screen(app, pilot)
        fill(app, models=str(tiny_gguf), n_prompt="16", n_gen="8", repetitions="2", chat="0")
        await pilot.press("ctrl+r")
        assert app.live.active
        await wait_for(pilot, lambda: not app.live.active, timeout=90)
        assert app.live.status == "ok", app.live.error
        table = app.screen.query_one("#run-results", DataTable)
        assert [str(table.get_row_at(i)[1]) for i in range(table.row_count)] == ["pp16", "tg8"]
        text = screen_text(app)
        assert "Done: 2 results stored." in text and "last run: ok" in text
        assert "t/s" in text and "RSS" in text
        # the Results screen shows the new rows at the top (newest first) ...
        await pilot.press("3")
        await wait_for(pilot, lambda: app.screen.query_one("#results", DataTable).row_count == 14)
        results = app.screen.query_one("#results", DataTable)
        assert {str(results.get_row_at(i)[5]) for i in range(2)} == {"pp16", "tg8"}
    # ... and SQLite has them, with the run recorded as ok
    store = Store(seeded_db)
    (run,) = store.runs(model=tiny_gguf.name)
    assert run["status"] == "ok" and run["machine_id"]
    rows = store.results(run=run["id"], order="test_time")
    assert [r["test"] for r in rows] == ["pp16", "tg8"] and all(r["avg_ts"] > 0 for r in rows)
    store.close()


async def test_cancel_keeps_finished_tests_and_keys_answer_during_tg(make_app, tiny_gguf: Path, seeded_db: Path) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: app.screens_built)  # as a user reading the first screen
        await open_run_screen(app, pilot)
        fill(app, models=str(tiny_gguf), n_prompt="16", n_gen="1024", repetitions="200", chat="0")  # cancelled below
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.live.test_name == "tg1024" and app.live.reps_done >= 1, timeout=90)
        # while tg runs, a key is answered (the other screen drawn) within 100 ms, first visits too
        latencies = []
        for key, name in [("3", "ResultsScreen"), ("2", "RunScreen"), ("4", "MachineScreen"), ("2", "RunScreen"),
                          ("5", "HubScreen"), ("1", "LibraryScreen"), ("2", "RunScreen")] * 2:
            latencies.append(await answer_time(app, key, lambda screen, n=name: type(screen).__name__ == n))
            await pilot.pause(0.2)
        assert type(app.screen).__name__ == "RunScreen" and app.live.active, "the run ended before the probe did"
        print("key answer times during tg (ms):", [round(x * 1000) for x in latencies])
        assert statistics.median(latencies) < 0.1 and max(latencies) < 0.5, latencies
        await pilot.press("c")
        await wait_for(pilot, lambda: not app.live.active, timeout=30)
        assert app.live.status == "cancelled"
        assert "Cancelled: 1 finished test kept." in screen_text(app)
    store = Store(seeded_db)
    (run,) = store.runs(model=tiny_gguf.name)
    assert run["status"] == "cancelled"
    assert [r["test"] for r in store.results(run=run["id"])] == ["pp16"]
    store.close()


async def test_an_engine_failure_is_shown_and_the_app_keeps_running(make_app, tiny_gguf: Path, tmp_path: Path) -> None:
    from lab.gguf_info import read_file_header

    broken = tmp_path / "broken.gguf"
    data = tiny_gguf.read_bytes()
    broken.write_bytes(data[: read_file_header(tiny_gguf).header_size + 64])  # header fine, weights cut
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await open_run_screen(app, pilot)
        fill(app, models=str(broken), n_prompt="16", n_gen="8", repetitions="1", chat="0")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.live.active, timeout=90)
        assert app.live.status == "failed"
        text = screen_text(app)
        assert "Error:" in text and "broken.gguf" in text and "last run: FAILED" in text
        await pilot.press("3")  # still alive and answering
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ResultsScreen")


async def test_bad_input_is_one_sentence_and_starts_nothing(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await open_run_screen(app, pilot)
        fill(app, models="no-such-model", repetitions="1")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.live.active and app.live.status == "failed", timeout=30)
        assert "No model named 'no-such-model'" in screen_text(app)
        fill(app, models="demo", repetitions="0")
        await pilot.press("ctrl+r")
        assert "repetitions values must be at least 1" in screen_text(app)


async def test_the_run_screen_starts_from_the_clis_defaults(make_app) -> None:
    # the same run asked from either face stores the same config (the app adds the chat test)
    from lab.bench import BenchOptions
    from lab.tui import data

    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await open_run_screen(app, pilot)
        options = data.build_options(dict(app.screen.form(), models="demo"))
    cli = BenchOptions(models=["demo"])
    for name in ("n_prompt", "n_gen", "pg", "n_depth", "repetitions", "n_gpu_layers", "n_batch", "n_ubatch"):
        assert getattr(options, name) == getattr(cli, name), name
    assert options.threads == [2] and options.chat is True
