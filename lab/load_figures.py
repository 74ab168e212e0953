"""The figures of a load level, shared by the engine's load and an endpoint's: the latency
objective, each request's figures, a level's percentiles, goodput and SLO attainment, and the
search for the largest level that keeps the objective."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

from lab.stats import mean, percentile

ATTAINMENT_TARGET = 95.0  # percent of requests within the objective for a level to pass


@dataclass(frozen=True)
class Objective:
    """Latency objectives per request (None: not part of the objective)."""

    ttft_ms: float | None = None
    itl_p95_ms: float | None = None  # the request's own 95th-percentile gap between tokens
    e2e_ms: float | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.itl_p95_ms, self.e2e_ms))

    def to_json(self) -> str:
        """The stored form (``slo`` columns, :func:`lab.select.objective_key`)."""
        from lab.select import objective_key

        return objective_key(self.ttft_ms, self.itl_p95_ms, self.e2e_ms)

    @classmethod
    def from_json(cls, text: str | None) -> "Objective":
        return cls(**json.loads(text)) if text else cls()

    def describe(self) -> str:
        parts = [f"{label} ≤ {value:g} ms" for label, value in
                 (("TTFT", self.ttft_ms), ("ITL p95", self.itl_p95_ms), ("e2e", self.e2e_ms)) if value is not None]
        return ", ".join(parts) or "no objective"

    def meets(self, request: dict[str, Any]) -> bool:
        """Whether one request (a ``load_requests`` row's figures, in ms) met every objective."""
        if request.get("status") != "ok":
            return False
        checks = ((self.ttft_ms, request.get("ttft_ms")), (self.itl_p95_ms, request.get("itl_p95_ms")),
                  (self.e2e_ms, request.get("e2e_ms")))
        return all(limit is None or value is None or value <= limit for limit, value in checks)


# --- figures ------------------------------------------------------------------------------------


def request_figures(record: dict[str, Any]) -> dict[str, Any]:
    """A child's request record (ns) as ``load_requests`` figures (ms)."""
    def ms(ns: Any) -> float | None:
        return None if ns is None else ns / 1e6

    gaps = [g / 1e6 for g in record.get("gaps_ns") or []]
    return {
        "request_index": record["index"], "user": record.get("user"), "arrival_ms": ms(record.get("arrival_ns")),
        "queue_ms": ms(record.get("queue_ns")), "ttft_ms": ms(record.get("ttft_ns")), "e2e_ms": ms(record.get("e2e_ns")),
        "itl_p95_ms": percentile(gaps, 95), "gaps_ms": json.dumps([round(g, 4) for g in gaps]),
        "n_prompt_tokens": record.get("n_prompt_tokens"), "n_generated": record.get("n_generated"),
        "status": record["status"], "error": record.get("error"),
    }


def level_figures(requests: list[dict[str, Any]], level_s: float, objective: Objective) -> dict[str, Any]:
    """A level's result columns from its requests (``request_figures`` rows, ``meets_slo`` set).
    Rates are over the level's whole span, from its start until the last request ended."""
    done = [r for r in requests if r["status"] == "ok"]
    ttft = [r["ttft_ms"] for r in done if r["ttft_ms"] is not None]
    e2e = [r["e2e_ms"] for r in done if r["e2e_ms"] is not None]
    gaps = [g for r in done for g in json.loads(r["gaps_ms"])]
    queue = [r["queue_ms"] for r in requests if r.get("queue_ms") is not None]
    met = sum(1 for r in requests if r["meets_slo"])
    generated = sum(int(r["n_generated"] or 0) for r in done)
    prompt_tokens = [r["n_prompt_tokens"] for r in done]
    span = level_s if level_s > 0 else None
    return {
        "load_requests": len(requests), "load_completed": len(done), "load_failed": len(requests) - len(done),
        "load_rps": len(done) / span if span else None, "output_tps": generated / span if span else None,
        "ttft_p50_ms": percentile(ttft, 50), "ttft_p95_ms": percentile(ttft, 95), "ttft_p99_ms": percentile(ttft, 99),
        "itl_p50_ms": percentile(gaps, 50), "itl_p95_ms": percentile(gaps, 95), "itl_p99_ms": percentile(gaps, 99),
        "e2e_p50_ms": percentile(e2e, 50), "e2e_p95_ms": percentile(e2e, 95), "e2e_p99_ms": percentile(e2e, 99),
        "queue_p95_ms": percentile(queue, 95), "ttft_ms": mean(ttft), "e2e_ms": mean(e2e),
        "goodput_rps": met / span if span else None,
        "slo_attainment": 100.0 * met / len(requests) if requests else None,
        "n_generated": generated, "n_prompts": len(requests),
        "n_prompt_tokens": sum(prompt_tokens) if None not in prompt_tokens else None,
        "slo": objective.to_json(), "avg_ns": None,
    }


def running_figures(done: list[dict[str, Any]]) -> dict[str, Any]:
    """Live percentiles over the requests finished so far in a level (for progress lines)."""
    ok = [d for d in done if d.get("status") == "ok"]
    ttft = [d["ttft_ns"] / 1e6 for d in ok if d.get("ttft_ns") is not None]
    gaps = [g / 1e6 for d in ok for g in d.get("gaps_ns") or []]
    return {"completed": len(ok), "failed": len(done) - len(ok), "ttft_p50_ms": percentile(ttft, 50),
            "ttft_p95_ms": percentile(ttft, 95), "itl_p50_ms": percentile(gaps, 50),
            "itl_p95_ms": percentile(gaps, 95)}


def level_key(level: dict[str, Any]) -> tuple[str, float]:
    return ("users", level["users"]) if level.get("users") is not None else ("rate", level["rate"])


def store_level_rows(store: Any, row: dict[str, Any], requests: list[dict[str, Any]]) -> None:
    """One level's result row and its requests (each tagged with the row's ids), stored together."""
    keep = {k: row[k] for k in ("run_id", "machine_id", "model_id", "test")}
    store.add_result_with_rows(row, "load_requests", [dict(r, **keep) for r in requests])


def passes(row: dict[str, Any]) -> bool:
    """Whether a level kept the objective: SLO attainment at or above the target."""
    return row.get("slo_attainment") is not None and row["slo_attainment"] >= ATTAINMENT_TARGET


def search_levels(probe: Callable[[float], bool], *, start: float, ceiling: float, integer: bool,
                  refine: int = 3) -> float:
    """The largest level that passes: doubling from ``start`` until a level fails or the ceiling
    is reached (the ceiling itself is tried), then bisection between the last pass and the first
    failure (to the unit for users; ``refine`` halvings, geometric, for rates). 0 when even
    ``start`` fails (for rates: after ``refine`` halvings below it)."""
    lo, hi = 0.0, None
    level = start
    while True:
        if probe(level):
            lo = level
            if level >= ceiling:
                return lo
            level = min(level * 2, ceiling)
        else:
            hi = level
            break
    if lo == 0 and not integer:  # even the start rate fails: look below it
        for _ in range(refine):
            level = round(hi / 2, 3)
            if probe(level):
                lo = level
                break
            hi = level
        else:
            return 0.0
    steps = 0
    while hi is not None:
        if integer:
            if hi - lo <= 1:
                break
            mid = float((int(lo) + int(hi)) // 2)
        else:
            if steps >= refine:
                break
            mid = float(f"{math.sqrt(lo * hi):.2g}")
            if mid <= lo or mid >= hi:
                break
        steps += 1
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return lo
