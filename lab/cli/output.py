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

FORMATS = ("table", "md", "csv", "json", "jsonl")
NA = "n/a"


@dataclass
class Column:
    key: str
    title: str
    fmt: Callable[[Any], str] | None = None
    align: str = "right"  # or "left"

    def render(self, row: dict[str, Any]) -> str:
        value = row.get(self.key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return NA
        return self.fmt(value) if self.fmt else str(value)


def human_bytes(n: float | None) -> str:
    """1536 -> '1.50 KiB'; None -> 'n/a'."""
    if n is None:
        return NA
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"


def human_count(n: float | None) -> str:
    """134515008 -> '134.52 M' (llama-bench writes params this way)."""
    if n is None:
        return NA
    value = float(n)
    for unit in ("", " K", " M", " B", " T"):
        if abs(value) < 1000 or unit == " T":
            return f"{value:.2f}{unit}" if unit else f"{value:.0f}"
        value /= 1000
    return f"{value:.2f} T"


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
