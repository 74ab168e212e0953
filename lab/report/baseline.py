"""Every candidate against a baseline (``endpoint:NAME``, the model a team calls today, or a
local model): the accuracy difference on the same suite items with its 95% interval and the
exact McNemar verdict (:mod:`lab.evals.paired`), the latency ratio and the cost ratio.

Ratios are candidate over baseline, so below 1 means the candidate is faster or cheaper.
Latency is compared on the chat test's time to first token and end-to-end time when both have
one; the time per generated token (baseline t/s over candidate t/s, from tg — or from the chat
stream's t/s when either lacks a tg test) is given beside it, and each comparison says which
figures it used. A figure either side lacks leaves its ratio None (NA).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from lab.errors import LabError
from lab.evals.paired import CompareError, pair
from lab.report.costs import row_cost
from lab.units import NA

if TYPE_CHECKING:
    from lab.store import Store

ENDPOINT_PREFIX = "endpoint:"


class BaselineError(LabError):
    """A baseline that names no stored model or endpoint, or more than one."""


def _newest_chat(store: "Store", model_id: str) -> dict[str, Any]:
    rows = store.query("select * from results where model_id = ? and test = 'chat' "
                       "and (ttft_ms is not null or avg_ts is not null) order by test_time desc, id desc limit 1",
                       [model_id])
    return rows[0] if rows else {}


def resolve_baseline(store: "Store", ref: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The baseline's figures as a model-table-like row: a candidate row when ``ref`` names one
    (file name, path or model id prefix), else the registered endpoint ``endpoint:NAME`` with
    its newest chat result and its cost from its prices."""
    if ref.startswith(ENDPOINT_PREFIX):
        from lab.endpoints import get_endpoint

        endpoint = get_endpoint(store, ref[len(ENDPOINT_PREFIX):])
        found = [r for r in rows if r.get("model_id") == endpoint.id]
        if found:
            return dict(found[0])
        chat = _newest_chat(store, endpoint.id)
        row: dict[str, Any] = {"model_id": endpoint.id, "model_filename": endpoint.label, "machine_id": None,
                               "tg_ts": None, "ttft_ms": chat.get("ttft_ms"), "e2e_ms": chat.get("e2e_ms"),
                               "chat_ts": chat.get("avg_ts")}
        row.update(row_cost(store, row))
        return row
    found = [r for r in rows if ref in (r.get("model_filename"), r.get("path"))
             or (len(ref) >= 6 and (r.get("model_id") or "").startswith(ref))]
    if not found:
        raise BaselineError(f"No candidate is called {ref!r}; give a model file name, its path, a model id "
                            "prefix, or endpoint:NAME")
    if len({r.get("model_id") for r in found}) > 1:
        raise BaselineError(f"{ref!r} names {len(found)} models; give more of the model id")
    return dict(found[0])


def _items(store: "Store", eval_run_id: str) -> dict[str, bool]:
    rows = store.query("select item_id, correct from eval_items where eval_run_id = ? and correct is not null",
                       [eval_run_id])
    return {r["item_id"]: bool(r["correct"]) for r in rows}


def _baseline_eval(store: "Store", model_id: str, suite: str | None) -> dict[str, Any] | None:
    where, params = "eval_runs.model_id = ? and coalesce(runs.status, 'ok') = 'ok'", [model_id]
    if suite:
        where += " and eval_runs.suite = ?"
        params.append(suite)
    rows = store.query(f"select eval_runs.* from eval_runs left join runs on runs.id = eval_runs.run_id "
                       f"where {where} order by eval_runs.created_at desc, eval_runs.id desc limit 1", params)
    return rows[0] if rows else None


def _ratio(value: Any, base: Any) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return float(value) / float(base)


def short_verdict(paired: dict[str, Any] | None) -> str | None:
    """The McNemar verdict in a few words for a table cell ("not distinguishable (p=0.18)")."""
    if not paired:
        return None
    p = paired["mcnemar_exact_p"]
    if p >= 0.05:
        return f"not distinguishable (p={p:.2f})"
    better = "candidate" if paired["only_a"] > paired["only_b"] else "baseline"
    return f"{better} more accurate (p={p:.2g})"


