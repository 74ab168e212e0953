"""``rightsizer machine set`` (a machine's price, lifetime, utilization, power price) and
``rightsizer cost``: USD per million generated tokens, local models against endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lab.cli.db import db_option, open_store
from lab.cli.output import Column, emit, format_option


def _usd(value: Any) -> str:
    return f"${value:.4f}"


COST_COLUMNS = [
    Column("model", "model", align="left"),
    Column("tokens_per_s", "t/s", lambda v: f"{v:.2f}"),
    Column("hardware_usd_per_mtok", "hardware /1M", _usd),
    Column("energy_usd_per_mtok", "energy /1M", _usd),
    Column("usd_per_mtok", "total /1M", _usd),
    Column("energy_source", "energy from", align="left"),
    Column("why", "missing", align="left"),
]


@click.group("machine")
@db_option
def machine() -> None:
    """This machine's cost settings."""


@machine.command("set")
@click.option("--price", type=float, default=None, metavar="USD", help="What the machine cost.")
@click.option("--lifetime-years", type=float, default=None, metavar="Y", help="Years it is used for.")
@click.option("--utilization", type=float, default=None, metavar="U", help="Share of the time it generates (0-1].")
@click.option("--power-price", type=float, default=None, metavar="USD_PER_KWH", help="Electricity price per kWh.")
@click.option("--watts", type=float, default=None, metavar="W",
              help="Power draw while generating, for machines without an energy counter.")
@db_option
def set_(price: float | None, lifetime_years: float | None, utilization: float | None, power_price: float | None,
         watts: float | None, db_path: Path | None) -> None:
    """Store cost settings on this machine (only the ones given change)."""
    from lab.cost import set_machine_costs
    from lab.quality import record_machine

    store = open_store(db_path)
    settings = set_machine_costs(store, record_machine(store), price_usd=price, lifetime_years=lifetime_years,
                                 utilization=utilization, power_usd_per_kwh=power_price, watts=watts)
    shown = ", ".join(f"{k} {'n/a' if v is None else f'{v:g}'}" for k, v in settings.items())
    click.echo(f"machine cost settings: {shown}")


@click.command("cost")
@format_option()
@db_option
def cost(fmt: str, db_path: Path | None) -> None:
    """USD per million generated tokens: every model's newest tg speed on this machine under
    its cost settings, and every endpoint's newest eval at its prices."""
    from lab.cost import eval_run_cost, local_costs
    from lab.quality import record_machine

    store = open_store(db_path)
    rows = local_costs(store, record_machine(store))
    newest: dict[str, dict[str, Any]] = {}
    for run in store.query("select * from eval_runs where model_filename like 'endpoint:%' order by created_at"):
        newest[run["model_id"]] = run
    for run in newest.values():
        figures = eval_run_cost(store, run["id"])
        rows.append({"model": run["model_filename"], "usd_per_mtok": figures["usd_per_mtok"],
                     "missing": [] if figures["usd_per_mtok"] is not None else ["prices or token counts"],
                     **{k: figures[k] for k in ("usd", "n_prompt_tokens", "n_generated")}})
    for row in rows:
        row["why"] = "; ".join(row.get("missing") or []) or None
    emit(rows, COST_COLUMNS, fmt, json_rows=[{k: v for k, v in r.items() if k != "why"} for r in rows])


COMMANDS = [machine, cost]
