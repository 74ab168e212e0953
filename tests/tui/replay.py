"""A recorded run (figures from the demo model on the 2-core reference machine) to replay into the
Run screen, so its live dashboard can be snapshot-tested without timing noise."""

from __future__ import annotations

import math
from typing import Any

MIB = 1 << 20


def demo_run_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"event": "run_start", "run_id": "run-replay", "model_filename": "SmolLM2-135M-Instruct.Q4_1.gguf",
         "index": 0, "n_runs": 1, "tests": ["pp512", "tg128", "chat"], "repetitions": 5,
         "est_memory_bytes": 180 * MIB},
        {"event": "log", "line": "llama_model_loader: loaded meta data with 33 key-value pairs and 272 tensors"},
        {"event": "log", "line": "load_tensors:   CPU_Mapped model buffer size =    93.81 MiB"},
        {"event": "log", "line": "llama_context: n_ctx = 640, n_batch = 2048, n_ubatch = 512"},
        {"event": "loaded", "load_ms": 143.0},
    ]
    for k in range(90):
        events.append({"event": "sample", "sample": {
            "t": k * 0.1, "rss_bytes": int((96 + 75 * min(1.0, k / 12)) * MIB), "cpu_percent": 192 + 6 * math.sin(k / 4),
            "gpu_mem_used_bytes": None, "gpu_util": None, "gpu_power_w": None}})
    events.append({"event": "test_start", "index": 0, "test": "pp512", "reps": 5, "n_tests": 3})
    for rep, ts in enumerate([470.1, 468.3, 473.0, 471.2, 469.8]):
        events.append({"event": "rep", "index": 0, "rep": rep, "ns": 512 / ts * 1e9, "ts": ts})
    events.append({"event": "result", "row": {
        "id": "res-pp512", "model_filename": "SmolLM2-135M-Instruct.Q4_1.gguf", "model_type": "llama 135M Q4_1",
        "test": "pp512", "avg_ts": 470.48, "stddev_ts": 1.75, "noisy": 0, "repetitions": 5,
        "peak_rss_bytes": 171 * MIB, "est_memory_bytes": 180 * MIB, "mean_cpu_percent": 195.2, "ttft_ms": None}})
    events.append({"event": "test_start", "index": 1, "test": "tg128", "reps": 5, "n_tests": 3})
    for rep, ts in enumerate([171.2, 172.5, 170.9]):
        events.append({"event": "rep", "index": 1, "rep": rep, "ns": 128 / ts * 1e9, "ts": ts})
    events.append({"event": "log", "line": "llama_perf_context_print: eval time = 745.12 ms / 128 runs"})
    return events