def compare_to_baseline(store: "Store", row: Mapping[str, Any], base: Mapping[str, Any],
                        base_label: str) -> dict[str, Any]:
    """One candidate row against the baseline row: ``accuracy`` (the paired comparison's
    dict, difference = candidate minus baseline, or None with ``accuracy_note`` saying why),
    ``ttft_ratio``, ``e2e_ratio``, ``token_time_ratio`` with ``token_time_basis``, and
    ``cost_ratio``."""
    out: dict[str, Any] = {"accuracy": None, "accuracy_note": None}
    if not row.get("eval_run_id"):
        out["accuracy_note"] = "the candidate has no eval run"
    else:
        base_run = _baseline_eval(store, base["model_id"], row.get("eval_suite"))
        if base_run is None:
            out["accuracy_note"] = f"{base_label} has no eval run on suite {row.get('eval_suite')}"
        else:
            mine, theirs = _items(store, row["eval_run_id"]), _items(store, base_run["id"])
            try:
                if not mine or not theirs:
                    raise CompareError(f"{'the candidate' if not mine else base_label}'s eval run stored no "
                                       "scored items to pair")
                paired = pair(row.get("model_filename") or "candidate", mine, base_label, theirs)
                out["accuracy"] = paired.as_dict()
                out["baseline_eval_run_id"] = base_run["id"]
            except CompareError as exc:
                out["accuracy_note"] = str(exc)
    out["ttft_ratio"] = _ratio(row.get("ttft_ms"), base.get("ttft_ms"))
    out["e2e_ratio"] = _ratio(row.get("e2e_ms"), base.get("e2e_ms"))
    # time per token: baseline speed over candidate speed (below 1: the candidate is faster)
    if row.get("tg_ts") and base.get("tg_ts"):
        out["token_time_ratio"], out["token_time_basis"] = _ratio(base["tg_ts"], row["tg_ts"]), "tg t/s"
    elif (row.get("chat_ts") or row.get("tg_ts")) and base.get("chat_ts"):
        speed = row.get("chat_ts") or row.get("tg_ts")
        basis = "chat t/s" if row.get("chat_ts") else "candidate tg t/s against baseline chat t/s"
        out["token_time_ratio"], out["token_time_basis"] = _ratio(base["chat_ts"], speed), basis
    else:
        out["token_time_ratio"], out["token_time_basis"] = None, None
    out["cost_ratio"] = _ratio(row.get("usd_per_mtok"), base.get("usd_per_mtok"))
    return out


def add_baseline(store: "Store", rows: list[dict[str, Any]], ref: str,
                 known: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Compare every row with the baseline ``ref`` (in place: ``vs_baseline`` on each row,
    ``is_baseline`` on the baseline's own row); returns the baseline's figures and how they
    are compared. ``known`` (default: ``rows``) are the rows the baseline may be found in."""
    base = resolve_baseline(store, ref, known if known is not None else rows)
    label = base.get("model_filename") or ref
    for row in rows:
        row["is_baseline"] = row.get("model_id") == base.get("model_id")
        row["vs_baseline"] = None if row["is_baseline"] else compare_to_baseline(store, row, base, label)
    return {"ref": ref, "label": label, "model_id": base.get("model_id"), "ttft_ms": base.get("ttft_ms"),
            "e2e_ms": base.get("e2e_ms"), "tg_ts": base.get("tg_ts"), "chat_ts": base.get("chat_ts"),
            "usd_per_mtok": base.get("usd_per_mtok"), "cost_missing": base.get("cost_missing"),
            "method": ("accuracy: paired on the same suite items, difference = candidate - baseline, 95% CI by "
                       "Newcombe method 10, exact McNemar test; latency: chat TTFT and e2e ratios (candidate / "
                       "baseline) where both ran the chat test, time per generated token from tg t/s (or the "
                       "chat stream's t/s) otherwise; cost: USD per 1M generated tokens, candidate / baseline")}


def _times(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}"


def baseline_cells(row: dict[str, Any]) -> dict[str, str]:
    """The baseline comparison of one recommend row as table cells: accuracy difference in
    points with its interval, the McNemar verdict, latency ratios (naming what they are) and
    the cost ratio."""
    if row.get("is_baseline"):
        return {"vs_accuracy": "baseline", "vs_verdict": "", "vs_latency": "", "vs_cost": ""}
    vs = row.get("vs_baseline") or {}
    acc = vs.get("accuracy")
    if acc and acc["difference"] is not None:
        low, high = acc["difference_ci95"] or (None, None)
        ci = f" [{low * 100:+.1f}, {high * 100:+.1f}]" if low is not None else ""
        accuracy = f"{acc['difference'] * 100:+.1f} pts{ci} n={acc['n']}"
    else:
        accuracy = f"n/a ({vs.get('accuracy_note')})" if vs.get("accuracy_note") else NA
    parts = []
    if vs.get("ttft_ratio") is not None or vs.get("e2e_ratio") is not None:
        parts.append(f"TTFT {_times(vs.get('ttft_ratio'))} e2e {_times(vs.get('e2e_ratio'))}")
    if vs.get("token_time_ratio") is not None:
        parts.append(f"per token {_times(vs['token_time_ratio'])} ({vs['token_time_basis']})")
    return {"vs_accuracy": accuracy, "vs_verdict": short_verdict(acc) or NA,
            "vs_latency": "; ".join(parts) or NA, "vs_cost": _times(vs.get("cost_ratio"))}
