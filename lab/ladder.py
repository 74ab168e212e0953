"""The ladder view's data: one row per quantization of a base model, with the figures a user
right-sizes by — file size, speed, memory, fidelity and task accuracy — from the store alone.
Speed and memory come through :mod:`lab.select`, at one configuration for every row.

A figure that was never measured is None (shown as "n/a"), never 0.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

from lab.gguf_info import est_rss_ratio
from lab.report.costs import row_cost
from lab.select import select

if TYPE_CHECKING:
    from lab.store import Store


def _newest_quality(store: "Store", model_id: str, references: list[str], machine_id: str | None) -> dict[str, Any] | None:
    where, params = "model_id = ?", [model_id]
    if references:
        where += f" and reference_model_id in ({', '.join('?' for _ in references)})"
        params += references
    if machine_id:
        where += " and machine_id = ?"
        params.append(machine_id)
    # the preferred reference first (the order given), then the newest measurement
    order = "created_at desc"
    if references:
        cases = " ".join(f"when ? then {i}" for i, _ in enumerate(references))
        order = f"case reference_model_id {cases} else {len(references)} end, created_at desc"
        params += references
    rows = store.query(f"select * from quality where {where} order by {order} limit 1", params)
    return rows[0] if rows else None


def _newest_eval(store: "Store", model_id: str, suite: str | None, constrained: bool | None,
                 machine_id: str | None) -> dict[str, Any] | None:
    where, params = "model_id = ?", [model_id]
    if suite is not None:
        where += " and suite = ?"
        params.append(suite)
    if constrained is not None:
        where += " and constrained = ?"
        params.append(int(constrained))
    if machine_id:
        where += " and machine_id = ?"
        params.append(machine_id)
    rows = store.query(f"select * from eval_runs where {where} order by created_at desc limit 1", params)
    return rows[0] if rows else None


def ladder_models(store: "Store", base_model_id: str) -> list[dict[str, Any]]:
    """The base model and every model registered as built from it, largest file first."""
    return store.query(
        "select * from models where id = ? or base_model_id = ? order by coalesce(file_size, model_size) desc",
        [base_model_id, base_model_id])


def ladder_table(store: "Store", base_model_id: str, *, machine_id: str | None = None,
                 reference_model_id: str | None = None, suite: str | None = None,
                 constrained: bool | None = None, config: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per quant of ``base_model_id`` (the base included), largest first.

    Keys: ``model_id``, ``model_filename``, ``file_type``, ``is_base``, ``file_size`` (bytes of
    the file), ``model_size`` (bytes of the weights, as llama.cpp counts them), ``pp`` / ``tg``
    (t/s) with ``pp_test`` / ``tg_test`` naming the tests and ``config`` the configuration
    (:meth:`lab.select.Config.label`) they were measured at, ``peak_rss_bytes`` (the largest of
    those tests), ``kld_mean``, ``kld_p99``, ``ppl``, ``ppl_ratio``, ``same_top_p`` (the newest
    quality row, against ``reference_model_id`` when given, else preferring a reference inside
    the ladder: F16/BF16/F32 first), ``accuracy``, ``accuracy_ci_low``, ``accuracy_ci_high``,
    ``format_valid_rate``, ``eval_suite``, ``eval_constrained`` (the newest eval run, filtered by
    ``suite`` / ``constrained`` when given), ``n_fallback`` (tensors that fell back to another
    type when quantized), ``usd_per_mtok`` / ``cost_missing`` (cost per 1M generated tokens at
    that tg speed under its machine's cost settings, see :func:`lab.report.costs.row_cost`).
    Anything not measured is None. ``machine_id`` restricts speed,
    memory, quality and accuracy to one machine.

    Speed and memory come from ONE configuration and one pp / tg test for every row (see
    :func:`lab.select.select` with ``common``): pp512 / tg128 when measured, and the
    configuration measured on the most quants, else ``config``. A quant measured only at other
    configurations shows no speed rather than a figure that cannot be compared.
    """
    models = ladder_models(store, base_model_id)
    if reference_model_id:
        references = [reference_model_id]
    else:
        rank = {"F32": 0, "BF16": 1, "F16": 1}
        refs = sorted(models, key=lambda m: (rank.get((m.get("file_type") or "").upper(), 2),
                                             -(m.get("file_size") or m.get("model_size") or 0)))
        references = [m["id"] for m in refs]
    speeds = {s.model_id: s for s in select(store, machine_id=machine_id, model_ids=[m["id"] for m in models],
                                            any_size=True, common=True, config=config)}
    out = []
    settings: dict[str, dict[str, Any]] = {}
    for m in models:
        sel = speeds.get(m["id"])
        pp, tg = (sel.pp, sel.tg) if sel else (None, None)
        measured = [r for r in (pp, tg) if r and r.get("peak_rss_bytes") is not None]
        peak = max(measured, key=lambda r: r["peak_rss_bytes"]) if measured else None
        q = _newest_quality(store, m["id"], [r for r in references if r != m["id"]], machine_id)
        e = _newest_eval(store, m["id"], suite, constrained, machine_id)
        cost = row_cost(store, {"model_filename": m.get("model_filename"), "machine_id": sel.machine_id if sel else None,
                                "tg_ts": tg["avg_ts"] if tg else None, "j_per_token": tg.get("j_per_token") if tg else None},
                        settings_cache=settings)
        fallbacks = json.loads(m["fallback_tensors"]) if m.get("fallback_tensors") else None
        out.append({
            "model_id": m["id"],
            "model_filename": m.get("model_filename"),
            "file_type": m.get("file_type"),
            "is_base": m["id"] == base_model_id,
            "file_size": m.get("file_size"),
            "model_size": m.get("model_size"),
            "pp": pp["avg_ts"] if pp else None,
            "pp_test": pp["test"] if pp else None,
            "tg": tg["avg_ts"] if tg else None,
            "tg_test": tg["test"] if tg else None,
            "config": sel.config.label() if sel and (pp or tg) else None,
            "other_configs": sel.other_configs if sel else 0,
            "peak_rss_bytes": peak["peak_rss_bytes"] if peak else None,
            # the estimate for the same test as that peak, over the peak
            "est_rss_ratio": est_rss_ratio(peak) if peak else None,
            "kld_mean": q["kld_mean"] if q else None,
            "kld_p99": q["kld_p99"] if q else None,
            "ppl": q["ppl"] if q else None,
            "ppl_ratio": q["ppl_ratio"] if q else None,
            "same_top_p": q["same_top_p"] if q else None,
            "reference_model_id": q["reference_model_id"] if q else None,
            "accuracy": e["accuracy"] if e else None,
            "accuracy_ci_low": e["accuracy_ci_low"] if e else None,
            "accuracy_ci_high": e["accuracy_ci_high"] if e else None,
            "format_valid_rate": e["format_valid_rate"] if e else None,
            "eval_suite": e["suite"] if e else None,
            "eval_constrained": bool(e["constrained"]) if e else None,
            "n_fallback": len(fallbacks) if fallbacks is not None else None,
            "usd_per_mtok": cost["usd_per_mtok"],
            "cost_missing": cost["cost_missing"],
        })
    return out


