"""``rightsize``: limits judged with their intervals on stored figures, and real runs on the demo
model (a pick, every figure reused the second time, early exits, an impossible limit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.cli import main
from lab.rightsize import Question, Rightsizer, Verdict
from lab.stats import mean_interval
from lab.store import Store, now_iso


def _count(store: Store, sql: str, params: list = []) -> int:  # noqa: B006
    return store.query(f"select count(*) as n from ({sql})", params)[0]["n"]


def _setup(tmp_path: Path, demo_gguf: Path, **question) -> tuple[Store, Rightsizer, str]:
    from lab import library
    from lab.provenance import record_machine

    store = Store(tmp_path / "r.db")
    rs = Rightsizer(store, Question(model="demo", n_threads=2, **question))
    rs.machine_id = record_machine(store)
    rs.source = library.resolve("demo")
    rs.source_id = library.register(store, rs.source)["id"]
    return store, rs, rs.machine_id


def _stored_tg(store: Store, machine_id: str, model_id: str, samples: list[float], threads: int = 2,
               **extra) -> None:
    run_id = store.create_run("bench", machine_id=machine_id, model_id=model_id, model_filename="m.gguf", config={})
    store.finish_run(run_id, "ok")
    store.add_result({"run_id": run_id, "machine_id": machine_id, "model_id": model_id, "test": "tg16",
                      "n_prompt": 0, "n_gen": 16, "n_depth": 0, "n_threads": threads, "n_gpu_layers": -1,
                      "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "type_k": "f16", "type_v": "f16",
                      "avg_ts": sum(samples) / len(samples), "samples_ts": samples, "test_time": now_iso(), **extra})


def test_mean_interval_is_the_t_interval() -> None:
    m, lo, hi = mean_interval([9.0, 11.0, 8.0, 12.0])
    # mean 10, sd 1.826, t(3) 3.182: half-width 2.905
    assert m == pytest.approx(10.0)
    assert (lo, hi) == (pytest.approx(7.095, abs=1e-3), pytest.approx(12.905, abs=1e-3))
    assert mean_interval([5.0])[1:] == (float("-inf"), float("inf"))


@pytest.mark.parametrize("limit, samples, status", [
    (5.0, [10.0, 10.1, 9.9], "pass"),
    (20.0, [10.0, 10.1, 9.9], "fail"),
    (10.5, [9.0, 11.0, 8.0, 12.0], "borderline"),  # mean 10 fails by itself; the interval holds 10.5
    (9.5, [9.0, 11.0, 8.0, 12.0], "borderline"),  # mean 10 passes by itself
])
def test_speed_limit_is_judged_with_the_interval_of_every_stored_repetition(
        tmp_path: Path, demo_gguf: Path, limit: float, samples: list[float], status: str) -> None:
    store, rs, machine = _setup(tmp_path, demo_gguf, limits={"min_tg": limit}, n_gen=16, repetitions=2,
                                max_repetitions=4)
    model_id = rs.source_id
    # Two runs at this configuration are pooled; a run at another thread count is not.
    _stored_tg(store, machine, model_id, samples[:2])
    _stored_tg(store, machine, model_id, samples[2:])
    _stored_tg(store, machine, model_id, [1000.0, 1000.0], threads=1)
    v = Verdict(rs.source.path, model_id, "Q4_1", 1)
    before = _count(store, "select * from results")
    rs.run_stage(v, "speed")
    assert _count(store, "select * from results") == before  # decided (or capped) on stored figures
    assert v.figures["tg_ts_n"] == len(samples)
    assert v.figures["tg_ts"] == pytest.approx(sum(samples) / len(samples))
    assert v.checks[0].status == status
    assert v.status == ("pending" if status == "pass" else status)
    if status == "borderline":
        assert "undecided" in v.reason and "95%" in v.reason


def test_samples_to_decide_projects_the_interval_at_the_measured_spread() -> None:
    from lab.question import judge, samples_to_decide
    from lab.report.recommendation import LIMITS as SPECS

    LIMITS = {spec.name: spec for spec in SPECS}
    m, lo, hi = mean_interval([9.0, 11.0, 8.0, 12.0])  # mean 10, sd 1.826
    # 1 t/s off the limit: t(m-1) * 1.826 / sqrt(m) < 1 first at m = 16 (2.131 * 1.826 / 4 = 0.973;
    # at 15: 2.145 * 1.826 / 3.873 = 1.011)
    assert samples_to_decide(judge(LIMITS["min_tg"], 11.0, m, lo, hi), 4, 24) == 16
    assert samples_to_decide(judge(LIMITS["min_tg"], 9.0, m, lo, hi), 4, 24) == 16  # the same distance below
    assert samples_to_decide(judge(LIMITS["min_tg"], 11.0, m, lo, hi), 4, 15) is None  # past the cap
    assert samples_to_decide(judge(LIMITS["min_tg"], 10.0, m, lo, hi), 4, 1000) is None  # on the limit
    # a standard error (KLD over chunks): 1.96 * se; se of one chunk 0.02 -> 0.01 off the limit needs
    # 1.96 * 0.02 / sqrt(m) < 0.01: m > 15.37
    kld = judge(LIMITS["max_kld"], 0.11, 0.1, 0.1 - 1.96 * 0.01, 0.1 + 1.96 * 0.01)  # 4 chunks: se 0.02 / 2
    assert samples_to_decide(kld, 4, 32, t=False) == 16


def test_a_figure_the_cap_cannot_decide_stops_after_one_remeasurement(tmp_path: Path, demo_gguf: Path) -> None:
    """Six stored repetitions (twice the three asked) of mean 10 and sd 1.6 against a limit 0.1
    away: not even the cap of 24 would move the interval off it, so nothing is measured again."""
    store, rs, machine = _setup(tmp_path, demo_gguf, limits={"min_tg": 10.1}, n_gen=16, repetitions=3,
                                max_repetitions=24)
    lines: list[str] = []
    rs.say = lines.append  # type: ignore[method-assign]
    _stored_tg(store, machine, rs.source_id, [8.0, 12.0, 9.0, 11.0, 10.0, 10.0])
    v = Verdict(rs.source.path, rs.source_id, "Q4_1", 1)
    before = _count(store, "select * from results")
    rs.run_stage(v, "speed")
    assert _count(store, "select * from results") == before
    assert v.status == "borderline" and v.figures["tg_ts_n"] == 6
    assert any("not even 24 repetitions would move the 95% interval off the limit" in line for line in lines)


def test_a_speed_measured_while_paged_fails_the_memory_limit(tmp_path: Path, demo_gguf: Path) -> None:
    """The header's estimate fits 1 GiB, but the stored tg runs were paged (swapped): the
    candidate does not fit, whatever its estimate or its peak RSS say."""
    limits = {"min_tg": 1.0, "max_memory_bytes": float(2**30)}
    store, rs, machine = _setup(tmp_path, demo_gguf, limits=limits, n_gen=16, repetitions=3, max_repetitions=3)
    v = Verdict(rs.source.path, rs.source_id, "Q4_1", 1)
    rs.run_stage(v, "memory")
    assert v.status == "pending"
    _stored_tg(store, machine, rs.source_id, [50.0, 51.0, 49.0], swapped=1, peak_rss_bytes=300 * 2**20)
    rs.run_stage(v, "speed")
    assert v.status == "fail" and "swapped" in v.reason and "300.00 MiB" in v.reason
    # the same figures not paged: it fits
    store2, rs2, machine2 = _setup(tmp_path / "b", demo_gguf, limits=limits, n_gen=16, repetitions=3, max_repetitions=3)
    w = Verdict(rs2.source.path, rs2.source_id, "Q4_1", 1)
    rs2.run_stage(w, "memory")
    _stored_tg(store2, machine2, rs2.source_id, [50.0, 51.0, 49.0], swapped=0, peak_rss_bytes=300 * 2**20)
    rs2.run_stage(w, "speed")
    assert w.status == "pending"


def test_kld_and_accuracy_limits_use_their_stderr_and_wilson_interval(tmp_path: Path, demo_gguf: Path) -> None:
    from lab.evals.suite import load_suite
    from lab.quality import DEFAULT_TEXT, sha256_bytes

    store, rs, machine = _setup(tmp_path, demo_gguf, limits={"max_kld": 0.105}, chunks=4, max_chunks=4,
                                suite="demo")
    model_id = "f" * 64
    store.add_row("quality", {"model_id": model_id, "reference_model_id": rs.source_id, "n_ctx": 512, "n_chunks": 4,
                              "text_sha256": sha256_bytes(DEFAULT_TEXT.read_bytes()), "kld_mean": 0.1,
                              "kld_stderr": 0.01, "ppl_ratio": 1.05, "created_at": now_iso()})
    v = Verdict(Path("x.gguf"), model_id, "Q4_0", 1)
    rs.run_stage(v, "quality")
    assert v.checks[0].status == "borderline"  # 0.1 ± 0.0196 holds 0.105
    assert (v.checks[0].low, v.checks[0].high) == (pytest.approx(0.0804), pytest.approx(0.1196))
    rs.q.limits = {"max_kld": 0.2}
    v = Verdict(Path("x.gguf"), model_id, "Q4_0", 1)
    rs.run_stage(v, "quality")
    assert v.checks[0].status == "pass" and v.reused == ["quality (4 chunks)"]

    suite = load_suite("demo")
    ev = store.add_row("eval_runs", {"model_id": model_id, "suite": suite.name, "suite_sha256": suite.sha256,
                                     "constrained": 1, "n_items": 36, "n_correct": 18, "accuracy": 0.5,
                                     "accuracy_ci_low": 0.3429, "accuracy_ci_high": 0.6571,
                                     "format_valid_rate": 1.0, "created_at": now_iso()})
    store.add_rows("eval_items", [{"eval_run_id": ev, "format_valid": 1} for _ in range(36)])
    for limit, status in ((0.6, "borderline"), (0.2, "pass"), (0.7, "fail")):
        rs.q.limits = {"min_accuracy": limit, "min_format_valid": 0.95}
        v = Verdict(Path("x.gguf"), model_id, "Q4_0", 1)
        rs.run_stage(v, "suite")
        acc, fv = v.checks
        assert acc.status == status
        # 36 of 36 valid: Wilson's lower bound 0.904 is under 0.95, so that limit is undecided too.
        assert fv.status == "borderline" and fv.low == pytest.approx(0.9036, abs=1e-3)


ARGS = ["rightsize", "demo", "--types", "Q8_0,Q4_0", "--min-tg", "1", "--chunks", "2", "--max-kld", "1",
        "-n", "4", "-p", "0", "-r", "3", "--max-repetitions", "12", "-t", "2"]


def test_rightsize_demo_picks_reuses_every_figure_and_exits_early(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.db"
    main([*ARGS, "--db", str(db), "-o", "json"])
    first = json.loads(capsys.readouterr().out)
    store = Store(db)
    pick = first["pick"]
    assert pick["quant"] == "Q4_0" and len(pick["sha256"]) == 64 and Path(pick["file"]).is_file()
    assert pick["config"]["n_threads"] == 2 and "-t 2" in pick["commands"]["llama-server"]
    by_quant = {c["quant"]: c for c in first["candidates"]}
    assert by_quant["Q4_0"]["status"] == "pick"
    # Smallest first: once Q4_0 meets every limit, the larger files are never benched.
    assert by_quant["Q8_0"]["status"] == "skipped" and by_quant["Q8_0"]["measured"] == []
    kinds = lambda: {k: _count(store, "select * from runs where kind = ?", [k]) for k in ("bench", "quality")}  # noqa: E731
    counts, n_results, n_quality = kinds(), _count(store, "select * from results"), _count(store, "select * from quality")
    run = store.get("runs", first["run_id"])
    assert run["kind"] == "rightsize" and json.loads(run["config"])["limits"]["min_tg"] == 1
    assert json.loads(run["verdict"])["pick"]["sha256"] == pick["sha256"]

    main([*ARGS, "--db", str(db), "-o", "json"])
    second = json.loads(capsys.readouterr().out)
    assert second["pick"]["sha256"] == pick["sha256"]
    assert kinds() == counts and _count(store, "select * from results") == n_results
    assert _count(store, "select * from quality") == n_quality
    again = {c["quant"]: c for c in second["candidates"]}["Q4_0"]
    assert again["measured"] == [] and any(r.startswith("tg4 n=") for r in again["reused"])

    # A memory limit eliminates Q8_0 (estimate ~312 MiB) before quality or speed is measured.
    q8 = by_quant["Q8_0"]["sha256"]
    main([*ARGS, "--prefer", "quality", "--max-memory", "290MiB", "--db", str(db), "-o", "json"])
    third = {c["quant"]: c for c in json.loads(capsys.readouterr().out)["candidates"]}
    assert third["Q8_0"]["status"] == "fail" and "peak RSS" in third["Q8_0"]["reason"]
    assert _count(store, "select * from quality where model_id = ?", [q8]) == 0
    assert _count(store, "select * from results where model_id = ?", [q8]) == 0

    # An impossible limit: exit 1, the verdict table still printed, nothing measured.
    before = _count(store, "select * from runs")
    with pytest.raises(SystemExit) as exc:
        main([*ARGS, "--max-memory", "1MiB", "--db", str(db)])
    assert exc.value.code == 1
    out = capsys.readouterr()
    assert out.out.count("| FAIL") == 3 and "no candidate meets every limit" in out.err
    assert _count(store, "select * from runs") == before + 1  # the rightsize run alone: the ladder exists


def test_hub_repo_candidates_are_judged_from_headers_and_only_the_pick_is_pulled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from hub_server import FakeHub, build_gguf

    from lab import hub

    big = build_gguf(name="tiny", file_type=15, n_vocab=4096, n_embd=128)[0]
    small = build_gguf(name="tiny", file_type=17, n_vocab=1024, n_embd=64)[0]
    with FakeHub() as server:
        server.add_repo("acme/Tiny-GGUF", {"Tiny-Q4_K_M.gguf": big, "Tiny-Q5_K_M.gguf": small})
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        est = {f.file.path: f.estimate.host_bytes for f in hub.fit_check("acme/Tiny-GGUF", n_ctx=4096)}
        limit = (est["Tiny-Q4_K_M.gguf"] + est["Tiny-Q5_K_M.gguf"]) // 2
        assert est["Tiny-Q5_K_M.gguf"] * 1.02 < limit < est["Tiny-Q4_K_M.gguf"] * 0.98
        main(["rightsize", "acme/Tiny-GGUF", "--max-memory", str(limit), "--db", str(tmp_path / "h.db"), "-o", "json"])
        whole = {s.file for s in server.log() if s.method == "GET" and s.range is None and s.path.startswith("/cdn/")}
    out = json.loads(capsys.readouterr().out)
    by_file = {c["model_filename"]: c for c in out["candidates"]}
    assert by_file["Tiny-Q4_K_M.gguf"]["status"] == "fail" and "peak RSS" in by_file["Tiny-Q4_K_M.gguf"]["reason"]
    assert by_file["Tiny-Q4_K_M.gguf"]["measured"] == []
    assert out["pick"]["quant"] == "Q5_K_M" and Path(out["pick"]["file"]).is_file()
    assert Path(out["pick"]["file"]).read_bytes() == small
    assert whole == {"Tiny-Q5_K_M.gguf"}  # the file that does not fit is never downloaded


def test_a_limit_inside_the_interval_is_measured_again_then_borderline(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.db"
    base = ["rightsize", "demo", "--types", "none", "-n", "4", "-p", "0", "-t", "2", "--db", str(db), "-o", "json"]
    main([*base, "--min-tg", "0.01", "-r", "3"])
    first = json.loads(capsys.readouterr().out)["candidates"][0]
    samples = first["figures"]["tg_ts_n"]
    assert first["status"] == "pick" and samples >= 3
    # The limit at the stored mean itself: its interval holds the limit, so the candidate is measured
    # again (twice the repetitions) and, still undecided, is borderline and never picked.
    limit = first["figures"]["tg_ts"]
    try:
        main([*base, "--min-tg", repr(limit), "-r", "3", "--max-repetitions", str(2 * samples)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    second = json.loads(capsys.readouterr().out)["candidates"][0]
    assert second["measured"] == [f"tg4 x{samples}"] and second["figures"]["tg_ts_n"] == 2 * samples
    check = second["checks"][0]
    if second["status"] == "borderline":
        assert check["low"] < limit < check["high"] and "undecided" in second["reason"] and code == 1
    else:  # the new repetitions moved the interval off the limit: decided on 2n samples, not on one run
        assert not check["low"] < limit < check["high"]
        assert (second["status"], code) == (("pick", 0) if check["value"] >= limit else ("fail", 1))


def test_prefer_quality_measures_lower_ranked_candidates_only_until_they_rank_below_the_pick(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The source meets every limit and is exactly KLD 0: every quant after it gets one chunk of
    quality (one chunk of --chunks 4), which puts it below the source beyond its interval, and is
    never benched."""
    db = tmp_path / "q.db"
    main(["rightsize", "demo", "--types", "Q8_0,Q2_K", "--prefer", "quality", "--min-tg", "1", "--chunks", "4",
          "-n", "4", "-p", "0", "-r", "3", "-t", "2", "--db", str(db), "-o", "json"])
    out = json.loads(capsys.readouterr().out)
    by_quant = {c["quant"]: c for c in out["candidates"]}
    assert out["pick"]["quant"] == "Q4_1"  # the demo itself: the source
    store = Store(db)
    for quant in ("Q8_0", "Q2_K"):
        c = by_quant[quant]
        assert c["status"] == "skipped" and c["reason"].startswith("ranks below SmolLM2-135M-Instruct.Q4_1.gguf by quality: KLD")
        assert c["measured"] == ["quality (1 chunks)"] and c["figures"]["quality_chunks"] == 1
        assert c["figures"]["kld_mean"] - 1.96 * c["figures"]["kld_stderr"] > 0
        assert _count(store, "select * from results where model_id = ?", [c["sha256"]]) == 0
    # The ranking held the real order: Q2_K's KLD is far above Q8_0's.
    assert by_quant["Q2_K"]["figures"]["kld_mean"] > 10 * by_quant["Q8_0"]["figures"]["kld_mean"]


