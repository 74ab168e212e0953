"""Results side by side, with the difference in percent against a baseline."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from lab.errors import LabError
from lab.ids import short_id
from lab.report.common import bool_or_none, pct_diff

if TYPE_CHECKING:
    from lab.store import Store

_RESULT_SELECT = (
    "select results.*, machines.hostname as hostname, models.file_type as file_type, "
    "models.arch as arch, models.file_size as file_size, runs.status as run_status, runs.kind as run_kind "
    "from results left join runs on runs.id = results.run_id "
    "left join machines on machines.id = results.machine_id "
    "left join models on models.id = results.model_id "
)


@dataclass(frozen=True)
class Metric:
    """A figure shown side by side; ``higher_is_better`` says which way a difference is good."""

    key: str
    title: str
    higher_is_better: bool
    unit: str = ""  # "bytes", "ms", "t/s", "J"


COMPARE_METRICS: tuple[Metric, ...] = (
    Metric("avg_ts", "t/s", True, "t/s"),
    Metric("peak_rss_bytes", "peak RSS", False, "bytes"),
    Metric("peak_vram_bytes", "VRAM", False, "bytes"),
    Metric("j_per_token", "J/tok", False, "J"),
    Metric("ttft_ms", "TTFT ms", False, "ms"),
    Metric("itl_p50_ms", "ITL p50 ms", False, "ms"),
    Metric("itl_p95_ms", "ITL p95 ms", False, "ms"),
    Metric("itl_p99_ms", "ITL p99 ms", False, "ms"),
    Metric("e2e_ms", "e2e ms", False, "ms"),
)

_COMPARE_FIELDS = (
    "run_id", "test", "model_id", "model_filename", "model_type", "file_type", "file_size", "model_size",
    "model_n_params", "machine_id", "hostname", "backends", "n_threads", "n_gpu_layers", "n_batch", "n_ubatch",
    "n_prompt", "n_gen", "n_depth", "type_k", "type_v", "flash_attn", "repetitions", "stddev_ts", "cv",
    "est_memory_bytes", "test_time", "run_kind",
)


def resolve_results(store: "Store", ids: Sequence[str]) -> list[dict[str, Any]]:
    """The results named by ``ids``, in the order given.

    Each id is a result id, its short form (the last 10 hex digits) or any prefix or suffix of it;
    an id that names no result but names a run stands for every result of that run (in test
    order). An id that matches several results or runs, or none, raises LabError.
    """
    out: list[dict[str, Any]] = []
    for raw in ids:
        key = raw.strip().lower()
        if not key or not re.fullmatch(r"[0-9a-f]+", key):
            raise LabError(f"{raw!r} is not a result id (hex digits, as `rightsizer results -o json` shows them)")
        params = {"prefix": f"{key}%", "suffix": f"%{key}"}
        rows = store.query(_RESULT_SELECT + "where results.id like :prefix or results.id like :suffix", params)
        if len(rows) == 1:
            out.append(rows[0])
            continue
        if len(rows) > 1:
            raise LabError(f"Result id {raw!r} matches {len(rows)} results; give more of its digits")
        runs = store.query("select id from runs where id like :prefix or id like :suffix", params)
        if len(runs) > 1:
            raise LabError(f"Id {raw!r} matches {len(runs)} runs; give more of its digits")
        if not runs:
            raise LabError(f"No result or run has the id {raw!r}")
        run_rows = store.query(_RESULT_SELECT + "where results.run_id = ? order by results.test_time, results.id",
                               [runs[0]["id"]])
        if not run_rows:
            raise LabError(f"Run {raw!r} stored no results")
        out.extend(run_rows)
    return out


def compare(store: "Store", result_ids: list[str]) -> list[dict[str, Any]]:
    """Selected results side by side, each with the difference in percent against its baseline.

    The baseline of a row is the first selected result of the same test: with result ids of one
    test (the usual case) that is the first one given; with run ids, each test is compared with
    the same test of the first run. For every metric in :data:`COMPARE_METRICS` a row holds the
    figure (``avg_ts``, ``peak_rss_bytes`` ...) and ``<key>_diff_pct``, which is None when either
    figure was not measured (or the baseline is 0) and exactly 0.0 on the baseline itself.
    Each row also carries ``id``, ``short_id``, ``baseline_id``, ``is_baseline``, ``noisy``
    (bool or None) and the result's configuration (test, model, machine, threads, ...).
    """
    if not result_ids:
        raise LabError("Name at least one result id to compare")
    rows = resolve_results(store, result_ids)
    baselines: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in rows:
        if row["id"] in seen:
            continue
        seen.add(row["id"])
        base = baselines.setdefault(row["test"], row)
        rec: dict[str, Any] = {"id": row["id"], "short_id": short_id(row["id"])}
        rec.update({k: row.get(k) for k in _COMPARE_FIELDS})
        rec["noisy"] = bool_or_none(row.get("noisy"))
        rec["baseline_id"] = base["id"]
        rec["is_baseline"] = base is row
        for metric in COMPARE_METRICS:
            rec[metric.key] = row.get(metric.key)
            rec[f"{metric.key}_diff_pct"] = pct_diff(row.get(metric.key), base.get(metric.key))
        out.append(rec)
    return out

