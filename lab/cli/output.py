"""Rendering rows for the terminal and for scripts: table, md, csv, json, jsonl.

``table`` and ``md`` are the same pipe table llama-bench prints (it renders in a terminal and
pastes into Markdown). Missing figures (None) print as ``n/a`` in tables and ``null`` in JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import click

from lab.units import NA, human_bytes, human_count, missing

# NA and the byte/count writers are the shared ones (lab.units); CLI modules take them from here.
__all__ = ["FORMATS", "NA", "Column", "emit", "format_option", "human_bytes", "human_count", "render_table"]

FORMATS = ("table", "md", "csv", "json", "jsonl")


@dataclass
class Column:
    key: str
    title: str
    fmt: Callable[[Any], str] | None = None
    align: str = "right"  # or "left"

    def render(self, row: dict[str, Any]) -> str:
        value = row.get(self.key)
        if missing(value):
            return NA
        return self.fmt(value) if self.fmt else str(value)


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    cells = [[c.render(r) for c in columns] for r in rows]
    widths = [max([len(c.title)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if c.align == "right" else v.ljust(w) for v, w, c in zip(values, widths, columns)]
        return "| " + " | ".join(parts) + " |"
    sep = "| " + " | ".join(
        ("-" * (w - 1) + ":") if c.align == "right" else "-" * w for w, c in zip(widths, columns)
    ) + " |"
    return "\n".join([line([c.title for c in columns]), sep, *(line(r) for r in cells)])


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def emit(rows: Iterable[dict[str, Any]], columns: Sequence[Column], fmt: str,
         *, json_rows: Iterable[dict[str, Any]] | None = None) -> None:
    """Print rows in the chosen format. ``json_rows`` (default: ``rows``) are the full records
    for json/jsonl, where every key is kept, not only the table's columns."""
    rows = list(rows)
    if fmt in ("json", "jsonl"):
        records = [{k: _jsonable(v) for k, v in r.items()} for r in (json_rows if json_rows is not None else rows)]
        if fmt == "json":
            click.echo(json.dumps(records, indent=2, default=str))
        else:
            for r in records:
                click.echo(json.dumps(r, default=str))
        return
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow([c.key for c in columns])
        for r in rows:
            writer.writerow(["" if r.get(c.key) is None else r.get(c.key) for c in columns])
        click.echo(buf.getvalue().rstrip("\n"))
        return
    click.echo(render_table(rows, columns))


def format_option(default: str = "table", choices: Sequence[str] = FORMATS) -> Callable[[Any], Any]:
    return click.option(
        "-o", "--output", "fmt", type=click.Choice(list(choices)), default=default, show_default=True,
        help="Output format.",
    )
