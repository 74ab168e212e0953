"""Machines: one model's test on every machine side by side; Results by machine; the Library's
list of the machines a model was measured on. All on the store-seeded lab-box and big-box."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Static

from conftest import FINGERPRINT, OTHER_MACHINE, screen_text, wait_for


def _table(app) -> DataTable:
    return app.screen.query_one("#machines", DataTable)


def _row(table: DataTable, key: str) -> list[str]:
    """A comparison row's cells after its label, by the row's key."""
    return [str(v) for v in table.get_row(key)[1:]]


def _columns(table: DataTable) -> list[str]:
    return [c.label.plain for c in table.ordered_columns][1:]


def test_compare_machines_picks_one_configuration_per_machine(seeded_db) -> None:
    from lab.store import Store
    from lab.tui import data

    store = Store(seeded_db)
    try:
        c = data.compare_machines(store, "m-q8", "tg128", first_machine_id=FINGERPRINT["id"])
        assert [f.machine["hostname"] for f in c.figures] == ["lab-box", "big-box"]
        assert [round(f.row["avg_ts"], 1) for f in c.figures] == [121.4, 330.2]
        # each machine's figure is the one measured at its own configuration, named by select()
        assert [f.selection.config.n_threads for f in c.figures] == [2, 16]
        assert all(f.row["n_threads"] == f.selection.config.n_threads for f in c.figures)
        assert c.configs_differ
        # this machine first whichever it is
        other = data.compare_machines(store, "m-q8", "tg128", first_machine_id=OTHER_MACHINE["id"])
        assert [f.machine["hostname"] for f in other.figures] == ["big-box", "lab-box"]
        # one configuration for all: lab-box never ran at big-box's 16 threads, so it has no figure
        same = data.compare_machines(store, "m-q8", "tg128", first_machine_id=FINGERPRINT["id"], same_config=True)
        assert [f.row is None for f in same.figures] == [True, False]
        assert {f.selection.config.n_threads for f in same.figures} == {16}
        pp = data.compare_machines(store, "m-q8", "pp512", first_machine_id=FINGERPRINT["id"])
        assert [round(f.row["avg_ts"], 1) for f in pp.figures] == [452.3, 2105.0]
        choices = data.comparable_models(store)
        assert [(m.model_id, m.machines) for m in choices[:2]] == [("m-q4", 2), ("m-q8", 2)]
        assert choices[1].tests == ["tg128", "pp512"]
        assert data.measured_on(store)["m-q8"] == [("big-box", 2), ("lab-box", 2)]
        assert [(m.hostname, m.results) for m in data.machine_list(store)] == [("big-box", 4), ("lab-box", 8)]
        # a figure measured while paging from swap says so, as noisy does
        store.db["results"].update("res0005-tg128", {"swapped": 1, "noisy": 1})
        flagged = data.compare_machines(store, "m-q8", "tg128", first_machine_id=FINGERPRINT["id"])
        assert [f.flags() for f in flagged.figures] == [[], ["noisy", "swapped"]]
    finally:
        store.close()


async def test_machines_screen_shows_q8_tg128_side_by_side_from_results(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ResultsScreen"
                       and app.screen.query_one("#results", DataTable).row_count == 12)
        await pilot.press("slash", *"quant:Q8_0 test:tg128 machine:big-box", "enter")
        await wait_for(pilot, lambda: app.screen.query_one("#results", DataTable).row_count == 1)
        await pilot.press("M")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "MachinesScreen" and app.screen.comparison)
        table = _table(app)
        assert _columns(table) == ["lab-box (base)", "big-box"]
        speeds = _row(table, "t/s ± sd")
        assert [float(v.split(" ± ")[0]) for v in speeds] == [121.4, 330.2]
        assert _row(table, "avg_ts") == ["121.4", "330.2 (+172.0% better)"]  # (330.2 - 121.4) / 121.4
        assert _row(table, "flags") == ["none", "none"]
        assert _row(table, "j_per_token") == ["n/a", "n/a"]  # no power meter on either: n/a, never 0
        assert _row(table, "peak_rss_bytes")[1].endswith("(+0.0%)")
        assert _row(table, "threads") == ["2", "16"]
        assert _row(table, "hostname") == ["lab-box", "big-box"]
        assert _row(table, "CPU") == ["Test CPU @ 3.00GHz", "Big CPU @ 4.0GHz"]
        assert _row(table, "cores / threads") == ["2 / 2", "16 / 32"]
        assert _row(table, "llama.cpp build") == ["abc1234 / 0.3.36"] * 2
        status = str(app.screen.query_one("#machines-status", Static).render())
        assert "SmolLM2-135M-Instruct.Q8_0.gguf · tg128 on 2 machines" in status and "they differ" in status
        # one configuration for every machine: big-box's is the only one measured on the most
        await pilot.press("a")
        await wait_for(pilot, lambda: app.screen.comparison.same_config)
        assert _row(_table(app), "t/s ± sd")[0] == "not measured"
        assert "one configuration for all: t=16" in screen_text(app)
        # t picks another test of the same model
        await pilot.press("a", "t")
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: app.screen.comparison.test == "pp512")
        assert [float(v.split(" ± ")[0]) for v in _row(_table(app), "t/s ± sd")] == [452.3, 2105.0]


async def test_results_filter_and_group_by_machine(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(140, 36)) as pilot:
        await pilot.press("3")
        results = lambda: app.screen.query_one("#results", DataTable)  # noqa: E731
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ResultsScreen" and results().row_count == 12)
        hosts = lambda: {str(results().get_row_at(i)[2]) for i in range(results().row_count)}  # noqa: E731
        # m steps through the hosts in name order, then back to every machine
        await pilot.press("m")
        await wait_for(pilot, lambda: results().row_count == 4)
        assert hosts() == {"big-box"} and app.screen.query_one("#filter", Input).value == "machine:big-box"
        await pilot.press("m")
        await wait_for(pilot, lambda: results().row_count == 8)
        assert hosts() == {"lab-box"}
        await pilot.press("m")
        await wait_for(pilot, lambda: results().row_count == 12)
        # G groups: a header row per host, each host's rows together, newest first within it
        await pilot.press("G")
        await wait_for(pilot, lambda: results().row_count == 14)
        keys = [str(r.key.value) for r in results().ordered_rows]
        assert keys[0] == "group:big-box" and keys[5] == "group:lab-box"
        column = [str(results().get_row_at(i)[2]) for i in range(14)]
        assert column == ["big-box"] * 5 + ["lab-box"] * 9
        assert str(results().get_row_at(0)[1]) == "▸ 4 results"
        times = [str(results().get_row_at(i)[1]) for i in range(6, 14)]
        assert times == sorted(times, reverse=True)
        assert "grouped by machine" in screen_text(app)
        # a header row is no result: space steps over it, nothing is selected
        await pilot.press("home", "space")
        assert app.screen.selected == [] and results().cursor_row == 1


async def test_library_detail_lists_the_machines_a_model_was_measured_on(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(140, 40)) as pilot:
        table = lambda: app.screen.query_one("#models", DataTable)  # noqa: E731
        await wait_for(pilot, lambda: app.library is not None and table().row_count == 6)
        names = [str(table().get_row_at(i)[0]) for i in range(6)]
        await wait_for(pilot, lambda: app.screen.measured_on)
        detail = lambda: " ".join(str(app.screen.query_one("#model-detail-text").render()).split())  # noqa: E731
        table().move_cursor(row=names.index("SmolLM2-135M-Instruct.Q8_0.gguf"))
        await wait_for(pilot, lambda: "name SmolLM2-135M-Instruct.Q8_0" in detail() or "Q8_0" in detail()[:80])
        assert "measured on big-box (2 results), lab-box (2)" in detail()
        table().move_cursor(row=names.index("tiny-llama-2L.gguf"))
        await wait_for(pilot, lambda: "tiny-llama-2L" in detail()[:60])
        assert "measured on lab-box (2 results) " in detail()  # only lab-box measured the tiny models
        table().move_cursor(row=names.index("SmolLM2-135M-Instruct.F16.gguf"))
        await wait_for(pilot, lambda: "F16" in detail()[:80])
        assert "measured on no machine yet" in detail()
        # M on a measured model: its tg128 across the machines
        table().move_cursor(row=names.index("SmolLM2-135M-Instruct.Q8_0.gguf"))
        await pilot.press("M")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "MachinesScreen" and app.screen.comparison
                       and app.screen.comparison.model_id == "m-q8")
        assert app.screen.comparison.test == "tg128" and _columns(_table(app)) == ["lab-box (base)", "big-box"]


async def test_six_opens_the_model_measured_on_most_machines(make_app) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: app.library is not None)
        await pilot.press("6")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "MachinesScreen" and app.screen.comparison)
        c = app.screen.comparison
        assert (c.model_id, c.test) == ("m-q4", "tg128")  # both demo quants ran on 2 machines: Q4_1 sorts first
        assert _row(_table(app), "avg_ts") == ["171.7", "402.9 (+134.7% better)"]  # (402.9 - 171.7) / 171.7
        assert "[6 Machines]" in screen_text(app)


async def test_two_machines_databases_merged_show_side_by_side(seeded_db, lab_home) -> None:
    """Each host's figures carried out on their own (export), merged into one new database, and
    the app on it compares the two machines."""
    from conftest import FixedProbe, machine_context
    from lab import fleet
    from lab.store import Store
    from lab.tui.app import RightsizerApp

    store = Store(seeded_db)
    parts = []
    for host in ("lab-box", "big-box"):
        part = lab_home / f"{host}.db"
        fleet.export(store, part, fleet.select(store, machine=host, model="Q8_0"))
        parts.append(part)
    store.close()
    merged = Store(lab_home / "merged.db")
    reports = fleet.merge(merged, parts)
    merged.close()
    assert [r.tables["results"].added for r in reports] == [2, 2]
    app = RightsizerApp(db_path=lab_home / "merged.db", machine=machine_context(), probe=FixedProbe(),
                        memory_available=1 << 33, poll_interval=0, cursor_blink=False, models=[])
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: app.library is not None)
        await pilot.press("6")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "MachinesScreen" and app.screen.comparison)
        assert app.screen.comparison.model_id == "m-q8"  # the only model in the merged database
        assert _row(_table(app), "avg_ts") == ["121.4", "330.2 (+172.0% better)"]
        assert _row(_table(app), "hostname") == ["lab-box", "big-box"]


async def test_plan_run_on_two_lab_homes_merged_and_compared_in_the_app(tiny_gguf, tmp_path) -> None:
    """The fleet path end to end through the command line: `plan init` once, `run` in two lab
    homes that stand for two devices (named apart, as devices cloned from one image must be),
    `merge` both databases into one, and the app's Machines screen compares the two."""
    import os
    import sqlite3
    import subprocess
    import sys

    from conftest import FixedProbe, machine_context
    from lab.tui.app import RightsizerApp

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    base = {**os.environ, "PYTHONPATH": root}

    def lab(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                              env=env or base, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done

    plan = tmp_path / "plan.toml"
    plan.write_text(lab("plan", "init", str(tiny_gguf), env={**base, "RIGHTSIZER_HOME": str(tmp_path / "init")}).stdout)
    dbs = []
    for device in ("edge-a", "edge-b"):
        home = tmp_path / device
        lab("run", str(plan), env={**base, "RIGHTSIZER_HOME": str(home), "RIGHTSIZER_MACHINE_NAME": device})
        dbs.append(str(home / "rightsizer.db"))
    merged = tmp_path / "fleet.db"
    lab("merge", *dbs, "--db", str(merged))
    with sqlite3.connect(merged) as conn:
        per_machine = dict(conn.execute(
            "select m.hostname, round(r.avg_ts, 1) from results r join runs u on u.id = r.run_id "
            "join machines m on m.id = u.machine_id where r.test = 'tg128'"))
    assert set(per_machine) == {"edge-a", "edge-b"}

    app = RightsizerApp(db_path=merged, machine=machine_context(), probe=FixedProbe(),
                        memory_available=1 << 33, poll_interval=0, cursor_blink=False, models=[])
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: app.library is not None)
        await pilot.press("6")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "MachinesScreen" and app.screen.comparison)
        assert app.screen.comparison.test == "tg128"
        table = _table(app)
        hosts = _row(table, "hostname")
        assert sorted(hosts) == ["edge-a", "edge-b"]
        # each machine's column holds its own tg128 figure from the merged database
        speeds = [float(cell.split()[0]) for cell in _row(table, "avg_ts")]
        assert speeds == pytest.approx([per_machine[h] for h in hosts], abs=0.051)
