"""Cost per million generated tokens: a local model on this machine against an endpoint.

Local: (hardware amortised per busy hour + energy per hour at the power price) divided by the
tokens generated per hour at the measured t/s. The machine's price is spread over the hours it
generates in its lifetime (lifetime x 8766 h x utilization). Energy comes from the measured J per
token where the machine has an energy counter, else from the user's ``--watts`` figure; the
result says which. A part that cannot be known makes the total None ("n/a"), never 0.

Endpoint: its prices per million input and output tokens, applied to the token counts an eval
actually used (the prompts' tokens are part of what producing the answers cost).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from lab.errors import LabError

if TYPE_CHECKING:
    from lab.store import Store

HOURS_PER_YEAR = 8766.0  # 365.25 days
J_PER_KWH = 3.6e6
SETTINGS = ("price_usd", "lifetime_years", "utilization", "power_usd_per_kwh", "watts")


class CostError(LabError):
    """Cost settings that cannot be used."""


def _check(values: dict[str, float | None]) -> None:
    rules = {
        "price_usd": (lambda v: v >= 0, "--price must be 0 or more (USD)"),
        "lifetime_years": (lambda v: v > 0, "--lifetime-years must be more than 0"),
        "utilization": (lambda v: 0 < v <= 1, "--utilization is the busy share of the time, more than 0 and at most 1"),
        "power_usd_per_kwh": (lambda v: v >= 0, "--power-price must be 0 or more (USD per kWh)"),
        "watts": (lambda v: v > 0, "--watts must be more than 0"),
    }
    for key, value in values.items():
        ok, message = rules[key]
        if value is not None and not (value == value and value != float("inf") and ok(value)):
            raise CostError(message)


def set_machine_costs(store: "Store", machine_id: str, **values: float | None) -> dict[str, Any]:
    """Store the given cost settings on one machine row (others unchanged); returns them all."""
    given = {k: v for k, v in values.items() if v is not None}
    unknown = set(given) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown cost settings {sorted(unknown)}")
    if not given:
        raise CostError("Give at least one of --price, --lifetime-years, --utilization, --power-price, --watts")
    _check(given)
    with store.db.conn:
        store.db["machines"].update(machine_id, given)
    row = store.get("machines", machine_id) or {}
    return {k: row.get(k) for k in SETTINGS}


@dataclass
class LocalCost:
    """USD per 1M generated tokens on one machine at one speed; None where unknown."""

    tokens_per_s: float
    hardware_usd_per_mtok: float | None
    energy_usd_per_mtok: float | None
    usd_per_mtok: float | None
    energy_source: str | None  # "measured J/token", "--watts 65", or None
    missing: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def local_cost(settings: dict[str, Any], tokens_per_s: float, j_per_token: float | None = None) -> LocalCost:
    """Cost per 1M generated tokens at ``tokens_per_s`` under a machine's cost settings."""
    if not tokens_per_s or tokens_per_s <= 0:
        raise ValueError("tokens_per_s must be positive")
    tokens_per_hour = tokens_per_s * 3600.0
    missing: list[str] = []
    hardware = None
    price, years, util = settings.get("price_usd"), settings.get("lifetime_years"), settings.get("utilization")
    if price is None or years is None or util is None:
        missing += [flag for flag, v in (("--price", price), ("--lifetime-years", years), ("--utilization", util))
                    if v is None]
    else:
        per_busy_hour = price / (years * HOURS_PER_YEAR * util)
        hardware = per_busy_hour / tokens_per_hour * 1e6
    energy, source = None, None
    power_price = settings.get("power_usd_per_kwh")
    if power_price is None:
        missing.append("--power-price")
    elif j_per_token is not None:
        energy, source = j_per_token * 1e6 / J_PER_KWH * power_price, "measured J/token"
    elif settings.get("watts") is not None:
        watts = settings["watts"]
        energy, source = watts / 1000.0 * power_price / tokens_per_hour * 1e6, f"--watts {watts:g}"
    else:
        missing.append("--watts (no energy counter measured J/token)")
    total = hardware + energy if hardware is not None and energy is not None else None
    return LocalCost(tokens_per_s, hardware, energy, total, source, missing)


def endpoint_cost(price_in_per_mtok: float | None, price_out_per_mtok: float | None,
                  n_prompt_tokens: int | None, n_generated: int | None) -> dict[str, float | None]:
    """What an endpoint charged for a run (``usd``) and per 1M generated tokens; None where a
    price or a token count is unknown."""
    if None in (price_in_per_mtok, price_out_per_mtok, n_prompt_tokens, n_generated):
        return {"usd": None, "usd_per_mtok": None}
    usd = (n_prompt_tokens * price_in_per_mtok + n_generated * price_out_per_mtok) / 1e6  # type: ignore[operator]
    return {"usd": usd, "usd_per_mtok": usd / n_generated * 1e6 if n_generated else None}  # type: ignore[operator]


def local_costs(store: "Store", machine_id: str) -> list[dict[str, Any]]:
    """Per model, the newest tg result on this machine (depth 0) and its cost per 1M tokens."""
    machine = store.get("machines", machine_id) or {}
    rows = store.query(
        "select model_id, model_filename, test, avg_ts, j_per_token, test_time from results "
        "where machine_id = ? and n_gen > 0 and n_prompt = 0 and n_depth = 0 and avg_ts > 0 "
        "order by test_time", [machine_id])
    newest = {r["model_id"]: r for r in rows}
    out = []
    for row in newest.values():
        cost = local_cost(machine, row["avg_ts"], row.get("j_per_token"))
        out.append({"model": row["model_filename"], "test": row["test"], **cost.as_dict()})
    return out


def eval_run_cost(store: "Store", eval_run_id: str) -> dict[str, Any]:
    """An endpoint eval run's token counts and cost from its endpoint's prices."""
    (run,) = store.query("select * from eval_runs where id = ?", [eval_run_id])
    endpoint = store.get("endpoints", run["model_id"]) if run.get("model_id") else None
    if endpoint is None:
        raise CostError(f"eval run {eval_run_id[-10:]} is not an endpoint's run")
    (tokens,) = store.query(
        "select sum(n_prompt_tokens) as n_in, sum(n_tokens) as n_out, "
        "sum(n_prompt_tokens is null and status = 'ok') as unknown from eval_items where eval_run_id = ?",
        [eval_run_id])
    n_in, n_out = tokens["n_in"], tokens["n_out"]
    if tokens["unknown"]:  # the API did not report usage for some answers
        n_in = n_out = None
    return {"endpoint": endpoint["name"], "n_prompt_tokens": n_in, "n_generated": n_out,
            **endpoint_cost(endpoint["price_in_per_mtok"], endpoint["price_out_per_mtok"], n_in, n_out)}
