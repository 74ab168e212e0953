"""The Run screen's form: its fields as BenchOptions, through the one parser both faces use
(``lab.params``).

No Textual here: these run in worker threads (each with its own ``Store``) or in tests.
"""

from __future__ import annotations

from typing import Any

from lab.errors import LabError


def build_options(form: dict[str, Any]) -> Any:
    """BenchOptions from the Run screen's fields (strings, and a bool for chat)."""
    from lab.bench import BenchOptions
    from lab.params import parse_axis, parse_ints, parse_pairs

    models = [m.strip() for m in str(form.get("models", "")).split(",") if m.strip()]
    if not models:
        raise LabError("Give a model: a .gguf path, a library name, or 'demo'")
    reps = parse_ints(str(form.get("repetitions", "5")), "repetitions", minimum=1)
    if len(reps) != 1:
        raise LabError("repetitions takes one number")
    return BenchOptions(
        models=models,
        n_prompt=parse_axis("n_prompt", str(form.get("n_prompt", "")), "pp"),
        n_gen=parse_axis("n_gen", str(form.get("n_gen", "")), "tg"),
        pg=parse_pairs(str(form.get("pg", "")), "pg"),
        n_depth=parse_axis("n_depth", str(form.get("n_depth", "0")), "depth") or [0],
        repetitions=reps[0],
        threads=parse_axis("threads", str(form.get("threads", "")), "threads"),
        n_gpu_layers=parse_axis("n_gpu_layers", str(form.get("n_gpu_layers", "-1")), "GPU layers") or [-1],
        n_batch=parse_axis("n_batch", str(form.get("n_batch", "2048")), "batch") or [2048],
        n_ubatch=parse_axis("n_ubatch", str(form.get("n_ubatch", "512")), "ubatch") or [512],
        chat=bool(form.get("chat")),
    )
