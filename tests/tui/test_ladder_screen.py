"""Quality and accuracy in the app: the Library's KLD/acc columns and detail rows, the Results
columns, and the ladder view (L) with one row per quant of the seeded demo ladder."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from conftest import screen_text, wait_for
from lab.tui.screens.ladder import legend
from lab.tui.screens.library import quality_rows


def _models(app) -> DataTable:
    return app.screen.query_one("#models", DataTable)


def _row(table: DataTable, key: str) -> list[str]:
    return [str(c) for c in table.get_row(key)]


def _column(table: DataTable, key: str) -> list[str]:
    index = next(i for i, k in enumerate(table.columns) if k.value == key)
    return [str(table.get_row_at(i)[index]) for i in range(table.row_count)]


def _demo_key(app) -> str:
    return next(k for k, e in app.screen.entries.items() if e.model.source == "demo")


async def _library_with_figures(app, pilot) -> None:
    await wait_for(pilot, lambda: app.library is not None and _models(app).row_count == 6)
    await wait_for(pilot, lambda: app.screen.entries[_demo_key(app)].evaluation is not None)


async def _open_demo_ladder(app, pilot) -> None:
    await _library_with_figures(app, pilot)
    _models(app).move_cursor(row=_models(app).get_row_index(_demo_key(app)))
    await pilot.press("L")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "LadderScreen" and app.screen.ladder is not None)
    await pilot.pause()


async def test_library_shows_newest_kld_and_accuracy(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(200, 50)) as pilot:
        await _library_with_figures(app, pilot)
        table = _models(app)
        titles = [str(c.label) for c in table.ordered_columns]
        kld, acc = titles.index("KLD"), titles.index("acc")
        assert acc == kld + 1
        assert _row(table, _demo_key(app))[kld:acc + 1] == ["0.0874", "55%"]
        for key, entry in app.screen.entries.items():
            if entry.model.source == "models":
                assert _row(table, key)[kld:acc + 1] == ["n/a", "n/a"]  # never measured
        # the detail panel: the demo's figures, against its reference
        table.move_cursor(row=table.get_row_index(_demo_key(app)))
        await pilot.pause()
        rows = dict(quality_rows(app.screen.entries[_demo_key(app)]))
        assert rows == {"KLD vs ref": "0.0874 (p99 0.7412) vs SmolLM2-135M-Instruct.F16.gguf",
                        "PPL ratio": "1.080", "same top": "86.2%", "accuracy": "55% (34–74) (95% CI)",
                        "format valid": "95%", "eval suite": "demo, 20 items, constrained"}
        text = screen_text(app)
        assert "PPL ratio     1.080" in text and "accuracy      55% (34–74) (95% CI)" in text


async def test_ladder_opens_with_every_quant_largest_first(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(200, 50)) as pilot:
        await _open_demo_ladder(app, pilot)
        table = app.screen.query_one("#ladder", DataTable)
        assert table.row_count == 3
        assert _column(table, "quant") == ["F16", "Q8_0", "Q4_1"]
        assert _column(table, "mark") == ["base", "front", "front"]
        assert _column(table, "file_size") == ["258.35 MiB", "138.09 MiB", "93.81 MiB"]
        # speed and memory on this machine (lab-box), not big-box's 2105 / 330 t/s
        assert _column(table, "pp") == ["n/a", "452.3", "n/a"]
        assert _column(table, "tg") == ["n/a", "121.4", "n/a"]
        # the largest peak RSS of the two tests shown (not the whole run's, which spans every test)
        assert _column(table, "rss") == ["n/a", "172 MiB", "n/a"]
        # the newest quality row (m-q8 was measured twice), none for the reference itself
        assert _column(table, "kld") == ["n/a", "0.0021", "0.0874"]
        assert _column(table, "kld_p99") == ["n/a", "0.0195", "0.7412"]
        assert _column(table, "ppl_ratio") == ["n/a", "1.002", "1.080"]
        assert _column(table, "same_top") == ["n/a", "98.1%", "86.2%"]
        assert _column(table, "acc") == ["70% (48–85)", "65% (43–82)", "55% (34–74)"]
        assert _column(table, "valid") == ["100%", "100%", "95%"]
        assert _column(table, "fallback") == ["n/a", "0", "0"]  # the base was not built here
        text = screen_text(app)
        assert "Ladder of SmolLM2-135M-Instruct.F16.gguf: the base and 2 quants built from it" in text
        assert "speed and memory on lab-box at t=2 ngl=0 b=2048 ub=512 fa=auto kv=f16/f16 (pp512 / tg128)" in text
        assert "KLD vs the base (F16)" in text
        assert "accuracy on suite demo, constrained" in text
        await pilot.press("escape")
        assert type(app.screen).__name__ == "LibraryScreen"


async def test_ladder_from_the_palette_command(make_app) -> None:
    from lab.tui.app import COMMANDS

    assert ("library", "ladder") in {(mode, action) for _, _, mode, action in COMMANDS}
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await _library_with_figures(app, pilot)
        _models(app).move_cursor(row=_models(app).get_row_index(_demo_key(app)))
        await app.run_action("ladder", app.screen)
        await wait_for(pilot, lambda: type(app.screen).__name__ == "LadderScreen" and app.screen.ladder is not None)
        assert app.screen.query_one("#ladder", DataTable).row_count == 3


async def test_a_model_without_a_ladder_gets_the_command_to_build_one(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await _library_with_figures(app, pilot)
        assert str(_models(app).get_row_at(0)[0]) == "tiny-llama-2L.gguf"
        await pilot.press("L")
        await wait_for(pilot, lambda: any("no ladder" in n.message for n in app._notifications))
        note = next(n.message for n in app._notifications if "no ladder" in n.message)
        assert note == ("tiny-llama-2L.gguf is in no ladder; build one with: "
                        "rightsizer models ladder tiny-llama-2L.gguf")
        assert type(app.screen).__name__ == "LibraryScreen"


async def test_results_show_the_models_kld_and_accuracy(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(160, 36)) as pilot:
        await pilot.press("3")
        table = lambda: app.screen.query_one("#results", DataTable)  # noqa: E731
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ResultsScreen" and table().row_count == 12)
        figures = set(zip(_column(table(), "model"), _column(table(), "kld"), _column(table(), "acc")))
        assert figures == {
            ("SmolLM2-135M-Instruct.Q8_0.gguf", "0.0021", "65%"),
            ("SmolLM2-135M-Instruct.Q4_1.gguf", "0.0912", "n/a"),  # measured, never evaluated
            ("tiny-llama-4L.gguf", "n/a", "n/a"),
            ("tiny-llama-2L.gguf", "n/a", "n/a"),
        }
        assert "KLD" in screen_text(app) and " acc " in screen_text(app)


def test_row_marks_name_the_base_the_reference_and_the_front() -> None:
    from lab.tui.screens.ladder import row_cells

    base = {"model_id": "q4", "is_base": True, "file_type": "Q4_1", "file_size": 98_000_000}
    ref = {"model_id": "f16", "is_base": False, "file_type": "F16", "kld_mean": None}
    q8 = {"model_id": "q8", "is_base": False, "file_type": "Q8_0", "kld_mean": 0.0038, "n_fallback": 1}
    assert [str(row_cells(r, {"q8"}, "f16")[0]) for r in (base, ref, q8)] == ["base", "ref", "front"]
    cells = [str(c) for c in row_cells(q8, set(), "f16")]
    assert cells[0] == "" and cells[8] == "0.0038" and cells[14] == "1" and cells[3] == "n/a" and cells[7] == "n/a"


async def test_ladder_fits_120_columns(make_app) -> None:
    # every column, the last one included, is drawn whole in a 120x36 terminal
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await _open_demo_ladder(app, pilot)
        await wait_for(pilot, lambda: "258.35 MiB" in screen_text(app))
        await pilot.pause()
        table = app.screen.query_one("#ladder", DataTable)
        assert table.virtual_size.width <= table.size.width == 120
        lines = screen_text(app).splitlines()
        header = next(i for i, line in enumerate(lines) if "quant" in line and "fall-" in line)
        assert lines[header].rstrip().endswith("fall-") and lines[header + 1].rstrip().endswith("back")
        rows = {line.split()[1]: line.rstrip() for line in lines[header + 2:header + 5]}
        # the last column (fallback tensors) ends each row, whole
        assert rows["F16"].endswith("100%    n/a") and rows["Q8_0"].endswith("100%      0")
        assert rows["Q4_1"].endswith("95%      0")
        assert "file: SmolLM2-135M-Instruct.F16.gguf" in screen_text(app)
        await pilot.press("down")
        await wait_for(pilot, lambda: "file: SmolLM2-135M-Instruct.Q8_0.gguf" in screen_text(app))


async def test_ladder_shows_cost_per_million_tokens_from_the_machine_settings(make_app, seeded_db) -> None:
    from lab.cost import set_machine_costs
    from lab.store import Store

    store = Store(seeded_db)
    set_machine_costs(store, "5eed5eed5eed5eed", price_usd=1200, lifetime_years=4, utilization=0.5,
                      power_usd_per_kwh=0.30, watts=35)
    store.close()
    app = make_app()
    async with app.run_test(size=(200, 50)) as pilot:
        await _open_demo_ladder(app, pilot)
        table = app.screen.query_one("#ladder", DataTable)
        # Q8_0 at 121.4 t/s makes 437 040 tokens per busy hour: 1200 USD / (4 y x 8766 h x 0.5) =
        # 0.068446 USD/h -> 0.15661 per 1M, plus 35 W x 0.30 USD/kWh = 0.0105 USD/h -> 0.024025
        # per 1M: 0.1806. The other quants have no tg speed on lab-box, so no cost.
        assert _column(table, "cost") == ["n/a", "0.181", "n/a"]
        assert app.screen.ladder.rows[1]["usd_per_mtok"] == pytest.approx(0.15661 + 0.024025, abs=2e-5)
        assert "USD/1M: cost per 1M generated tokens, machine cost settings at the tg speed" in legend(app.screen.ladder, "lab-box")


async def test_ladder_cost_is_na_until_the_machine_has_a_price(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(200, 50)) as pilot:
        await _open_demo_ladder(app, pilot)
        table = app.screen.query_one("#ladder", DataTable)
        assert _column(table, "cost") == ["n/a", "n/a", "n/a"]
        assert app.screen.ladder.rows[1]["cost_missing"] == [
            "rightsizer machine set --price --lifetime-years --utilization --power-price"]
        assert "USD/1M: n/a until `rightsizer machine set --price ...`" in legend(app.screen.ladder, "lab-box")
