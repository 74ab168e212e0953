"""``rightsizer endpoints``: register the OpenAI-compatible endpoints that local models are
measured against (``endpoint:NAME`` as a MODEL in ``eval`` and ``bench --chat``)."""

from __future__ import annotations

from pathlib import Path

import click

from lab.cli.db import db_option, open_store
from lab.cli.output import Column, emit, format_option


def _price(value: float | None) -> str:
    return f"${value:g}"


ENDPOINT_COLUMNS = [
    Column("name", "name", align="left"),
    Column("url", "url", align="left"),
    Column("model", "model", align="left"),
    Column("api_key_env", "key from", lambda v: f"${v}", align="left"),
    Column("price_in_per_mtok", "in /1M tok", _price),
    Column("price_out_per_mtok", "out /1M tok", _price),
]


@click.group("endpoints", invoke_without_command=True)
@db_option
@click.pass_context
def endpoints(ctx: click.Context) -> None:
    """OpenAI-compatible endpoints, by name (the API key is read from an environment variable
    at call time and never stored)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_)


@endpoints.command("add")
@click.argument("name")
@click.option("--url", required=True, help="Base URL of the API, e.g. https://api.openai.com/v1.")
@click.option("--model", "model_id", required=True, help="The API's model id, e.g. gpt-4o-mini.")
@click.option("--api-key-env", default=None, metavar="VAR",
              help="Environment variable that holds the API key (its name, not the key).")
@click.option("--price-in", type=float, default=None, metavar="USD", help="USD per million input tokens.")
@click.option("--price-out", type=float, default=None, metavar="USD", help="USD per million output tokens.")
@db_option
def add(name: str, url: str, model_id: str, api_key_env: str | None, price_in: float | None,
        price_out: float | None, db_path: Path | None) -> None:
    """Register endpoint NAME."""
    from lab.endpoints import add_endpoint

    endpoint = add_endpoint(open_store(db_path), name, url=url, model=model_id, api_key_env=api_key_env,
                            price_in=price_in, price_out=price_out)
    key = f", key from ${endpoint.api_key_env}" if endpoint.api_key_env else ", no key"
    click.echo(f"added {endpoint.label}: {endpoint.model} at {endpoint.url}{key}")


@endpoints.command("list")
@format_option()
@db_option
def list_(fmt: str = "table", db_path: Path | None = None) -> None:
    """List registered endpoints."""
    from lab.endpoints import list_endpoints

    rows = [e.as_row() for e in list_endpoints(open_store(db_path))]
    if not rows and fmt == "table":
        click.echo("No endpoints registered; add one with 'rightsizer endpoints add NAME --url URL --model ID'.")
        return
    emit(rows, ENDPOINT_COLUMNS, fmt)


@endpoints.command("rm")
@click.argument("name")
@db_option
def rm(name: str, db_path: Path | None) -> None:
    """Remove endpoint NAME from the list (its measurements stay)."""
    from lab.endpoints import remove_endpoint

    endpoint = remove_endpoint(open_store(db_path), name)
    click.echo(f"removed {endpoint.label} (its runs keep their results)")


COMMANDS = [endpoints]
