"""The app shell: screens by key, the palette reaches every action, help, quitting, the CLI."""

from __future__ import annotations

import subprocess
import sys
import time

from click.testing import CliRunner

from conftest import screen_text, wait_for
from lab.tui.app import COMMANDS, RightsizerApp


async def test_number_keys_switch_screens_and_the_footer_shows_bindings(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        for key, name, marker in (("2", "RunScreen", "[2 Run]"), ("3", "ResultsScreen", "[3 Results]"),
                                  ("4", "MachineScreen", "[4 Machine]"), ("1", "LibraryScreen", "[1 Library]")):
            await pilot.press(key)
            assert type(app.screen).__name__ == name and marker in screen_text(app)
        footer = screen_text(app).splitlines()[-1]
        assert "b Benchmark" in footer and "? Help" in footer


async def test_a_screen_shown_again_takes_a_theme_changed_while_it_was_hidden(make_app) -> None:
    from textual.color import Color

    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("2")
        dark = app.screen.query_one("#run-results").styles.background
        gauge_dark = app.screen.query_one("#g-test").render_line(0)
        await pilot.press("1")
        app.theme = "textual-light"
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        light = app.screen.query_one("#run-results").styles.background
        assert light != dark and app.screen.styles.background == Color.parse(app.current_theme.background)
        # the dashboard's gauges draw their own strips with cached styles: those follow too
        gauge = app.screen.query_one("#g-test")
        gauge_light = gauge.render_line(0)
        assert gauge_light.text == gauge_dark.text and gauge_light != gauge_dark
        assert {seg.style.bgcolor.triplet.hex for seg in gauge_light if seg.style and seg.style.bgcolor} == {
            gauge.background_colors[1].hex.lower()}
        # shown again with nothing changed, the screen is not restyled (that costs the UI thread
        # ~70 ms per switch, more during a benchmark); the restyle above came from the theme
        run = app.screen
        restyles: list[int] = []
        original = run.update_node_styles
        run.update_node_styles = lambda *a, **k: (restyles.append(1), original(*a, **k))[1]  # type: ignore[method-assign]
        await pilot.press("1", "2")
        await pilot.pause()
        assert app.screen is run and restyles == []
        await pilot.press("1")
        app.theme = "textual-dark"
        await pilot.press("2")
        await pilot.pause()
        assert restyles and run.query_one("#run-results").styles.background == dark


async def test_every_screen_is_built_and_laid_out_before_its_first_visit(make_app) -> None:
    # a first visit that composed and laid out its screen during a benchmark took 0.56 to 0.85 s
    # in tmux; built ahead, no widget is placed for the first time during the key press
    from textual._compositor import Compositor

    app = make_app()
    placed: list[str] = []
    original = Compositor.reflow

    def spy(compositor, parent, size):  # type: ignore[no-untyped-def]
        hidden, shown, resized = original(compositor, parent, size)
        placed.extend(f"{type(parent).__name__}: {widget!r}" for widget in shown)
        return hidden, shown, resized

    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: app.screens_built)
        await pilot.pause(0.3)  # the hidden screens' data has arrived
        Compositor.reflow = spy  # type: ignore[method-assign]
        try:
            for key, name, marker in (("3", "ResultsScreen", "sorted by time"), ("4", "MachineScreen", "machine id"),
                                      ("5", "HubScreen", "SmolLM2"), ("2", "RunScreen", "Start ^R")):
                placed.clear()
                await pilot.press(key)
                await pilot.pause()
                assert type(app.screen).__name__ == name and marker in screen_text(app)
                assert placed == [], f"placed during the first visit: {placed[:5]}"
        finally:
            Compositor.reflow = original  # type: ignore[method-assign]


async def test_a_screen_built_hidden_takes_a_theme_changed_before_its_first_visit(make_app) -> None:
    from textual.color import Color

    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: app.screens_built)
        app.theme = "textual-light"
        await pilot.pause()
        await pilot.press("3")
        await pilot.pause()
        assert app.screen.styles.background == Color.parse(app.current_theme.background)
        assert "sorted by time" in screen_text(app)


