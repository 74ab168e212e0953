#!/usr/bin/env python
"""Save an SVG screenshot of every screen of the real app into screenshots/.

    python scripts/export_screenshots.py [--db PATH] [--out screenshots] [--size 120x36]

Everything shown is real: the app is ``RightsizerApp`` on a real database, this machine's real
fingerprint and gauges, and a real benchmark of the demo model started from the Run screen
(pp512 and tg128 at 1 and 2 threads, 3 repetitions: about half a minute on two cores), which is
captured live during tg and again when it is done. The results then feed the Results, Compare,
Chart and run-detail screenshots. A real load of the demo model from the Run screen's Load mode
(1, 2 and 4 users, 10 s each) gives the Load screenshots and the throughput-latency curve.

Before the app opens, the ladder view gets real figures the way a user makes them, with the CLI:
``models ladder demo`` (F16, Q8_0, Q4_0, Q2_K), ``bench`` of each rung, ``quality`` against the F16
and ``eval`` on the bundled suite (a few minutes on two cores; skipped for rungs already
measured in this database). The Hub screenshot shows the curated Suggested list, which needs no
network.

The database defaults to ``<lab home>/screenshots.db`` and the ladder files go to
``<lab home>/screenshots-models`` (``RIGHTSIZER_MODELS``), so that your own results and models
are left alone; pass ``--db`` to use another database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def wait_for(pilot: Any, condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"export_screenshots: timed out waiting for {what or condition}")
        await pilot.pause(0.1)


async def finished(app: Any, pilot: Any, what: str, timeout: float) -> None:
    """Wait for the Run screen's ``what`` (run, load) to end; stop the export unless it ended ok."""
    await wait_for(pilot, lambda: not app.live.active, timeout=timeout, what=f"the {what} to finish")
    await pilot.pause(0.6)
    if app.live.status != "ok":
        raise SystemExit(f"export_screenshots: the demo {what} {app.live.status}: {app.live.error}")


