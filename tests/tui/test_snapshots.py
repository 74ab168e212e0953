"""SVG snapshots of every screen with fixed data (pytest-textual-snapshot; --snapshot-update to
accept a change after looking at it). Cursor blink is off; the machine, clock and rows are fixed."""

from __future__ import annotations

import pytest

from conftest import screen_text, wait_for
from replay import Player, load_recording, options_record, until


async def _library_ready(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.library is not None)
    await wait_for(pilot, lambda: app.screens_built)  # nothing is built in the background any more
    await wait_for(pilot, lambda: app.screen.details and "9000.0" in str(app.screen.query_one("#models").get_row_at(0)))
    # the KLD / acc columns arrive in a second message (the seeded demo model has both)
    await wait_for(pilot, lambda: any(e.evaluation for e in app.screen.entries.values()))
    await pilot.pause()


def _go(key: str, ready):
    async def run_before(pilot) -> None:
        await _library_ready(pilot)
        await pilot.press(key)
        await wait_for(pilot, lambda: ready(pilot.app))
        await pilot.pause()
    return run_before


def _results_ready(app) -> bool:
    return type(app.screen).__name__ == "ResultsScreen" and app.screen.query_one("#results").row_count == 12


def test_library(make_app, snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(130, 34), run_before=_library_ready)


def test_library_80x24(make_app, snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=_library_ready)


def test_run_form(make_app, snap_compare) -> None:
    ready = _go("2", lambda app: type(app.screen).__name__ == "RunScreen"
                and app.screen.query_one("#f-threads").value == "2")
    assert snap_compare(make_app(), terminal_size=(110, 32), run_before=ready)


def test_run_form_load_mode(make_app, snap_compare) -> None:
    go = _go("2", lambda app: type(app.screen).__name__ == "RunScreen"
             and app.screen.query_one("#f-threads").value == "2")

    async def ready(pilot) -> None:
        await go(pilot)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: pilot.app.screen.has_class("-load"))
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(110, 32), run_before=ready)


@pytest.mark.parametrize("size", [(120, 36), (200, 50)], ids=["120x36", "200x50"])
def test_run_live_dashboard(make_app, snap_compare, size, monkeypatch) -> None:
    # The run is started as a user starts it (the form, ctrl+r, the bench worker, plan()); only
    # run_bench is the recorded one: a real run of the tiny model, played back through the same
    # on_event the app gives the bench, up to the third tg128 repetition, 12 s into the run.
    header, events = load_recording()
    clock = [100.0]
    player = Player(until(events, "tg128", rep=2), before=lambda: clock.__setitem__(0, 112.0))
    monkeypatch.setattr("lab.bench.run_bench", player)
    app = make_app(clock=lambda: clock[0])

    async def run_before(pilot) -> None:
        await _go("2", lambda a: type(a.screen).__name__ == "RunScreen"
                  and a.screen.query_one("#f-threads").value == "2")(pilot)
        pilot.app.screen.query_one("#f-models").value = header["model"]  # in the models folder
        await pilot.press("ctrl+r")
        live = pilot.app.live
        # every event out and folded (a drain folds and paints in one go on the UI thread)
        await wait_for(pilot, lambda: player.posted.is_set() and not live.inbox
                       and (live.test_name, live.reps_done) == ("tg128", 3))
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)
    # the form built the options the recording was made with, and planned the same tests
    ((options, plans),) = player.calls
    assert options_record(options) == header["options"]
    assert [p.tests for p in plans] == [next(e["tests"] for e in events if e["event"] == "run_start")]


def test_results(make_app, snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(130, 30), run_before=_go("3", _results_ready))


def test_results_no_color(make_app, snap_compare, monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(make_app(), terminal_size=(100, 24), run_before=_go("3", _results_ready))


def test_compare(make_app, snap_compare) -> None:
    async def run_before(pilot) -> None:
        await _go("3", _results_ready)(pilot)
        await pilot.press("slash", *"test:tg128", "enter")
        await wait_for(pilot, lambda: pilot.app.screen.query_one("#results").row_count == 6)
        await pilot.press("space", "space", "down", "space", "c")
        await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "CompareScreen"
                       and pilot.app.screen.query_one("#compare").row_count > 5)
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(150, 34), run_before=run_before)


