"""Load with a latency objective: real llama.cpp serving a tiny model with continuous batching in
an engine child, levels stored in real SQLite, the CLI run as a subprocess."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.engine.serving import arrival_offsets_ns
from lab.load import LoadOptions, Objective, run_load, search_levels
from lab.store import Store
from test_endpoints import SERVER_KEY, server  # noqa: F401  (the llama-cpp-python server fixture)

JSON_KEYS = {"requests", "completed", "failed", "output_tps", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms",
             "itl_p95_ms", "e2e_p95_ms", "goodput_rps", "slo_attainment"}


def _requests(store: Store, result_id: str) -> list[dict]:
    return store.query("select * from load_requests where result_id = ? order by request_index", [result_id])


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", "load", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_closed_loop_timings_add_up_and_every_request_is_accounted(tiny_gguf: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "lab.db")
    events: list[dict] = []
    outcome = run_load(LoadOptions(model=str(tiny_gguf), users=[1, 4], duration_s=1.5, max_tokens=12, threads=1,
                                   objective=Objective(ttft_ms=60_000)), store, on_event=events.append)
    assert outcome.status == "ok"
    u1, u4 = outcome.levels
    assert (u1["test"], u4["test"], u1["n_seq"], u4["n_seq"]) == ("load u1", "load u4", 1, 4)
    for row in (u1, u4):
        reqs = _requests(store, row["id"])
        assert len(reqs) == row["load_requests"] == row["load_completed"] + row["load_failed"] > 4
        assert row["load_failed"] == 0 and row["slo_attainment"] == 100.0
        for r in reqs:
            gaps = json.loads(r["gaps_ms"])
            assert len(gaps) == r["n_generated"] - 1 or len(gaps) == r["n_generated"]  # an EOG token ends it
            assert 1 <= r["n_generated"] <= 12 and r["n_prompt_tokens"] > 10
            # queue + (prefill to first token) + generation = end to end, from separate stamps
            assert 0 <= r["queue_ms"] <= r["ttft_ms"]
            # (the tolerance allows for a preempted thread on a busy machine)
            assert r["ttft_ms"] + sum(gaps) == pytest.approx(r["e2e_ms"], abs=25.0), r
        # the level's rates are over its span, from its start to its last request's end
        span_s = max(r["arrival_ms"] + r["e2e_ms"] for r in reqs) / 1000
        assert row["load_rps"] == pytest.approx(row["load_completed"] / span_s, rel=0.05)
        assert row["output_tps"] == pytest.approx(sum(r["n_generated"] for r in reqs) / span_s, rel=0.05)
        # peak RSS is the child's high-water mark for this level, within 5% of the monitor's samples
        sampled = store.query("select max(rss_bytes) m from samples where run_id = ? and test = ?",
                              [row["run_id"], row["test"]])[0]["m"]
        assert abs(row["peak_rss_bytes"] - sampled) / row["peak_rss_bytes"] < 0.05, (row["peak_rss_bytes"], sampled)
    # one user: each request is sent the moment the previous one ended
    reqs = _requests(store, u1["id"])
    for a, b in zip(reqs, reqs[1:]):
        assert b["arrival_ms"] == pytest.approx(a["arrival_ms"] + a["e2e_ms"], abs=0.01)
        assert b["queue_ms"] < 25, b
    # four users: the batch really held several sequences at once
    assert (u1["load_max_active"], u4["load_max_active"]) == (1, 4) and u4["load_mean_active"] > 1.5, u4
    assert u4["kv_bytes"] > u1["kv_bytes"] > 0
    live = [e for e in events if e["event"] == "load_progress" and e["test"] == "load u4"]
    assert live and max(e["active"] for e in live) == 4
    assert store.get("runs", outcome.run_id)["status"] == "ok"


def test_open_loop_arrivals_follow_the_requested_rate(tiny_gguf: Path, tmp_path: Path) -> None:
    rate, duration = 40.0, 2.5
    store = Store(tmp_path / "lab.db")
    outcome = run_load(LoadOptions(model=str(tiny_gguf), rates=[rate], slots=2, duration_s=duration, max_tokens=4,
                                   threads=1, seed=7), store)
    row = outcome.levels[0]
    reqs = _requests(store, row["id"])
    n = len(reqs)
    assert n == row["load_requests"] == row["load_completed"] + row["load_failed"]
    # a Poisson count: within four standard deviations of rate x duration
    assert abs(n - rate * duration) <= 4 * math.sqrt(rate * duration)
    arrivals = [r["arrival_ms"] / 1000 for r in reqs]
    assert arrivals == sorted(arrivals) and 0 < arrivals[0] and arrivals[-1] < duration
    # the child used the seeded process (level 0's seed is the run's seed)
    assert arrivals == pytest.approx([t / 1e9 for t in arrival_offsets_ns(rate, duration, 7)], abs=1e-6)
    # exponential gaps: the mean within 4 standard errors, and a Kolmogorov-Smirnov distance
    # under the 1% critical value
    gaps = sorted(b - a for a, b in zip([0.0, *arrivals], arrivals))
    assert abs(sum(gaps) / len(gaps) - 1 / rate) <= 4 / rate / math.sqrt(len(gaps))
    d = max(max((i + 1) / len(gaps) - (1 - math.exp(-rate * g)), (1 - math.exp(-rate * g)) - i / len(gaps))
            for i, g in enumerate(gaps))
    assert d < 1.63 / math.sqrt(len(gaps))
    # queueing: a request waits while both slots are busy, and its wait is inside its TTFT
    assert all(0 <= r["queue_ms"] <= r["ttft_ms"] for r in reqs if r["status"] == "ok")
    assert row["n_seq"] == 2 and row["load_max_active"] <= 2


def test_timed_out_requests_are_counted_as_failed_and_never_meet_the_objective(tiny_gguf: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "lab.db")
    # one slot, requests arriving faster than a 1 ms timeout lets any of them finish
    outcome = run_load(LoadOptions(model=str(tiny_gguf), rates=[60], slots=1, duration_s=1.0, max_tokens=24, threads=1,
                                   request_timeout_s=0.001, objective=Objective(ttft_ms=60_000)), store)
    row = outcome.levels[0]
    reqs = _requests(store, row["id"])
    statuses = [r["status"] for r in reqs]
    assert len(reqs) == row["load_requests"] == row["load_completed"] + row["load_failed"]
    assert row["load_failed"] == statuses.count("timeout") > 0 and set(statuses) <= {"ok", "timeout"}
    assert all(not r["meets_slo"] for r in reqs if r["status"] == "timeout")
    met = sum(r["meets_slo"] for r in reqs)
    assert row["slo_attainment"] == pytest.approx(100 * met / len(reqs)) and row["slo_attainment"] < 100
    assert row["load_completed"] == statuses.count("ok")


def test_search_doubles_then_bisects() -> None:
    tried: list[float] = []

    def probe_below(limit: float):
        def probe(level: float) -> bool:
            tried.append(level)
            return level <= limit
        return probe

    assert search_levels(probe_below(13), start=1, ceiling=64, integer=True) == 13
    assert tried == [1, 2, 4, 8, 16, 12, 14, 13]
    tried.clear()
    assert search_levels(probe_below(100), start=1, ceiling=6, integer=True) == 6
    assert tried == [1, 2, 4, 6]
    tried.clear()
    assert search_levels(probe_below(0), start=1, ceiling=64, integer=True) == 0 and tried == [1]
    tried.clear()
    best = search_levels(probe_below(3.3), start=0.5, ceiling=64, integer=False)
    assert (best, tried) == (3.3, [0.5, 1, 2, 4, 2.8, 3.3, 3.6])


def test_find_max_stores_the_most_users_within_the_objective(tiny_gguf: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "lab.db")
    lenient = Objective(ttft_ms=60_000)
    outcome = run_load(LoadOptions(model=str(tiny_gguf), find_max=True, max_users=6, duration_s=0.4, max_tokens=4,
                                   threads=1, objective=lenient), store)
    assert [r["test"] for r in outcome.levels] == ["load u1", "load u2", "load u4", "load u6"]
    run = store.get("runs", outcome.run_id)
    assert (run["max_users_at_slo"], run["slo"]) == (6, '{"ttft_ms": 60000.0}')
    assert run["max_kv_bytes"] == outcome.levels[-1]["kv_bytes"] > outcome.levels[0]["kv_bytes"]
    # an objective no request can meet: not even one user
    never = run_load(LoadOptions(model=str(tiny_gguf), find_max=True, duration_s=0.3, max_tokens=4, threads=1,
                                 objective=Objective(e2e_ms=0.001)), store)
    assert [r["test"] for r in never.levels] == ["load u1"] and never.levels[0]["slo_attainment"] == 0
    assert store.get("runs", never.run_id)["max_users_at_slo"] == 0
    # recommend --min-users judges the stored figure at the same objective, and only at it
    from lab.bench import BenchOptions, run_bench
    from lab.report import recommend

    run_bench(BenchOptions(models=[str(tiny_gguf)], n_prompt=[8], n_gen=[4], repetitions=1, threads=[1]), store)
    key = lenient.to_json()
    assert recommend(store, min_users=4, objective=key).pick.row["max_users_at_slo"] == 6
    # 6 was the search's own ceiling: a lower bound, so 8 users is unverified, never failed by it
    above = recommend(store, min_users=8, objective=key)
    assert above.pick is None and not above.failing and above.unverified[0].checks[0].value is None
    # a search that found its failing level decides any larger limit
    assert recommend(store, min_users=1, objective=Objective(e2e_ms=0.001).to_json()).failing[0].checks[0].value == 0
    assert recommend(store, min_users=9, objective=Objective(e2e_ms=0.001).to_json()).failing[0].checks[0].value == 0
    other = recommend(store, min_users=1, objective=Objective(ttft_ms=50_000).to_json())
    assert other.pick is None and other.unverified and other.unverified[0].checks[0].value is None
    assert recommend(store, min_users=1, objective=Objective(e2e_ms=0.001).to_json()).failing[0].checks[0].value == 0


def test_cli_json_has_one_object_per_level(tiny_gguf: Path, tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    out = _cli(str(tiny_gguf), "--users", "1,2", "--duration", "0.5", "--max-tokens", "6", "-t", "1",
               "--slo-ttft-ms", "60000", "-o", "json", "--db", str(db))
    assert out.returncode == 0, out.stderr
    levels = json.loads(out.stdout)
    assert [lv["users"] for lv in levels] == [1, 2]
    for lv in levels:
        assert JSON_KEYS <= set(lv) and "rate" not in lv
        assert lv["completed"] + lv["failed"] == lv["requests"] > 0
        assert lv["goodput_rps"] > 0 and lv["slo_attainment"] == 100.0
    bad = _cli(str(tiny_gguf), "--users", "1", "--rate", "2", "--db", str(db))
    assert bad.returncode != 0 and bad.stderr.strip() == "error: Give either --users or --rate (comma lists), not both."


def test_ctrl_c_keeps_the_finished_levels(tiny_gguf: Path, tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    proc = subprocess.Popen([sys.executable, "-m", "lab", "load", str(tiny_gguf), "--users", "1,2", "--duration", "3",
                             "--max-tokens", "4", "-t", "1", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            # as from a terminal: a suite started in the background passes SIGINT on ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            with sqlite3.connect(db) as conn:
                if conn.execute("select count(*) from load_requests").fetchone()[0]:
                    break
        except sqlite3.OperationalError:
            pass
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("Cancelled: the finished levels are stored (1 of them")
    with sqlite3.connect(db) as conn:
        assert conn.execute("select status from runs").fetchall() == [("cancelled",)]
        assert conn.execute("select test from results").fetchall() == [("load u1",)]
        assert conn.execute("select count(*) from load_requests").fetchone()[0] > 0
    assert os.path.exists(db)


def test_the_same_load_against_an_endpoint(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lab.endpoints import add_endpoint

    monkeypatch.setenv("SRV_KEY", SERVER_KEY)
    store = Store(tmp_path / "lab.db")
    add_endpoint(store, "srv", url=server, model="smollm", api_key_env="SRV_KEY")
    events: list[dict] = []
    outcome = run_load(LoadOptions(model="endpoint:srv", users=[2], duration_s=1.5, max_tokens=6,
                                   objective=Objective(ttft_ms=60_000)), store, on_event=events.append)
    assert outcome.status == "ok", outcome.error
    row = outcome.levels[0]
    reqs = _requests(store, row["id"])
    assert row["test"] == "load u2" and row["endpoint_url"] == server and row["model_filename"] == "endpoint:srv"
    assert len(reqs) == row["load_requests"] == row["load_completed"] + row["load_failed"] >= 2
    assert row["load_failed"] == 0, [r["error"] for r in reqs]
    assert row["slo_attainment"] == 100.0 and row["goodput_rps"] > 0
    # not this machine's memory, and the server's queue is not visible from here: unknown, never 0
    assert row["peak_rss_bytes"] is None and row["kv_bytes"] is None and row["queue_p95_ms"] is None
    for r in reqs:
        gaps = json.loads(r["gaps_ms"])
        assert r["queue_ms"] is None and 1 <= r["n_generated"] <= 6
        assert 0 < r["ttft_ms"] and r["ttft_ms"] + sum(gaps) <= r["e2e_ms"] + 0.01
    # each user sends its next request after its last one ended
    for user in (0, 1):
        mine = [r for r in reqs if r["user"] == user]
        for a, b in zip(mine, mine[1:]):
            assert b["arrival_ms"] >= a["arrival_ms"] + a["e2e_ms"] - 0.01
    assert any(e["event"] == "load_progress" and e["active"] == 2 for e in events)


def test_rightsize_judges_min_users_last_and_reuses_a_search_that_decides(
        tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lab import library, rightsize_load
    from lab.provenance import record_machine
    from lab.rightsize import Question, Rightsizer, Verdict

    monkeypatch.setattr(rightsize_load, "LEVEL_S", 0.4)  # short levels: the search, not its length, is tested
    store = Store(tmp_path / "lab.db")
    key = Objective(ttft_ms=60_000).to_json()
    rs = Rightsizer(store, Question(model=str(tiny_gguf), n_threads=1, n_gen=4, limits={"min_users": 2, "min_tg": 1},
                                    objective=key))
    rs.machine_id = record_machine(store)
    model_id = library.register(store, library.resolve(str(tiny_gguf)))["id"]
    assert rs.needed() == ["memory", "speed", "load"]
    v = Verdict(tiny_gguf, model_id, "F32", 1)
    rs.run_stage(v, "load")
    assert v.figures["max_users_at_slo"] == 2 and v.measured == ["load find-max ≤2 users"]
    assert [j.check.status for j in v.checks] == ["pass"]
    assert [r["max_users_at_slo"] for r in store.runs(kind="load")] == [2]
    again = Verdict(tiny_gguf, model_id, "F32", 1)
    rs.run_stage(again, "load")
    assert again.reused == ["load find-max (2 users)"] and again.measured == [] and len(store.runs(kind="load")) == 1
    # the stored 2 was the search's ceiling: it does not decide 3 users, so the search runs again
    rs.q.limits["min_users"] = 3
    more = Verdict(tiny_gguf, model_id, "F32", 1)
    rs.run_stage(more, "load")
    assert more.measured == ["load find-max ≤3 users"] and more.figures["max_users_at_slo"] == 3
    # a search at other threads is not this configuration's answer
    rs.q.n_threads, rs.q.limits["min_users"] = 2, 2
    other = Verdict(tiny_gguf, model_id, "F32", 1)
    rs.run_stage(other, "load")
    assert other.measured == ["load find-max ≤2 users"] and other.reused == []