def camera(app: Any, out: Path) -> tuple[Any, list[Path], Callable[[str], None]]:
    """The app, the list of saved files and ``shot(name)``, which saves the app's screen as
    ``out/name.svg``."""
    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []

    def shot(name: str) -> None:
        path = out / f"{name}.svg"
        path.write_text(app.export_screenshot(title=f"Rightsizer: {name}"), encoding="utf-8")
        saved.append(path)
        print(f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return app, saved, shot


LADDER_TYPES = "F16,Q8_0,Q4_0,Q2_K"


def cli(db: Path, *args: str) -> str:
    """Run one ``rightsizer`` command as a user would; stop with its message if it fails."""
    cmd = [sys.executable, "-m", "lab", *args, "--db", str(db)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"export_screenshots: {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def prepare_ladder(db: Path, threads: str) -> None:
    """A real ladder of the demo model with speed, quality and accuracy measured (each step is
    skipped when this database already has its figures)."""
    import json
    import sqlite3

    from lab.library import demo_model_path, sha256_file
    from lab.quantize import default_out_dir, ladder_filename

    demo = demo_model_path()
    assert demo is not None
    print("  building the demo ladder and measuring it ...")
    cli(db, "models", "ladder", "demo", "--types", LADDER_TYPES)
    folder = default_out_dir(demo)
    source_sha = sha256_file(demo)
    rungs = {t: str(folder / ladder_filename(demo, t, source_sha)) for t in LADDER_TYPES.split(",")}
    with sqlite3.connect(db) as con:
        known = lambda table, col: {r[0] for r in con.execute(f"select m.path from {table} x join models m on m.id = x.{col}")}  # noqa: E731
        benched, scored, evaluated = known("results", "model_id"), known("quality", "model_id"), known("eval_runs", "model_id")
    todo = [p for p in rungs.values() if p not in benched]
    if todo:
        cli(db, "bench", *todo, "-p", "512", "-n", "128", "-r", "3", "-t", threads.split(",")[-1])
    todo = [rungs[t] for t in ("Q8_0", "Q4_0", "Q2_K") if rungs[t] not in scored]
    if todo:
        cli(db, "quality", *todo, "-r", rungs["F16"], "--chunks", "8")
    todo = [p for p in (str(demo), rungs["Q8_0"], rungs["Q4_0"], rungs["Q2_K"]) if p not in evaluated]
    if todo:
        out = json.loads(cli(db, "eval", *todo, "--suite", "demo", "--constraint", "on", "-o", "json"))
        for run in out if isinstance(out, list) else [out]:
            print(f"    eval {Path(run.get('model_filename') or '?').name}: accuracy {run.get('accuracy')}")


async def export(db: Path, out: Path, size: tuple[int, int], threads: str, reps: str) -> list[Path]:
    from textual.widgets import Checkbox, Input

    from lab.library import demo_model_path
    from lab.tui.app import RightsizerApp

    if demo_model_path() is None:
        raise SystemExit("export_screenshots: the demo model is needed: pip install 'rightsizer[demo]'")
    app, saved, shot = camera(RightsizerApp(db_path=db, cursor_blink=False), out)

    def screen_is(name: str) -> Callable[[], bool]:
        return lambda: type(app.screen).__name__ == name

    async with app.run_test(size=size) as pilot:
        # Library: wait for the scan and the machine (for fit and last speeds)
        await wait_for(pilot, lambda: app.library is not None and app.machine is not None, what="the library scan")
        # Run: a real benchmark of the demo model, captured live during tg and when done
        await pilot.press("2")
        await wait_for(pilot, screen_is("RunScreen"), what="the Run screen")
        screen = app.screen
        for key, value in (("models", "demo"), ("n_prompt", "512"), ("n_gen", "128"), ("pg", ""), ("n_depth", "0"),
                           ("repetitions", reps), ("threads", threads)):
            screen.query_one(f"#f-{key}", Input).value = value
        screen.query_one("#f-chat", Checkbox).value = False
        await pilot.pause()
        shot("run-form")
        await pilot.press("ctrl+r")
        print("  running a real benchmark of the demo model ...")
        await wait_for(pilot, lambda: app.live.test_name is not None and app.live.test_name.startswith("tg")
                       and len(app.live.rep_ts) >= 2 or not app.live.active, timeout=600, what="tg to start")
        await pilot.pause(0.6)
        shot("run-live")
        await finished(app, pilot, "run", timeout=900)
        shot("run-done")

        await pilot.press("1")
        await wait_for(pilot, lambda: screen_is("LibraryScreen")() and bool(app.screen.details), what="the library")
        table = app.screen.query_one("#models")
        demo_row = next((i for i in range(table.row_count) if str(table.get_row_at(i)[0]) == "demo"), 0)
        table.move_cursor(row=demo_row)
        await wait_for(pilot, lambda: "n/a" not in str(table.get_row_at(demo_row)[9]), timeout=10, what="speeds")
        await pilot.pause(0.5)
        shot("library")
        await pilot.press("L")
        await wait_for(pilot, lambda: screen_is("LadderScreen")() and app.screen.query_one("#ladder").row_count >= 4,
                       what="the ladder view")
        await pilot.pause(0.5)
        shot("ladder")
        await pilot.press("escape", "5")
        await wait_for(pilot, lambda: screen_is("HubScreen")() and app.screen.query_one("#hub-repos").row_count > 0,
                       what="the Hub's Suggested list")
        await pilot.pause(0.5)
        shot("hub")
        await pilot.press("1")

        await pilot.press("3")
        await wait_for(pilot, lambda: screen_is("ResultsScreen")() and app.screen.query_one("#results").row_count > 0,
                       what="results")
        await pilot.pause(0.3)
        # select the two newest tg128 results (1 and 2 threads) and compare them
        await pilot.press("slash", *"test:tg128", "enter")
        await wait_for(pilot, lambda: app.screen.query_one("#results").row_count >= 2, what="tg128 results")
        await pilot.press("space", "space")
        await pilot.pause(0.3)
        shot("results")
        await pilot.press("c")
        await wait_for(pilot, lambda: screen_is("CompareScreen")() and app.screen.query_one("#compare").row_count > 3,
                       what="the comparison")
        await pilot.pause(0.3)
        shot("compare")
        await pilot.press("escape", "x", "slash", "backspace", "enter")
        await pilot.pause(0.5)
        await pilot.press("g")
        await wait_for(pilot, lambda: screen_is("ChartScreen")() and bool(app.screen.query_one("#chart-bars").groups),
                       what="the chart")
        await pilot.pause(0.3)
        shot("chart")
        await pilot.press("v")
        await pilot.pause(0.3)
        shot("chart-scatter")
        await pilot.press("escape", "o")
        await wait_for(pilot, lambda: screen_is("RunDetailScreen")() and app.screen.query_one("#detail-results").row_count > 0,
                       what="the run detail")
        await pilot.pause(0.5)
        shot("run-detail")
        await pilot.press("escape", "4")
        await wait_for(pilot, lambda: screen_is("MachineScreen")() and len(app.screen.query(".core")) > 0,
                       what="the machine gauges")
        await pilot.pause(2.2)  # two more polls, so the CPU figures cover a whole second
        shot("machine")
        # Machines: the demo's tg128 on every machine this database has measured it on
        await pilot.press("6")
        await wait_for(pilot, lambda: screen_is("MachinesScreen")() and app.screen.comparison is not None
                       and app.screen.query_one("#machines").row_count > 0, what="the machines comparison")
        await pilot.pause(0.5)
        shot("machines")
        await pilot.press("question_mark")
        await pilot.pause(0.3)
        shot("help")
        await pilot.press("escape", "ctrl+p")
        await pilot.pause(0.5)
        shot("palette")
        await pilot.press("escape")
    return saved


# The right-size question the verdict screenshot answers: the demo's ladder, a speed floor every
# rung clears and a KLD limit (against the demo file itself) that Q2_K fails; accuracy on the suite.
RIGHTSIZE_FIELDS = {"types": "Q8_0,Q4_0,Q2_K", "min_tg": "10", "max_kld": "0.3", "suite": "demo"}
# A registered endpoint, as `rightsizer endpoints add` stores it (it is never called here).
ENDPOINT = ["incumbent", "--url", "https://api.openai.com/v1", "--model", "gpt-4o-mini",
            "--api-key-env", "OPENAI_API_KEY", "--price-in", "0.15", "--price-out", "0.6"]


async def export_rightsize(db: Path, out: Path, size: tuple[int, int], threads: str) -> list[Path]:
    """The Library with a registered endpoint, then r on the demo model: the limits form, the
    question being answered and its verdict (a real run: the ladder is built and measured as
    far as the limits need, or reused from this database)."""
    import json

    from textual.widgets import Input

    from lab.tui.app import RightsizerApp

    if "incumbent" not in {e["name"] for e in json.loads(cli(db, "endpoints", "list", "-o", "json") or "[]")}:
        cli(db, "endpoints", "add", *ENDPOINT)
    app, saved, shot = camera(RightsizerApp(db_path=db, cursor_blink=False), out)

    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.library is not None and app.machine is not None, what="the library scan")
        await wait_for(pilot, lambda: app.screen.query_one("#endpoints").row_count > 0, what="the endpoints")
        table = app.screen.query_one("#models")
        demo_row = next((i for i in range(table.row_count) if str(table.get_row_at(i)[0]) == "demo"), 0)
        table.move_cursor(row=demo_row)
        await pilot.pause(0.5)
        shot("library-endpoints")
        await pilot.press("r")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RightsizeFormScreen", what="the form")
        for key, value in {**RIGHTSIZE_FIELDS, "threads": threads.split(",")[-1]}.items():
            app.screen.query_one(f"#rs-{key}", Input).value = value
        await pilot.pause(0.3)
        shot("rightsize-form")
        await pilot.press("ctrl+r")
        print("  right-sizing the demo model ...")
        await wait_for(pilot, lambda: type(app.screen).__name__ != "RightsizeRunScreen"
                       or any(line.endswith(": quality") for line in app.screen.lines), timeout=300,
                       what="the first quality stage")
        await pilot.pause(1.5)
        if type(app.screen).__name__ == "RightsizeRunScreen":
            shot("rightsize-live")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "VerdictScreen", timeout=1800, what="the verdict")
        await pilot.pause(0.5)
        shot("verdict")
        await pilot.press("escape")
    return saved