def quality_by_model(store: "Store", *, machine_id: str | None = None) -> dict[str, dict[str, Any]]:
    """The newest ``quality`` row of every model (for a Library or Results column), by model id,
    in one query. Models never measured are absent."""
    where, params = "", []
    if machine_id:
        where, params = "where machine_id = ?", [machine_id]
    rows = store.query(
        "select * from (select *, row_number() over (partition by model_id order by created_at desc) as rn "
        f"from quality {where}) where rn = 1", params)
    return {r["model_id"]: {k: v for k, v in r.items() if k != "rn"} for r in rows}


def accuracy_by_model(store: "Store", *, suite: str | None = None, constrained: bool | None = None,
                      machine_id: str | None = None) -> dict[str, dict[str, Any]]:
    """The newest ``eval_runs`` row of every model (optionally for one suite / constraint
    setting / machine), by model id, in one query. Models never evaluated are absent."""
    conds, params = [], []
    if suite is not None:
        conds.append("suite = ?")
        params.append(suite)
    if constrained is not None:
        conds.append("constrained = ?")
        params.append(int(constrained))
    if machine_id:
        conds.append("machine_id = ?")
        params.append(machine_id)
    where = f"where {' and '.join(conds)}" if conds else ""
    rows = store.query(
        "select * from (select *, row_number() over (partition by model_id order by created_at desc) as rn "
        f"from eval_runs {where}) where rn = 1", params)
    return {r["model_id"]: {k: v for k, v in r.items() if k != "rn"} for r in rows}
