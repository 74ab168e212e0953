"""The Results screen and its comparisons: filtered, paged queries in SQLite, chart points and a
run's detail.

No Textual here: these run in worker threads (each with its own ``Store``) or in tests.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Iterable

from lab.errors import LabError


FILTER_KEYS = ("model", "quant", "test", "machine", "since", "run")


def parse_filter(text: str) -> dict[str, str]:
    """``smol quant:Q4_1 test:tg128 since:2025-06-01`` -> Store.results keyword filters.
    Bare words filter the model. Raises LabError naming an unknown key."""
    out: dict[str, str] = {}
    bare = []
    for word in text.split():
        key, sep, value = word.partition(":")
        if sep and key.lower() in FILTER_KEYS and value:
            out[key.lower()] = value
        elif sep and key and key.lower() not in FILTER_KEYS:
            raise LabError(f"Unknown filter '{key}'; use {', '.join(k + ':' for k in FILTER_KEYS)} or a model name")
        else:
            bare.append(word)
    if bare:
        out["model"] = " ".join(bare)
    return out


def results_page(store: Any, filters: dict[str, str], order: str, descending: bool,
                 limit: int, offset: int, by_machine: bool = False) -> tuple[list[dict[str, Any]], bool]:
    """One page of results and whether another page follows (one extra row is read);
    ``by_machine`` keeps each host's results together."""
    rows = store.results(**filters, order=order, descending=descending, limit=limit + 1, offset=offset,
                         by_machine=by_machine)
    return rows[:limit], len(rows) > limit


def count_results(store: Any, filters: dict[str, str]) -> int | None:
    """How many results match, when the store can count them cheaply (else None)."""
    counter = getattr(store, "count_results", None)
    if counter is None:
        if not filters:
            return int(store.query("select count(*) as n from results")[0]["n"])
        return None
    return int(counter(**filters))


def results_by_id(store: Any, ids: Iterable[str]) -> list[dict[str, Any]]:
    """Result rows (with hostname and quant) in the order given."""
    rows = []
    machines: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for rid in ids:
        row = store.get("results", rid)
        if row is None:
            continue
        mid = row.get("machine_id")
        if mid not in machines:
            machines[mid] = store.get("machines", mid) if mid else None
        model_id = row.get("model_id")
        if model_id not in models:
            models[model_id] = store.get("models", model_id) if model_id else None
        machine, model = machines[mid] or {}, models[model_id] or {}
        row.update(hostname=machine.get("hostname"), file_type=model.get("file_type"),
                   file_size=model.get("file_size"), arch=model.get("arch"))
        rows.append(row)
    return rows


# metric key, label, lower is better (None: neither way is better, e.g. CPU use)
COMPARE_METRICS: list[tuple[str, str, bool | None]] = [
    ("avg_ts", "t/s", False),
    ("stddev_ts", "t/s stddev", True),
    ("cv", "CV", True),
    ("peak_rss_bytes", "peak RSS", True),
    ("est_memory_bytes", "est. memory", True),
    ("peak_vram_bytes", "peak VRAM", True),
    ("mean_cpu_percent", "mean CPU %", None),
    ("mean_power_w", "mean power W", True),
    ("j_per_token", "J/token", True),
    ("ttft_ms", "TTFT ms", True),
    ("itl_p50_ms", "ITL p50 ms", True),
    ("itl_p95_ms", "ITL p95 ms", True),
    ("e2e_ms", "e2e ms", True),
    ("model_size", "model size", None),
]


@dataclass
class ChartBar:
    label: str  # model file (quant)
    value: float
    n: int
    unit: str | None = None  # None: the chart's unit (t/s)


def chart_bars(store: Any, filters: dict[str, str], *, limit: int = 5000,
               tests: int = 3) -> tuple[dict[str, list[ChartBar]], int]:
    """Mean t/s per model/quant for the most frequent tests among the newest ``limit``
    matching results (the cap keeps the chart instant at any database size)."""
    rows = store.results(**filters, order="test_time", descending=True, limit=limit)
    counts: dict[str, int] = {}
    for r in rows:
        if r.get("avg_ts") is not None and r.get("n_seq") is None:
            counts[r["test"]] = counts.get(r["test"], 0) + 1
    chosen = sorted(counts, key=lambda t: (-counts[t], t))[:tests]
    groups: dict[str, dict[str, list[float]]] = {t: {} for t in chosen}
    for r in rows:
        if r["test"] in groups and r.get("avg_ts") is not None:
            label = r["model_filename"] or "n/a"
            if r.get("file_type") and r["file_type"] not in label:
                label += f" ({r['file_type']})"
            groups[r["test"]].setdefault(label, []).append(float(r["avg_ts"]))
    out = {
        test: sorted((ChartBar(label, statistics.fmean(v), len(v)) for label, v in by_label.items()),
                     key=lambda b: -b.value)
        for test, by_label in groups.items()
    }
    out.update(batched_curves(rows))
    out.update(load_curves(rows))
    return out, len(rows)