# The load the Load-mode screenshots serve: the demo model to 1, 2 and 4 users, 10 s a level.
LOAD_FIELDS = {"users": "1,2,4", "rates": "", "duration_s": "10", "max_tokens": "64", "slo_ttft_ms": "1000",
               "slo_itl_p95_ms": "", "slo_e2e_ms": ""}


async def export_load(db: Path, out: Path, size: tuple[int, int], threads: str) -> list[Path]:
    """The Run screen in Load mode: a real load of the demo model, captured live while the second
    level is served and when done, then the Results chart's throughput-latency curve of that run."""
    from textual.widgets import Checkbox, Input

    from lab.tui.app import RightsizerApp

    app, saved, shot = camera(RightsizerApp(db_path=db, cursor_blink=False), out)

    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.library is not None and app.machine is not None, what="the library scan")
        await pilot.press("2")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunScreen", what="the Run screen")
        screen = app.screen
        screen.query_one("#f-load", Checkbox).value = True
        for key, value in {**LOAD_FIELDS, "models": "demo", "threads": threads.split(",")[-1]}.items():
            screen.query_one(f"#f-{key}", Input).value = value
        await pilot.pause(0.3)
        shot("load-form")
        await pilot.press("ctrl+r")
        print("  serving the demo model to 1, 2 and 4 users ...")
        await wait_for(pilot, lambda: len(app.live.results) == 1 and app.live.test_name is not None
                       and float(app.live.load.get("elapsed_s") or 0) > 6 or not app.live.active,
                       timeout=300, what="the second level")
        await pilot.pause(0.6)
        shot("load-live")
        await finished(app, pilot, "load", timeout=600)
        shot("load-done")
        run_id = app.live.results[0]["run_id"]
        await pilot.press("3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ResultsScreen", what="the Results screen")
        await pilot.press("slash")
        app.screen.query_one("#filter", Input).value = f"run:{run_id[:8]}"
        await pilot.press("enter")
        await pilot.pause(0.5)
        await pilot.press("g")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ChartScreen"
                       and bool(app.screen.query_one("#chart-bars").groups), what="the load curve")
        await pilot.pause(0.3)
        shot("load-chart")
        await pilot.press("escape")
    return saved


