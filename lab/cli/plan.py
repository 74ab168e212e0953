"""``rightsizer plan init|check``, ``rightsizer run PLAN`` and ``rightsizer bundle PLAN DIR``:
thin faces over :mod:`lab.plan`, :mod:`lab.plan_run` and :mod:`lab.bundle`.

Exit codes of ``run``: 0 every step done or already stored, 2 some steps failed (each stored
with its reason), 1 the plan is invalid (nothing ran), 130 cancelled (finished steps stored).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from lab.cli.db import db_option, open_store
from lab.cli.output import Column, emit, format_option
from lab.ids import short_id

STEPS_FAILED_EXIT = 2


def _seconds(value: Any) -> str:
    return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"


def _estimate(row: dict[str, Any]) -> str:
    if row.get("estimate_s") is None:
        return "n/a"
    return ("~" if row.get("estimate_guess") else "") + _seconds(row["estimate_s"])


STEP_COLUMNS = [
    Column("label", "step", align="left"),
    Column("model", "model", align="left"),
    Column("status", "status", align="left"),
    Column("seconds", "time", _seconds),
    Column("runs", "runs", align="left"),
    Column("error", "reason", align="left"),
]
CHECK_COLUMNS = [
    Column("label", "step", align="left"),
    Column("model", "model", align="left"),
    Column("status", "status", align="left"),
    Column("estimate", "estimate", align="left"),
]


@click.group("plan")
@db_option
def plan_group() -> None:
    """Plans: a TOML file that says what to measure, run alike on every machine."""


@plan_group.command("init")
@click.argument("model", required=False)
@db_option
def init(model: str | None) -> None:
    """Print a commented, complete example plan for MODEL (default: the demo model: a small
    bench and a few eval items, about a minute on two cores). Redirect it: > plan.toml"""
    from lab.plan import init_text

    click.echo(init_text(model), nl=False)


@plan_group.command("check")
@click.argument("plan_file", type=click.Path(dir_okay=False, path_type=Path))
@format_option(choices=("table", "json"))
@db_option
def check(plan_file: Path, fmt: str, db_path: Path | None) -> None:
    """Validate PLAN_FILE on this machine: keys and values, model files and their sha256,
    suites and texts, whether each model fits in memory; then list what will run (steps
    already stored here are skipped) and about how long it takes. Exits 1 on any problem."""
    from lab.plan import PlanError, load_plan
    from lab.plan_run import check_plan

    plan = load_plan(plan_file)
    report = check_plan(plan, open_store(db_path))
    rows = [dict(s.to_dict(), estimate=_estimate(s.to_dict())) for s in report.steps]
    if fmt == "json":
        click.echo(json.dumps({"plan": str(plan_file), "problems": report.problems, "notes": report.notes,
                               "steps": rows, "estimate_s": report.estimate_s}, indent=2))
    elif not report.problems:
        emit(rows, CHECK_COLUMNS, fmt)
        n_run = sum(1 for s in report.steps if s.status == "to run")
        guess = any(s.estimate_guess for s in report.steps if s.status == "to run")
        click.echo(f"{plan.name}: {n_run} step(s) to run, {len(report.steps) - n_run} already stored here; "
                   f"about {_seconds(report.estimate_s)}"
                   + (" (~: a guess from model size, no speeds stored here yet)" if guess else ""))
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if report.problems:
        raise PlanError(f"{plan_file.name} cannot run here: " + "; ".join(report.problems))


class _Progress:
    """One line per step on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        kind = event.get("event")
        if kind == "step_start":
            sys.stderr.write(f"\r\033[K[{event['index'] + 1}/{event['n_steps']}] {event['label']} {event['model']}")
        elif kind == "rep":
            sys.stderr.write(f"\r\033[K  {event.get('test', '')} rep {event.get('rep', 0) + 1}")
        elif kind == "eval_item":
            sys.stderr.write(f"\r\033[K  item {event['n_done']}/{event['n_items']}")
        elif kind == "progress" and event.get("chunk"):
            sys.stderr.write(f"\r\033[K  chunk {event['chunk']}/{event['n_chunks']}")
        elif kind == "step_end":
            sys.stderr.write(f"\r\033[K[{event['index'] + 1}/{event['n_steps']}] {event['label']} "
                             f"{event['model']}: {event['status']}\n")
        sys.stderr.flush()


@click.command("run")
@click.argument("plan_file", type=click.Path(dir_okay=False, path_type=Path))
@format_option(choices=("table", "json"))
@db_option
def run(plan_file: Path, fmt: str, db_path: Path | None) -> None:
    """Run PLAN_FILE headless, storing as it goes. Steps already stored for this machine (same
    model sha256, configuration and llama.cpp build) are skipped, so an interrupted run resumes.

    Exits 0 when every step is done or was stored before, 2 when some steps failed (each is
    stored with its reason; run again to retry them), 1 when the plan is invalid (nothing ran).
    """
    from lab.plan import load_plan
    from lab.plan_run import run_plan

    plan = load_plan(plan_file)
    store = open_store(db_path)
    outcome = run_plan(plan, store, on_event=_Progress())
    rows = [dict(s.to_dict(), runs=", ".join(short_id(r) for r in s.run_ids)) for s in outcome.steps]
    if fmt == "json":
        click.echo(json.dumps({"plan": str(plan_file), "db": str(store.path), "steps": rows,
                               "verdict": outcome.verdict}, indent=2, default=str))
    else:
        emit(rows, STEP_COLUMNS, fmt)
        if outcome.verdict is not None:
            click.echo()
            click.echo(f"verdict: {outcome.verdict['summary']}")
            for cand in outcome.verdict["candidates"]:
                click.echo(f"  {cand['model_filename']}: {cand['status']} ({cand['reason']})")
    counts = {s: sum(1 for r in outcome.steps if r.status == s) for s in ("done", "skipped", "failed")}
    click.echo(f"{plan.name}: {counts['done']} done, {counts['skipped']} already stored, {counts['failed']} failed; "
               f"stored in {store.path}", err=True)
    if outcome.failed:
        raise SystemExit(STEPS_FAILED_EXIT)


@click.command("bundle")
@click.argument("plan_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--platform", default=None, help="pip platform tag of the device, e.g. manylinux_2_28_aarch64 (older manylinux "
              "tags it runs are added) (default: this machine's).")
@click.option("--python-version", default=None, help="The device's Python, e.g. 3.10 (default: this one).")
@click.option("--no-wheels", is_flag=True, help="Leave the wheelhouse out (the device has Rightsizer already).")
@db_option
def bundle(plan_file: Path, out_dir: Path, platform: str | None, python_version: str | None, no_wheels: bool) -> None:
    """Write OUT_DIR: PLAN_FILE with its models (sha256-checked), eval suites and texts, a
    wheelhouse of Rightsizer and its dependencies, and install.sh, which installs from the
    wheelhouse with pip --no-index and runs the plan on a device with no network.

    For another --platform/--python-version the wheelhouse holds the binary wheels pip finds
    for it plus llama-cpp-python's source distribution, built on the device (README.md says how).
    """
    from lab.bundle import bundle as write_bundle
    from lab.plan import load_plan

    plan = load_plan(plan_file)
    report = write_bundle(plan, out_dir, wheels=not no_wheels, platform=platform, python_version=python_version,
                          on_line=lambda line: click.echo(line, err=True))
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    click.echo(f"bundle {out_dir}: {len(report.files)} file(s), {len(report.wheels)} wheel(s), "
               f"{len(report.sdists)} source distribution(s), {size / 2**20:.1f} MiB; on the device: sh install.sh")


COMMANDS = [plan_group, run, bundle]
