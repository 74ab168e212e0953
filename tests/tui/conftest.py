"""Fixtures for the app's tests: a fixed machine, a fixed probe, and a store seeded with fixed rows.

Everything a screen shows comes from here, so Pilot assertions and SVG snapshots are the same on
every run: ids, timestamps, hostnames, speeds and machine readings are constants.
"""

from __future__ import annotations

import json
import math
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


def seed_store(db_path: Path, tiny_models: list[Path]) -> dict[str, Any]:
    """Two machines, the tiny models (registered, so the Library finds their speeds) and the
    demo model's quants, with runs, results and samples at fixed times."""
    from lab import library
    from lab.store import Store

    store = Store(db_path)
    for fp in (FINGERPRINT, OTHER_MACHINE):
        store.db["machines"].insert(dict(fp, first_seen="2025-05-01T00:00:00.000000+00:00"))
    models = []
    for path in tiny_models:
        row = library.register(store, path)
        models.append(row)
    for mid, name, quant, size in (("m-q4", "SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1", 96_600_000),
                                   ("m-q8", "SmolLM2-135M-Instruct.Q8_0.gguf", "Q8_0", 144_800_000)):
        store.db["models"].insert({"id": mid, "model_filename": name, "path": f"/models/{name}", "name": name,
                                   "model_type": f"llama 135M {quant}", "arch": "llama", "file_type": quant,
                                   "model_size": size, "file_size": size, "model_n_params": 134_515_008,
                                   "added_at": "2025-05-01T00:00:00.000000+00:00",
                                   **LADDER_LINKS.get(mid, {})}, alter=True)
        models.append({"id": mid, "model_filename": name, "file_type": quant, "model_size": size})
    speeds = {  # (model index, machine) -> (pp, tg)
        "Q4_1@lab-box": (470.1, 171.7), "Q8_0@lab-box": (452.3, 121.4),
        "Q4_1@big-box": (2210.5, 402.9), "Q8_0@big-box": (2105.0, 330.2),
    }
    index = 0
    run_ids = []
    for m in models:
        for fp in (FINGERPRINT, OTHER_MACHINE):
            quant = m.get("file_type") or "F32"
            pp, tg = speeds.get(f"{quant}@{fp['hostname']}", (9000.0 + 10 * index, 2400.0 + 10 * index))
            if not m["id"].startswith("m-") and fp is OTHER_MACHINE:
                continue  # the tiny models were only measured on lab-box
            run_id = f"run{index:04d}-0000-4000-8000-000000000000"
            run_ids.append(run_id)
            config = {"model": {"path": m["model_filename"], "n_gpu_layers": 0, "use_mmap": True},
                      "tests": ["pp512", "tg128"], "repetitions": 5,
                      "items": [{"test": "pp512", "n_threads": fp["cpu_cores"], "n_batch": 2048, "n_ubatch": 512,
                                 "flash_attn": -1, "type_k": "f16", "type_v": "f16"}]}
            store.db["runs"].insert({
                "id": run_id, "kind": "bench", "machine_id": fp["id"], "model_id": m["id"],
                "model_filename": m["model_filename"], "status": "ok", "config": json.dumps(config),
                "started_at": _time(index), "finished_at": _time(index)[:14] + "01:30.000000+00:00",
                "lab_version": "0.1.0", "n_gpu_layers": 0, "use_mmap": 1, "load_ms": 120.0,
                "est_memory_bytes": 180 * MIB, "peak_rss_bytes": 172 * MIB,
            }, alter=True)
            for test, n_prompt, n_gen, ts in (("pp512", 512, 0, pp), ("tg128", 0, 128, tg)):
                n_tokens = n_prompt + n_gen
                store.db["results"].insert({
                    "id": f"res{index:04d}-{test}", "run_id": run_id, "machine_id": fp["id"], "model_id": m["id"],
                    "model_filename": m["model_filename"], "model_type": f"llama {quant}",
                    "model_size": m.get("model_size"), "backends": "CPU", "test": test, "n_prompt": n_prompt,
                    "n_gen": n_gen, "n_depth": 0, "n_batch": 2048, "n_ubatch": 512, "n_threads": fp["cpu_cores"],
                    "n_gpu_layers": 0, "type_k": "f16", "type_v": "f16", "flash_attn": -1, "use_mmap": 1,
                    "n_ctx": n_tokens, "repetitions": 5, "avg_ns": n_tokens / ts * 1e9,
                    "stddev_ns": n_tokens / ts * 1e7, "avg_ts": ts, "stddev_ts": ts / 100, "cv": 0.01, "noisy": 0,
                    "samples_ns": "[]", "samples_ts": "[]", "peak_rss_bytes": (170 + index) * MIB,
                    "est_memory_bytes": 180 * MIB, "mean_cpu_percent": 196.0, "test_time": _time(index),
                }, alter=True)
            store.db["samples"].insert_all([
                {"run_id": run_id, "t": k * 0.1, "test": "pp512" if k < 40 else "tg128",
                 "rss_bytes": int((100 + 70 * min(1.0, k / 10)) * MIB), "cpu_percent": 190 + 8 * math.sin(k / 3),
                 "n_threads": 3, "mem_available_bytes": 6 * GIB, "tokens": k * 10}
                for k in range(80)
            ], alter=True)
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
    """The demo ladder's models, quality rows (against the F16) and eval runs (suite 'demo')."""
    from lab import library
    from lab.evals.stats import wilson_interval

    store.db["models"].insert({"id": "m-f16", "model_filename": "SmolLM2-135M-Instruct.F16.gguf",
                               "path": "/models/SmolLM2-135M-Instruct.F16.gguf", "name": "SmolLM2-135M-Instruct.F16.gguf",
                               "model_type": "llama 135M F16", "arch": "llama", "file_type": "F16",
                               "model_size": 269_030_016, "file_size": 270_898_112, "model_n_params": 134_515_008,
                               "added_at": "2025-05-01T00:00:00.000000+00:00"}, alter=True)
    demo = library.demo_model_path()
    if demo is not None:
        store.db["models"].insert({"id": "m-demo", "model_filename": demo.name, "path": str(demo), "name": "demo",
                                   "model_type": "llama 135M Q4_1", "arch": "llama", "file_type": "Q4_1",
                                   "file_size": demo.stat().st_size, "model_n_params": 134_515_008,
                                   "base_model_id": "m-f16", "fallback_tensors": "[]",
                                   "added_at": "2025-05-01T00:00:00.000000+00:00"}, alter=True)
    names = {"m-q8": "SmolLM2-135M-Instruct.Q8_0.gguf", "m-q4": "SmolLM2-135M-Instruct.Q4_1.gguf",
             "m-demo": demo.name if demo else "demo", "m-f16": "SmolLM2-135M-Instruct.F16.gguf"}
    for i, (mid, kld, p99, ppl, same, day) in enumerate(QUALITY_ROWS):
        store.db["quality"].insert({
            "id": f"qual{i:04d}", "machine_id": FINGERPRINT["id"], "model_id": mid, "reference_model_id": "m-f16",
            "model_filename": names[mid], "reference_filename": names["m-f16"], "text_name": "wiki-sample",
            "n_ctx": 512, "n_chunks": 8, "n_tokens_scored": 2048, "ppl": ppl, "ppl_ref": PPL_REF,
            "ppl_ratio": ppl / PPL_REF, "kld_mean": kld, "kld_p99": p99, "same_top_p": same,
            "created_at": f"2025-06-0{day}T12:00:00.000000+00:00",
        }, alter=True)
    for i, (mid, n, correct, valid) in enumerate(EVAL_ROWS):
        low, high = wilson_interval(correct, n)  # type: ignore[misc]
        store.db["eval_runs"].insert({
            "id": f"eval{i:04d}", "machine_id": FINGERPRINT["id"], "model_id": mid, "model_filename": names[mid],
            "suite": "demo", "constrained": 1, "n_items": n, "n_correct": correct, "accuracy": correct / n,
            "accuracy_ci_low": low, "accuracy_ci_high": high, "format_valid_rate": valid / n,
            "n_empty": 0, "n_timeout": 0, "n_error": 0, "created_at": "2025-06-02T13:00:00.000000+00:00",
        }, alter=True)


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