def test_ranks_below_needs_both_intervals_apart(tmp_path: Path, demo_gguf: Path) -> None:
    store, rs, _ = _setup(tmp_path, demo_gguf, prefer="quality")
    pick = Verdict(Path("a.gguf"), "a", "Q8_0", 3, figures={"kld_mean": 0.010, "kld_stderr": 0.001})
    near = Verdict(Path("b.gguf"), "b", "Q6_K", 2, figures={"kld_mean": 0.013, "kld_stderr": 0.001})
    far = Verdict(Path("c.gguf"), "c", "Q4_K", 1, figures={"kld_mean": 0.020, "kld_stderr": 0.001})
    unknown = Verdict(Path("d.gguf"), "d", "Q4_0", 1, figures={"kld_mean": 0.5, "kld_stderr": None})
    # 0.013 - 0.00196 = 0.01104 is inside 0.010 + 0.00196: not apart; 0.020 - 0.00196 is
    assert [rs.ranks_below(v, pick) for v in (near, far, unknown)] == [False, True, False]
    assert not rs.ranks_below(pick, far)
    rs.q.prefer = "fastest"
    fast = Verdict(Path("e.gguf"), "e", "Q4_0", 1, figures={"tg_ts": 100.0, "tg_ts_low": 95.0, "tg_ts_high": 105.0})
    slow = Verdict(Path("f.gguf"), "f", "Q8_0", 2, figures={"tg_ts": 80.0, "tg_ts_low": 70.0, "tg_ts_high": 90.0})
    assert rs.ranks_below(slow, fast) and not rs.ranks_below(fast, slow)


def test_a_cancel_during_the_last_candidate_ends_cancelled_not_in_a_verdict(tmp_path: Path) -> None:
    import threading

    from lab.errors import Cancelled
    from lab.question import Question as Q
    from lab.rightsize import rightsize

    store = Store(tmp_path / "r.db")
    cancel = threading.Event()
    said: list[str] = []

    def progress(message: str) -> None:
        said.append(message)
        if message.endswith(": speed"):  # the only candidate's bench is about to start
            cancel.set()

    with pytest.raises(Cancelled):
        rightsize(store, Q(model="demo", types=[], limits={"min_tg": 1.0}, n_threads=2, n_gen=4, n_prompt=0),
                  on_progress=progress, cancel=cancel)
    assert any(m.endswith(": speed") for m in said)
    run = store.query("select * from runs where kind = 'rightsize'")[0]
    assert run["status"] == "cancelled" and run["verdict"] is None