def main() -> None:
    from lab import config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=None, help="database (default: <lab home>/screenshots.db)")
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="folder for the SVG files")
    parser.add_argument("--size", default="120x36", help="terminal size, COLSxROWS")
    parser.add_argument("--threads", default="1,2", help="threads for the demo run (comma list)")
    parser.add_argument("--reps", default="3", help="repetitions for the demo run")
    parser.add_argument("--only", choices=("rightsize", "load"), default=None,
                        help="only the right-size screens (Library with an endpoint, form, progress, verdict), "
                             "or only the Load mode's (form, live, done, the Results curve)")
    args = parser.parse_args()
    cols, rows = (int(x) for x in args.size.lower().split("x"))
    db = args.db or config.lab_home() / "screenshots.db"
    os.environ.setdefault("RIGHTSIZER_MODELS", str(config.lab_home() / "screenshots-models"))
    print(f"export_screenshots: database {db}, models {os.environ['RIGHTSIZER_MODELS']}")
    saved = []
    if args.only is None:
        prepare_ladder(db, args.threads)
        saved += asyncio.run(export(db, args.out, (cols, rows), args.threads, args.reps))
    if args.only in (None, "rightsize"):
        saved += asyncio.run(export_rightsize(db, args.out, (cols, rows), args.threads))
    if args.only in (None, "load"):
        saved += asyncio.run(export_load(db, args.out, (cols, rows), args.threads))
    print(f"export_screenshots: {len(saved)} screenshots in {args.out}")


if __name__ == "__main__":
    main()
