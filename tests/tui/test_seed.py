"""The app tests' seeded database holds rows that agree with each other, as the bench, quality
and eval commands would have stored them."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from lab.store import Store


def test_seeded_rows_agree_with_their_repetitions_samples_and_runs(seeded_db: Path) -> None:
    store = Store(seeded_db)
    try:
        results = store.results()
        assert len(results) == 12
        for r in results:
            ns = json.loads(r["samples_ns"])
            ts = [(r["n_prompt"] + r["n_gen"]) * 1e9 / x for x in ns]
            assert r["repetitions"] == len(ns) == len(json.loads(r["samples_ts"])) == 5
            assert r["avg_ns"] == pytest.approx(statistics.fmean(ns))
            assert r["avg_ts"] == pytest.approx(statistics.fmean(ts))
            assert r["stddev_ts"] == pytest.approx(statistics.stdev(ts))
            assert r["noisy"] == int(r["cv"] > 0.05)
            window = [s for s in store.samples(r["run_id"]) if s["test"] == r["test"]]
            assert window and r["peak_rss_bytes"] == max(s["rss_bytes"] for s in window)
            assert r["mean_cpu_percent"] == pytest.approx(statistics.fmean(s["cpu_percent"] for s in window))
        runs = store.runs(kind="bench")
        assert len(runs) == 6
        for run in runs:
            rows = [r for r in results if r["run_id"] == run["id"]]
            assert run["status"] == "ok" and run["peak_rss_bytes"] == max(r["peak_rss_bytes"] for r in rows)
            assert run["started_at"] < min(r["test_time"] for r in rows) <= run["finished_at"]
        for ev in store.query("select * from eval_runs"):
            items = store.query("select * from eval_items where eval_run_id = ?", [ev["id"]])
            assert len(items) == ev["n_items"] and sum(i["correct"] for i in items) == ev["n_correct"]
            assert store.get("runs", ev["run_id"])["kind"] == "eval"
        for q in store.query("select * from quality"):
            assert store.get("runs", q["run_id"])["kind"] == "quality"
    finally:
        store.close()