async def test_a_screen_visited_again_is_not_restyled_from_a_reparsed_stylesheet(make_app) -> None:
    # Textual re-parses the whole stylesheet when a screen's style count lags the app's; a mode
    # screen mounted after switch_mode looked at it would pay that (~130 ms, 300 ms during a
    # benchmark) on its second visit
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        for key in "2345":
            await pilot.press(key)
            await pilot.pause()
        reparses: list[int] = []
        original = app.refresh_css
        app.refresh_css = lambda *a, **k: (reparses.append(1), original(*a, **k))[1]  # type: ignore[method-assign]
        for key in "123451":
            await pilot.press(key)
            await pilot.pause()
        assert reparses == []


async def test_the_palette_offers_every_action_and_runs_it(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert all(title in titles for title, *_ in COMMANDS)
        # every screen action the palette names exists on its screen
        from lab.tui.app import screen_class

        for title, _, mode, action in COMMANDS:
            if mode and action:
                screen_cls = screen_class(mode)
                assert hasattr(screen_cls, "action_" + action.split("(")[0]), title
        await pilot.press("ctrl+p")
        await pilot.press(*"compare sel")
        await wait_for(pilot, lambda: "Compare selected" in screen_text(app))
        await pilot.press("escape")
        await pilot.press("ctrl+p", *"Chart results")
        await wait_for(pilot, lambda: "Chart results" in screen_text(app))
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ChartScreen")


async def test_help_lists_every_screen_and_key(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 60)) as pilot:
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        text = screen_text(app)
        for word in ("Everywhere", "Library", "Benchmark", "command palette", "n/a"):
            assert word in text
        await pilot.press("escape")
        assert type(app.screen).__name__ == "LibraryScreen"


async def test_quit_during_a_run_asks_and_cancels(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        app.live.begin()  # a run in progress, as far as the app can tell
        app.live.status = "running"
        import threading

        app.bench_cancel = threading.Event()
        await pilot.press("q")
        assert type(app.screen).__name__ == "ConfirmScreen"
        await pilot.press("n")
        assert not app.bench_cancel.is_set() and app.is_running
        await pilot.press("q", "y")
        assert app.bench_cancel.is_set()


def test_cli_opens_the_app_lazily() -> None:
    from lab.cli import cli

    assert "tui" in cli.commands
    result = CliRunner().invoke(cli, ["tui", "--help"])
    assert result.exit_code == 0 and "--db" in result.output
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "lab", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "tui" in out.stdout
    assert time.perf_counter() - start < 2.0  # generous for a loaded CI box; measured ~0.12 s


def test_launch_refuses_an_unopenable_database_in_one_sentence(tmp_path) -> None:
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not sqlite" * 100)
    out = subprocess.run([sys.executable, "-m", "lab", "tui", "--db", str(bad)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0 and out.stderr.startswith("error: Cannot open database")
    assert "Traceback" not in out.stderr


def test_app_factory_takes_injected_machine_and_models(seeded_db) -> None:
    from conftest import machine_context

    app = RightsizerApp(db_path=seeded_db, machine=machine_context(), models=[], cursor_blink=False)
    assert app.db_path == seeded_db and app.cursor_blink is False


def test_the_first_paint_waits_only_for_the_first_screen(tmp_path) -> None:
    # what `rightsizer` imports before the app draws: not sqlite-utils (numpy with it, ~0.3 s),
    # not the other screens (~0.1 s); those come with the workers after the first paint
    code = (
        "import sys\n"
        "from lab.cli.tui import launch\n"
        "from lab.store import check_database\n"
        f"check_database({str(tmp_path / 'lab.db')!r})\n"
        "from lab.tui.app import RightsizerApp\n"
        "print(sorted(m for m in ('sqlite_utils', 'numpy', 'lab.tui.screens.run', 'lab.tui.screens.results',"
        " 'lab.tui.screens.machine', 'lab.tui.screens.hub', 'lab.tui.screens.library') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['lab.tui.screens.library']"