def batched_curves(rows: list[dict[str, Any]]) -> dict[str, list[ChartBar]]:
    """Generation speed against the number of sequences B for batched results: per model and
    row shape, one group of aggregate S_TG and one of S_TG per sequence, bars in order of B."""
    acc: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in rows:
        if r.get("n_seq") is None or r.get("s_tg") is None:
            continue
        shape = (f"pp{r['n_prompt']}+tg{r['n_gen']}" + (" pps" if r.get("pp_shared") else "")
                 + (" kvu" if r.get("kv_unified") else ""))
        acc.setdefault((r["model_filename"] or "n/a", shape), {}).setdefault(int(r["n_seq"]), []).append(float(r["s_tg"]))
    out: dict[str, list[ChartBar]] = {}
    for (model, shape), by_b in acc.items():
        bs = sorted(by_b)
        out[f"{model} {shape}: S_TG, all sequences"] = [
            ChartBar(f"B={b}", statistics.fmean(by_b[b]), len(by_b[b])) for b in bs]
        out[f"{model} {shape}: S_TG per sequence"] = [
            ChartBar(f"B={b}", statistics.fmean(by_b[b]) / b, len(by_b[b])) for b in bs]
    return out


def load_curves(rows: list[dict[str, Any]]) -> dict[str, list[ChartBar]]:
    """The throughput-latency curve of load results: per model, kind of level (users or rate)
    and objective, one group of output t/s and one of p95 TTFT (ms), bars in order of the level,
    each labelled with the level and its SLO attainment (the mean over the rows of that level)."""
    from lab.load_figures import Objective

    acc: dict[tuple[str, str, str], dict[float, list[dict[str, Any]]]] = {}
    for r in rows:
        users, rate = r.get("load_users"), r.get("load_rate")
        if users is None and rate is None:
            continue
        kind = "users" if users is not None else "rate"
        slo = Objective.from_json(r.get("slo")).describe()
        key = (r.get("model_filename") or "n/a", kind, slo)
        acc.setdefault(key, {}).setdefault(float(users if users is not None else rate), []).append(r)
    out: dict[str, list[ChartBar]] = {}
    for (model, kind, slo), by_level in acc.items():
        levels = sorted(by_level)
        tps, ttft = [], []
        for level in levels:
            level_rows = by_level[level]
            attained = [float(r["slo_attainment"]) for r in level_rows if r.get("slo_attainment") is not None]
            label = (f"u={level:g}" if kind == "users" else f"{level:g}/s") + (
                f" SLO {statistics.fmean(attained):.0f}%" if attained else " SLO n/a")
            values = [float(r["output_tps"]) for r in level_rows if r.get("output_tps") is not None]
            if values:
                tps.append(ChartBar(label, statistics.fmean(values), len(values)))
            values = [float(r["ttft_p95_ms"]) for r in level_rows if r.get("ttft_p95_ms") is not None]
            if values:
                ttft.append(ChartBar(label, statistics.fmean(values), len(values), unit="ms"))
        name = f"{model} load by {kind} ({slo})"
        if tps:
            out[f"{name}: output t/s"] = tps
        if ttft:
            out[f"{name}: TTFT p95"] = ttft
    return out


@dataclass
class ScatterPoint:
    label: str
    x: float  # file size, bytes
    y: float  # t/s


def scatter_points(store: Any, filters: dict[str, str], test_prefix: str = "tg",
                   limit: int = 5000) -> list[ScatterPoint]:
    """Speed against file size: one point per model file (mean t/s of its ``test_prefix``
    tests among the newest ``limit`` matching results)."""
    rows = store.results(**filters, order="test_time", descending=True, limit=limit)
    acc: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        size = r.get("file_size") or r.get("model_size")
        if r.get("avg_ts") is None or not size or not str(r["test"]).startswith(test_prefix):
            continue
        acc.setdefault((r["model_filename"], float(size)), []).append(float(r["avg_ts"]))
    return [ScatterPoint(label, size, statistics.fmean(v)) for (label, size), v in acc.items()]


def run_detail(store: Any, run_id: str) -> dict[str, Any] | None:
    """A run with its config, machine, model, results and samples."""
    import json

    run = store.get("runs", run_id)
    if run is None:
        return None
    try:
        config = json.loads(run.get("config") or "{}")
    except ValueError:
        config = {}
    return {
        "run": run, "config": config,
        "machine": store.get("machines", run["machine_id"]) if run.get("machine_id") else None,
        "model": store.get("models", run["model_id"]) if run.get("model_id") else None,
        "results": store.results(run=run_id, order="test_time"),
        "samples": store.samples(run_id),
    }


def series(samples: list[dict[str, Any]], key: str, scale: float = 1.0) -> list[float] | None:
    """One column of a run's samples as floats (None values skipped); None when all missing."""
    values = [float(s[key]) / scale for s in samples if s.get(key) is not None]
    return values or None
