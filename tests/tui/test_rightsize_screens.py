"""Right-size from the Library (r): the limits form and its checks, a real question answered on
a tiny model's ladder up to the verdict screen, cancelling one, the Library's endpoints section
and the ladder view's baseline row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Static

from conftest import FINGERPRINT, screen_text, wait_for
from lab.errors import LabError
from lab.store import Store
from lab.tui import data

MACHINE = FINGERPRINT["id"]

def _models(app) -> DataTable:
    return app.screen.query_one("#models", DataTable)


async def _open_form(app, pilot, name: str = "tiny-llama-2L.gguf") -> None:
    await wait_for(pilot, lambda: app.library is not None and _models(app).row_count >= 6
                   and any(e.model.name == name for e in app.screen.entries.values()))
    key = next(k for k, e in app.screen.entries.items() if e.model.name == name)
    _models(app).move_cursor(row=_models(app).get_row_index(key))
    await pilot.press("r")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "RightsizeFormScreen")
    await pilot.pause()


def _fill(app, **values: str) -> None:
    for key, value in values.items():
        app.screen.query_one(f"#rs-{key}", Input).value = value


async def _ask(app, pilot, min_tg: str) -> Any:
    """From the Library: r on the tiny model, its Q8_0 as the one built candidate, tg16 at least
    ``min_tg`` t/s measured with 2 repetitions; returns the progress screen."""
    await _open_form(app, pilot)
    # the model named outright: a library rescan between the cursor move and r must not change it
    _fill(app, model="tiny-llama-2L.gguf", types="Q8_0", min_tg=min_tg, repetitions="2", n_gen="16", threads="2")
    await pilot.press("ctrl+r")
    try:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RightsizeRunScreen", timeout=30)
    except AssertionError:
        shown = _error(app) if type(app.screen).__name__ == "RightsizeFormScreen" else type(app.screen).__name__
        raise AssertionError(f"the question did not start: {shown}") from None
    return app.screen


def _error(app) -> str:
    return str(app.screen.query_one("#rs-form-error", Static).render())


def test_the_form_becomes_a_question_with_the_clis_units() -> None:
    q = data.build_question({"model": "demo", "types": "q8_0, Q4_0", "min_tg": "12.5", "max_memory_bytes": "2GiB",
                             "min_accuracy": "80%", "min_format_valid": "0.95", "suite": "demo",
                             "prefer": "quality", "repetitions": "4", "n_gen": "64", "threads": "2"})
    assert q.types == ["Q8_0", "Q4_0"] and q.prefer == "quality" and q.suite == "demo"
    assert q.limits == {"min_tg": 12.5, "max_memory_bytes": 2 * 2**30, "min_accuracy": 0.8, "min_format_valid": 0.95}
    assert (q.repetitions, q.n_gen, q.n_prompt, q.n_threads) == (4, 64, 512, 2)
    # blank fields are the CLI's defaults; "none" builds no ladder
    q = data.build_question({"model": "demo", "types": "none"})
    assert q.types == [] and q.limits == {} and (q.repetitions, q.n_gen, q.n_threads) == (3, 128, None)


@pytest.mark.parametrize("fields, message", [
    ({"model": ""}, "Give a model"),
    ({"min_tg": "fast"}, "min tg must be a number (t/s), not 'fast'"),
    ({"max_kld": "-1"}, "max KLD must be a number of 0 or more"),
    ({"max_memory_bytes": "lots"}, "max memory: 'lots' is not a memory size"),
    ({"min_accuracy": "1.5", "suite": "demo"}, "min accuracy is a fraction between 0 and 1"),
    ({"min_accuracy": "0.8"}, "measured on a task suite: give one"),
    ({"repetitions": "1"}, "repetitions must be at least 2"),
    ({"types": "Q9_X"}, "Unknown quantization type 'Q9_X'"),
    ({"prefer": "prettiest"}, "--prefer takes smallest, fastest, quality, cheapest"),
])
def test_the_form_refuses_a_bad_field_in_words(fields: dict[str, str], message: str) -> None:
    with pytest.raises(LabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data.build_question({"model": "demo", **fields})


async def test_the_form_shows_what_is_wrong_and_does_not_start(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await _open_form(app, pilot)
        assert app.screen.query_one("#rs-model", Input).value == "tiny-llama-2L.gguf"
        assert app.screen.query_one("#rs-threads", Input).value == "2"  # this machine's cores
        _fill(app, min_tg="fast")
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert _error(app) == "Error: min tg must be a number (t/s), not 'fast'"
        _fill(app, min_tg="5", min_accuracy="90%")
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert "measured on a task suite" in _error(app)
        assert type(app.screen).__name__ == "RightsizeFormScreen"
        assert "Error: min accuracy and min format valid" in screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "LibraryScreen")


async def test_a_question_from_the_library_reaches_the_verdict_screen(make_app, seeded_db: Path) -> None:
    from lab.tui.screens.verdict import VerdictScreen

    app = make_app()
    async with app.run_test(size=(150, 40)) as pilot:
        run_screen = await _ask(app, pilot, "1")
        await wait_for(pilot, lambda: isinstance(app.screen, VerdictScreen), timeout=60)
        # progress was shown as it went: the stages chosen, the candidate being measured, the skip
        lines = run_screen.lines
        assert lines[0].startswith("ladder: Q8_0 from tiny-llama-2L.gguf")
        assert any(line.startswith("stages: memory, speed; skipped: quality (no limit needs it)") for line in lines)
        q8_name = next(line.split(":")[0] for line in lines if line.endswith(": speed"))
        assert q8_name.endswith(".gguf") and "Q8_0" in q8_name
        assert any(line.startswith("tiny-llama-2L.gguf: skipped (not measured further") for line in lines)
        # each candidate's row said where it stood
        assert run_screen.now["tiny-llama-2L.gguf"].startswith("skipped (not measured further: ")
        assert run_screen.now[q8_name].startswith("speed ok: tg16 t/s ")

        screen = app.screen
        outcome = screen.outcome
        assert outcome.pick is not None and outcome.pick.quant == "Q8_0" and outcome.pick.name == q8_name
        await pilot.pause()
        table = screen.query_one("#verdict", DataTable)
        cols = [str(c.key.value) for c in table.ordered_columns]
        rows = {str(r[cols.index("file")]): r for r in (table.get_row_at(i) for i in range(table.row_count))}
        assert str(rows[q8_name][cols.index("status")]) == "PICK"
        assert str(rows["tiny-llama-2L.gguf (source)"][cols.index("status")]) == "skipped"
        tg = str(rows[q8_name][cols.index("tg")])
        # every repetition stored (2, or more when the 95% interval of 2 held the limit and it measured again)
        n = outcome.pick.figures["tg_ts_n"]
        assert n >= 2 and tg.endswith(f"(n={n})")
        assert float(tg.split()[0]) == pytest.approx(outcome.pick.figures["tg_ts"], abs=0.01)
        assert str(rows["tiny-llama-2L.gguf (source)"][cols.index("tg")]) == "n/a"  # never benched
        text = screen_text(app)
        command = outcome.commands()["llama-server"]
        assert command.startswith("llama-server -m ") and str(outcome.pick.path) in command and "-t 2" in command
        assert f"run: {outcome.run_id}" in text and "llama-server command:" in text
        assert f"Verdict: {q8_name} (Q8_0), the smallest of those meeting every limit" in text
        assert "tg16 t/s ≥ 1" in text  # the question, as asked
        # why each other candidate is not the pick, without moving the cursor
        assert f"skipped tiny-llama-2L.gguf (source): not measured further: {q8_name} ranks first by smallest" in text
        # the line under the table: the highlighted (picked) row's reason in full
        assert "tg16 t/s" in str(screen.query_one("#verdict-row", Static).render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "LibraryScreen")
        # r again (here on another model): the last question's limits are offered again
        await _open_form(app, pilot, "tiny-llama-4L.gguf")
        fields = {k: app.screen.query_one(f"#rs-{k}", Input).value for k in ("model", "types", "min_tg", "n_gen")}
        assert fields == {"model": "tiny-llama-4L.gguf", "types": "Q8_0", "min_tg": "1", "n_gen": "16"}
    store = Store(seeded_db)
    run = store.get("runs", outcome.run_id)
    assert run["kind"] == "rightsize" and run["status"] == "ok"
    assert json.loads(run["verdict"])["pick"]["sha256"] == outcome.pick.model_id
    tg16 = store.query("select avg_ts, repetitions from results where model_id = ? and test = 'tg16' "
                       "order by test_time",
                       [outcome.pick.model_id])
    assert sum(r["repetitions"] for r in tg16) == n and tg16[0]["repetitions"] == 2 and tg16[0]["avg_ts"] > 1


async def test_escape_cancels_the_question_and_keeps_what_was_stored(make_app, seeded_db: Path) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        # a limit no candidate meets: every candidate is benched, so there is time to cancel
        screen = await _ask(app, pilot, "1e9")
        await wait_for(pilot, lambda: any(": bench tg16" in line for line in screen.lines), timeout=30)
        assert app.rightsize_running and "● right-sizing" in screen_text(app)  # one run at a time
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen.running, timeout=30)
        assert not app.rightsize_running and app.run_status == "last right-size: cancelled"
        assert app.screen is screen  # the verdict screen never came
        assert "Cancelled: figures measured so far are stored" in str(screen.query_one("#rs-run-now", Static).render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "LibraryScreen")
    store = Store(seeded_db)
    runs = store.query("select status from runs where kind = 'rightsize'")
    assert [r["status"] for r in runs] == ["cancelled"]
    assert not store.query("select id from runs where status = 'running'")
    # the ladder built before the cancel is kept, registered as built from the source
    built = store.query("select path from models where file_type = 'Q8_0' and base_model_id is not null "
                        "and path like '%tiny-llama-2L%'")
    assert len(built) == 1 and Path(built[0]["path"]).is_file()


async def test_quitting_during_a_question_asks_then_stops_it_as_cancelled(make_app, seeded_db: Path) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        # a bench long enough (10 x 1024 tokens) to still be running while the dialog is open
        await _open_form(app, pilot)
        _fill(app, model="tiny-llama-2L.gguf", types="none", min_tg="1e9", repetitions="10", n_gen="1024", threads="2")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RightsizeRunScreen")
        screen = app.screen
        await wait_for(pilot, lambda: any(": bench tg1024" in line for line in screen.lines), timeout=30)
        await pilot.press("q")
        assert type(app.screen).__name__ == "ConfirmScreen"
        assert "right-size question is being answered" in screen_text(app)
        await pilot.press("n")  # keep it running
        assert screen.running and not screen.cancel.is_set() and app.is_running
        await pilot.press("q", "y")
        assert screen.cancel.is_set()
        await wait_for(pilot, lambda: not screen.running, timeout=30)
    runs = Store(seeded_db).query("select status from runs where kind = 'rightsize'")
    assert [r["status"] for r in runs] == ["cancelled"]


def _add_endpoint(db: Path) -> str:
    from lab.endpoints import add_endpoint

    store = Store(db)
    endpoint = add_endpoint(store, "incumbent", url="http://127.0.0.1:9/v1", model="big-model-7b",
                            api_key_env="INCUMBENT_KEY", price_in=0.15, price_out=0.6)
    store.close()
    return endpoint.id


async def test_the_library_lists_stored_endpoints_without_their_key(make_app, seeded_db: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCUMBENT_KEY", "sk-never-shown-1234")
    _add_endpoint(seeded_db)
    app = make_app()
    async with app.run_test(size=(130, 40)) as pilot:
        await wait_for(pilot, lambda: app.library is not None)
        table = app.screen.query_one("#endpoints", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        await pilot.pause()
        assert [str(c) for c in table.get_row_at(0)] == [
            "endpoint:incumbent", "http://127.0.0.1:9/v1", "big-model-7b", "0.15", "0.6", "$INCUMBENT_KEY"]
        text = screen_text(app)
        assert "endpoint:incumbent" in text and "big-model-7b" in text
        assert "sk-never-shown" not in text


async def test_the_library_shows_no_endpoint_section_without_endpoints(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(130, 40)) as pilot:
        await wait_for(pilot, lambda: app.library is not None and any(e.evaluation for e in app.screen.entries.values()))
        await pilot.pause()
        assert not app.screen.query_one("#library-endpoints").display
        assert "Endpoints (compared as" not in screen_text(app)


def _endpoint_eval(db: Path, endpoint_id: str) -> None:
    """The endpoint's eval on the seeded ladder's suite (items q00..q19, 16 right) with its token
    counts, and one chat test against it, as ``eval`` and ``bench --chat`` store them."""
    from lab.evals.stats import wilson_interval

    store = Store(db)
    run_id = store.create_run("eval", machine_id=MACHINE, model_id=endpoint_id, model_filename="endpoint:incumbent", config={"suite": "demo"})
    store.finish_run(run_id, "ok")
    low, high = wilson_interval(16, 20)
    eval_id = store.add_row("eval_runs", {
        "run_id": run_id, "model_id": endpoint_id, "model_filename": "endpoint:incumbent", "suite": "demo",
        "constrained": 1, "n_items": 20, "n_correct": 16, "accuracy": 0.8, "accuracy_ci_low": low,
        "accuracy_ci_high": high, "format_valid_rate": 1.0, "n_empty": 0, "n_timeout": 0, "n_error": 0,
        "created_at": "2025-06-03T00:00:00.000000+00:00"})
    store.add_rows("eval_items", [{
        "id": f"{eval_id}-{k}", "eval_run_id": eval_id, "run_id": run_id, "model_id": endpoint_id, "item_index": k,
        "item_id": f"q{k:02d}", "scorer": "json_schema", "score": float(k < 16), "correct": int(k < 16),
        "format_valid": 1, "status": "ok", "n_prompt_tokens": 100, "n_tokens": 50} for k in range(20)])
    chat = store.create_run("bench", machine_id=MACHINE, model_id=endpoint_id, model_filename="endpoint:incumbent", config={})
    store.finish_run(chat, "ok")
    store.add_result({"run_id": chat, "model_id": endpoint_id, "model_filename": "endpoint:incumbent",
                      "test": "chat", "ttft_ms": 250.0, "e2e_ms": 1900.0, "avg_ts": 42.0,
                      "test_time": "2025-06-03T00:00:00.000000+00:00"})
    store.close()


async def test_the_ladder_shows_an_endpoint_with_the_same_suite_as_a_baseline_row(make_app, seeded_db: Path) -> None:
    _endpoint_eval(seeded_db, _add_endpoint(seeded_db))
    app = make_app()
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: app.library is not None and _models(app).row_count == 6)
        await wait_for(pilot, lambda: any(e.evaluation for e in app.screen.entries.values()))
        demo = next(k for k, e in app.screen.entries.items() if e.model.source == "demo")
        _models(app).move_cursor(row=_models(app).get_row_index(demo))
        await pilot.press("L")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "LadderScreen" and app.screen.ladder is not None)
        await pilot.pause()
        table = app.screen.query_one("#ladder", DataTable)
        cols = [str(c.key.value) for c in table.ordered_columns]
        assert table.row_count == 4  # F16, Q8_0, Q4_1 and the baseline
        base = {k: str(v) for k, v in zip(cols, table.get_row_at(3))}
        # 20 items x (100 in at 0.15 + 50 out at 0.6) USD per 1M, over 1000 generated tokens
        assert (base["mark"], base["quant"], base["cost"]) == ("baseline", "endpoint:incumbent", "0.9")
        assert base["acc"] == "80% (58–92)" and base["valid"] == "100%" and base["tg"] == "n/a"
        # the Q8_0 rung against it, paired on the same items: 13 right against 16
        table.move_cursor(row=1)
        await pilot.pause()
        line = str(app.screen.query_one("#ladder-row", Static).render())
        assert "vs endpoint:incumbent: accuracy -15.0 pts [" in line and "n=20" in line
        assert "not distinguishable" in line
        table.move_cursor(row=3)
        await pilot.pause()
        line = str(app.screen.query_one("#ladder-row", Static).render())
        assert line.startswith("endpoint:incumbent: TTFT 250 ms, e2e 1900 ms, 42.0 t/s (chat)") and "42.0 t/s (chat)" in line
        assert "baseline: an endpoint with an eval run on the same suite" in screen_text(app)
