"""Cost per 1M generated tokens for a row of the model table or the ladder: a local model from
its machine's cost settings (``rightsizer machine set``) and its measured tg speed, an endpoint
from its prices and the token counts of its newest eval. None, with the reason, when it cannot
be computed (no machine price set, no tg speed measured, an endpoint without prices)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from lab.cost import eval_run_cost, local_cost

if TYPE_CHECKING:
    from lab.store import Store

ENDPOINT_PREFIX = "endpoint:"


def _endpoint_cost(store: "Store", model_id: str | None) -> dict[str, Any]:
    runs = store.query("select id from eval_runs where model_id = ? order by created_at desc, id desc limit 1",
                       [model_id]) if model_id else []
    if not runs:
        return {"usd_per_mtok": None, "cost_basis": None,
                "cost_missing": ["an eval run (the endpoint's cost comes from the tokens an eval used)"]}
    figures = eval_run_cost(store, runs[0]["id"])
    missing = [] if figures["usd_per_mtok"] is not None else ["endpoint prices or the API's token counts"]
    return {"usd_per_mtok": figures["usd_per_mtok"], "cost_basis": "endpoint prices x eval tokens",
            "cost_missing": missing}


def row_cost(store: "Store", row: Mapping[str, Any], *, settings_cache: dict[str, dict[str, Any]] | None = None,
             tg_key: str = "tg_ts") -> dict[str, Any]:
    """``usd_per_mtok`` (None when it cannot be computed), ``cost_basis`` (how: the energy
    source for a local model) and ``cost_missing`` (what is needed to compute it) for one row
    with ``model_filename``, ``model_id``, ``machine_id``, the tg speed under ``tg_key`` and
    ``j_per_token``."""
    if (row.get("model_filename") or "").startswith(ENDPOINT_PREFIX):
        return _endpoint_cost(store, row.get("model_id"))
    tg, machine_id = row.get(tg_key), row.get("machine_id")
    if not tg or tg <= 0 or not machine_id:
        return {"usd_per_mtok": None, "cost_basis": None, "cost_missing": ["a measured tg speed on this machine"]}
    cache = settings_cache if settings_cache is not None else {}
    if machine_id not in cache:
        cache[machine_id] = store.get("machines", machine_id) or {}
    cost = local_cost(cache[machine_id], float(tg), row.get("j_per_token"))
    basis = f"tg t/s, energy from {cost.energy_source}" if cost.energy_source else None
    return {"usd_per_mtok": cost.usd_per_mtok, "cost_basis": basis,
            "cost_missing": ["rightsizer machine set " + " ".join(cost.missing)] if cost.missing else []}


def add_costs(store: "Store", rows: list[dict[str, Any]], tg_key: str = "tg_ts") -> list[dict[str, Any]]:
    """Add :func:`row_cost`'s keys to every row (in place); returns the rows."""
    cache: dict[str, dict[str, Any]] = {}
    for row in rows:
        row.update(row_cost(store, row, settings_cache=cache, tg_key=tg_key))
    return rows
