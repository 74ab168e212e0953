"""``rightsizer merge`` and ``rightsizer export``: bring the databases of many devices into one,
and carry a subset of one out (thin faces over :mod:`lab.fleet`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lab.cli.db import db_option, open_store
from lab.cli.output import Column, emit, format_option

_MERGE_COLUMNS = [
    Column("table", "table", align="left"),
    Column("added", "added"),
    Column("present", "already present"),
    Column("filled", "filled"),
    Column("conflicts", "conflicts"),
]


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@format_option(choices=("table", "json"))
@db_option
def merge(sources: tuple[Path, ...], fmt: str, db_path: Path | None) -> None:
    """Merge other Rightsizer databases into --db (the lab's database by default): their runs,
    results, samples, quality and eval rows, with their machines and models.

    Merging again adds nothing. A row already here under the same id with different values is
    never overwritten: it is skipped and listed as a conflict, and the command exits 3. A NULL
    in a machine or model row is filled from the source ("filled"). Each source is merged in
    one transaction and is never changed; an older schema is migrated in a temporary copy, a
    newer one is refused. Exits 0 when every row merged or was already present.
    """
    from lab import fleet

    store = open_store(db_path)
    reports = fleet.merge(store, list(sources))
    if fmt == "json":
        click.echo(json.dumps({"target": str(store.path), "sources": [r.as_dict() for r in reports]}, indent=2))
    else:
        for report in reports:
            click.echo(f"{report.source} -> {store.path}")
            emit(report.rows(), _MERGE_COLUMNS, fmt)
            for conflict in report.conflicts:
                click.echo(f"conflict: {conflict.describe()}; kept this database's row", err=True)
    n_conflicts = sum(len(r.conflicts) for r in reports)
    if n_conflicts:
        click.echo(f"{n_conflicts} row(s) differ from the rows already stored under the same key and were "
                   "skipped.", err=True)
        # SystemExit, not ctx.exit(): see lab.cli.report.recommend.
        raise SystemExit(fleet.CONFLICT_EXIT)


@click.command()
@click.option("--model", default=None, help="Model file name (substring) or model id prefix.")
@click.option("--machine", default=None, help="Machine id prefix or hostname.")
@click.option("--run", "run_id", default=None, help="Run id prefix.")
@click.option("--since", default=None, help="Runs started at or after this date or time (ISO, UTC), e.g. 2025-06-01.")
@click.option("--test", default=None, help="Only results of this test, e.g. tg128 (a trailing * matches a prefix).")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="FILE.db (a Rightsizer database that `merge` reads) or FILE.jsonl (a row per line).")
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@db_option
def export(model: str | None, machine: str | None, run_id: str | None, since: str | None, test: str | None,
           output: Path, force: bool, db_path: Path | None) -> None:
    """Write the runs matching the filters, with their results, samples, quality and eval rows
    and every machine and model they name, to a new database or to JSONL."""
    from lab import fleet

    store = open_store(db_path)
    selection = fleet.select(store, model=model, machine=machine, run=run_id, since=since, test=test)
    counts = fleet.export(store, output, selection, force=force)
    summary = ", ".join(f"{n} {table}" for table, n in counts.items())
    click.echo(f"Exported {summary} to {output}.")


COMMANDS = [merge, export]