def test_chart(make_app, snap_compare) -> None:
    async def run_before(pilot) -> None:
        await _go("3", _results_ready)(pilot)
        await pilot.press("g")
        await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "ChartScreen"
                       and pilot.app.screen.query_one("#chart-bars").groups)
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(110, 30), run_before=run_before)


def test_run_detail(make_app, snap_compare) -> None:
    async def run_before(pilot) -> None:
        await _go("3", _results_ready)(pilot)
        await pilot.press("o")
        await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "RunDetailScreen"
                       and pilot.app.screen.query_one("#detail-results").row_count == 2)
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(140, 44), run_before=run_before)


def _machine_drawn(app) -> bool:
    """A reading taken while the screen is shown has been drawn (the one taken when it was
    built, hidden, only sizes it)."""
    return app.screen.query_one("#g-cpu").fraction is not None


def test_machine(make_app, snap_compare) -> None:
    ready = _go("4", lambda app: type(app.screen).__name__ == "MachineScreen" and _machine_drawn(app)
                and len(app.screen.query(".core")) == 2)
    assert snap_compare(make_app(), terminal_size=(130, 34), run_before=ready)


def test_machine_with_gpu(make_app, snap_compare) -> None:
    ready = _go("4", lambda app: type(app.screen).__name__ == "MachineScreen" and _machine_drawn(app)
                and bool(app.screen.query("#gpu0-temp")) and "°C" in str(app.screen.query_one("#gpu0-temp").render()))
    assert snap_compare(make_app(gpu=True), terminal_size=(130, 40), run_before=ready)


def test_help(make_app, snap_compare) -> None:
    assert snap_compare(make_app(), terminal_size=(100, 40), run_before=_go("question_mark", lambda app: type(app.screen).__name__ == "HelpScreen"))


@pytest.mark.parametrize("size", [(80, 24), (200, 50)], ids=["80x24", "200x50"])
def test_ladder(make_app, snap_compare, size) -> None:
    async def run_before(pilot) -> None:
        app = pilot.app
        await _library_ready(pilot)
        demo = next(k for k, e in app.screen.entries.items() if e.model.source == "demo")
        table = app.screen.query_one("#models")
        table.move_cursor(row=table.get_row_index(demo))
        await pilot.press("L")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "LadderScreen" and app.screen.ladder is not None)
        # the rows are in; the table sizes its columns to them on its next idle and draws them at
        # those widths after that (under load a frame can come first)
        await wait_for(pilot, lambda: "258.35 MiB" in screen_text(app))
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=size, run_before=run_before)


def _hub_ready(app) -> bool:
    return type(app.screen).__name__ == "HubScreen" and app.screen.query_one("#hub-repos").row_count > 0


@pytest.mark.parametrize("size", [(120, 36), (80, 24)], ids=["120x36", "80x24"])
def test_hub_suggested_offline(make_app, snap_compare, size) -> None:
    # The tests run with HF_HUB_OFFLINE=1: the catalog is listed as Suggested, one sentence says
    # why the Hub is out of reach, and nothing here depends on a network.
    assert snap_compare(make_app(), terminal_size=size, run_before=_go("5", _hub_ready))


def test_machines(make_app, snap_compare) -> None:
    async def run_before(pilot) -> None:
        app = pilot.app
        await _library_ready(pilot)
        app.open_machines("m-q8", "tg128")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "MachinesScreen" and app.screen.comparison
                       and app.screen.comparison.model_id == "m-q8")
        await wait_for(pilot, lambda: "330.2 (+172.0% better)" in screen_text(app))
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(120, 36), run_before=run_before)


def test_rightsize_form(make_app, snap_compare) -> None:
    # r on the first model (tiny-llama-2L): the form with this machine's defaults, and the sentence
    # a bad field gets
    async def run_before(pilot) -> None:
        app = pilot.app
        await _go("r", lambda a: type(a.screen).__name__ == "RightsizeFormScreen")(pilot)
        app.screen.query_one("#rs-min_tg").value = "fast"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "not 'fast'" in screen_text(app))
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(100, 28), run_before=run_before)
