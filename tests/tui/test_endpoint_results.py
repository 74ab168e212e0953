"""An endpoint's chat result in the Results screen and its run detail: shown, n/a where the
remote machine cannot be measured."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable

from conftest import screen_text, wait_for


async def test_an_endpoint_chat_result_shows_and_opens(make_app, lab_home: Path) -> None:
    from lab.endpoints import add_endpoint
    from lab.store import Store

    db = lab_home / "endpoint.db"
    store = Store(db)
    store.upsert_machine({"id": "m1", "hostname": "lab-box"})
    endpoint = add_endpoint(store, "gpt", url="https://api.example.com/v1", model="gpt-4o-mini")
    run_id = store.create_run("bench", machine_id="m1", model_id=endpoint.id, model_filename=endpoint.label,
                              config={"tests": ["chat"], "endpoint": {"name": "gpt"}})
    store.add_result({"run_id": run_id, "machine_id": "m1", "model_id": endpoint.id, "model_filename": endpoint.label,
                      "model_type": "endpoint:gpt (gpt-4o-mini)", "test": "chat", "n_prompt": 0, "n_gen": 0,
                      "n_depth": 0, "repetitions": 2, "avg_ts": 61.5, "stddev_ts": 3.0, "ttft_ms": 420.0,
                      "itl_p50_ms": 15.0, "itl_p95_ms": 31.0, "itl_p99_ms": 40.0, "e2e_ms": 900.0,
                      "n_generated": 60, "n_prompts": 2, "samples_ns": [8e8, 1e9], "samples_ts": [60.0, 63.0]})
    store.finish_run(run_id, "ok")
    store.close()
    app = make_app(db_path=db)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ResultsScreen"
                       and app.screen.query_one("#results", DataTable).row_count == 1)
        row = [str(v) for v in app.screen.query_one("#results", DataTable).get_row_at(0)]
        assert "endpoint:gpt" in row and "chat" in row and any(v.startswith("61.50") for v in row)
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunDetailScreen")
        await wait_for(pilot, lambda: "status" in screen_text(app))
        assert run_id in screen_text(app) and "endpoint:gpt" in screen_text(app)
