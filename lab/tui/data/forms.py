"""The forms: the Run screen's fields as BenchOptions, through the one parser both faces use
(``lab.params``), and the right-size form's fields as a ``lab.rightsize.Question``.

No Textual here: these run in worker threads (each with its own ``Store``) or in tests.
"""

from __future__ import annotations

from pathlib import Path
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


# The right-size form's limits: field key (the Question's limit name), label, unit hint. The
# labels are the CLI's option names in words, so the domain's sentences read the same.
LIMIT_FIELDS: list[tuple[str, str, str]] = [
    ("min_tg", "min tg", "t/s"), ("min_pp", "min pp", "t/s"),
    ("max_ttft_ms", "max TTFT", "ms"), ("max_itl_p95_ms", "max ITL p95", "ms"),
    ("max_memory_bytes", "max memory", "e.g. 2GiB"), ("max_vram_bytes", "max VRAM", "e.g. 8GiB"),
    ("max_kld", "max KLD", "e.g. 0.05"), ("max_ppl_ratio", "max PPL ratio", "e.g. 1.05"),
    ("min_accuracy", "min accuracy", "0.8 or 80%"), ("min_format_valid", "min format valid", "0.95 or 95%"),
    ("max_cost_per_mtok", "max USD/1M tok", "cost per 1M generated tokens"),
]
# The other fields and their defaults (the CLI's): quant types, preference, suite, text, threads,
# repetitions, the tests' token counts.
RIGHTSIZE_DEFAULTS: dict[str, str] = {
    "types": "Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0", "prefer": "smallest", "suite": "", "text": "", "threads": "",
    "repetitions": "3", "n_prompt": "512", "n_gen": "128",
}


def _number(text: str, label: str, unit: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LabError(f"{label} must be a number ({unit}), not '{text}'") from None
    if not value >= 0 or value == float("inf"):
        raise LabError(f"{label} must be a number of 0 or more ({unit}), not '{text}'")
    return value


def _fraction(text: str, label: str) -> float:
    percent = text.endswith("%")
    value = _number(text.rstrip("% "), label, "a fraction such as 0.8, or 80%")
    value = value / 100 if percent else value
    if value > 1:
        raise LabError(f"{label} is a fraction between 0 and 1 (0.8 means 80%), or a percentage such as 80%")
    return value


def _count(text: str, label: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise LabError(f"{label} must be a whole number, not '{text}'") from None
    if value < minimum:
        raise LabError(f"{label} must be at least {minimum}, not {value}")
    return value


def build_question(form: dict[str, Any]) -> Any:
    """A ``lab.rightsize.Question`` from the right-size form's fields (strings; a blank limit is no
    limit), checked as ``rightsize`` checks it. Raises LabError with one sentence naming the field."""
    from lab.quantize import parse_types
    from lab.report.common import parse_bytes
    from lab.rightsize import Question, check_question

    def text(key: str) -> str:
        return str(form.get(key, RIGHTSIZE_DEFAULTS.get(key, "")) or "").strip()

    model = text("model")
    if not model:
        raise LabError("Give a model: a .gguf path, a library name, or 'demo'")
    limits: dict[str, float] = {}
    for key, label, unit in LIMIT_FIELDS:
        value = text(key)
        if not value:
            continue
        if key.endswith("_bytes"):
            try:
                limits[key] = float(parse_bytes(value))
            except LabError:
                raise LabError(f"{label}: '{value}' is not a memory size; write e.g. 2GiB, 512MiB or 1500000000") from None
        elif key in ("min_accuracy", "min_format_valid"):
            limits[key] = _fraction(value, label)
        else:
            limits[key] = _number(value, label, unit)
    suite = text("suite") or None
    if {"min_accuracy", "min_format_valid"} & set(limits) and not suite:
        raise LabError("min accuracy and min format valid are measured on a task suite: give one (demo, or a .jsonl file)")
    types_text = text("types")
    types = [] if types_text.lower() in ("", "none") else parse_types(types_text)
    threads = text("threads")
    q = Question(model=model, types=types, limits=limits, prefer=text("prefer") or "smallest",
                 text=Path(text("text")) if text("text") else None, suite=suite,
                 n_threads=_count(threads, "threads", 1) if threads else None,
                 repetitions=_count(text("repetitions") or "3", "repetitions", 2),
                 n_prompt=_count(text("n_prompt") or "512", "pp tokens", 1),
                 n_gen=_count(text("n_gen") or "128", "tg tokens", 1))
    if q.text is not None and not q.text.is_file():
        raise LabError(f"text: {q.text} is not a file; leave it empty for the bundled text")
    check_question(q)
    return q


# The Run screen's Load mode: field key, label, default (the CLI's), placeholder.
LOAD_FIELDS: list[tuple[str, str, str, str]] = [
    ("users", "users", "1,2,4,8", "e.g. 1,2,4"), ("rates", "rate/s", "", "e.g. 0.5,1"),
    ("duration_s", "secs", "30", ""), ("max_tokens", "max tok", "128", ""), ("slots", "slots", "4", ""),
]
SLO_FIELDS: list[tuple[str, str, str, str]] = [
    ("slo_ttft_ms", "SLO TTFT", "", "ms"), ("slo_itl_p95_ms", "ITL p95", "", "ms"),
    ("slo_e2e_ms", "e2e", "", "ms"), ("max_users", "max users", "64", ""),
]


def _rates(text: str) -> list[float]:
    out = []
    for word in (w.strip() for w in text.split(",")):
        if not word:
            continue
        try:
            value = float(word)
        except ValueError:
            raise LabError(f"rate takes a comma list of requests per second, e.g. 0.5,1,2 ('{word}' is not one)") from None
        out.append(value)
    return out


def build_load_options(form: dict[str, Any]) -> Any:
    """``lab.load.LoadOptions`` from the Run screen's Load fields (strings; a bool for find-max),
    checked as ``rightsizer load`` checks them. Raises LabError with one sentence naming the field."""
    from lab.load import LoadOptions, Objective, validate
    from lab.params import parse_ints

    def text(key: str) -> str:
        return str(form.get(key, "") or "").strip()

    models = [m.strip() for m in text("models").split(",") if m.strip()]
    if not models:
        raise LabError("Give a model: a .gguf path, a library name, or 'demo'")
    if len(models) > 1:
        raise LabError("A load run serves one model; give one name or path")
    users = parse_ints(text("users"), "users", minimum=1)
    rates = _rates(text("rates"))
    if users and rates:
        raise LabError("Give either users or rate levels, not both (clear one of the two fields)")
    find_max = bool(form.get("find_max"))
    objective = Objective(*(_number(text(k), label, "ms") if text(k) else None
                            for k, label, _, _ in SLO_FIELDS[:3]))
    threads = text("threads")
    ngl = parse_ints(text("n_gpu_layers") or "-1", "GPU layers", minimum=-1)
    if len(ngl) != 1:
        raise LabError("GPU layers takes one number for a load run")
    options = LoadOptions(
        model=models[0], users=users, rates=rates,
        slots=_count(text("slots") or "4", "slots", 1),
        duration_s=_number(text("duration_s") or "30", "secs", "seconds each level lasts"),
        max_tokens=_count(text("max_tokens") or "128", "max tok", 1), objective=objective, find_max=find_max,
        max_users=_count(text("max_users") or "64", "max users", 1),
        threads=_count(threads, "threads", 1) if threads else None,
        n_gpu_layers=ngl[0])
    if options.duration_s <= 0:
        raise LabError("secs must be above 0: each level sends requests for that many seconds")
    if not (users or rates or find_max):
        raise LabError("Give the levels to serve: users (a comma list) or rate (requests/s, a comma list)")
    if find_max and not objective.given:
        raise LabError("find max needs an objective: SLO TTFT, ITL p95 or e2e (ms)")
    validate(options)
    return options


def limits_text(question: Any) -> str:
    """``tg128 t/s ≥ 1 · KLD ≤ 0.05 · peak RSS ≤ 290.00 MiB``, or "no limits"."""
    from lab.report.common import fmt_bytes, fmt_figure
    from lab.rightsize import all_specs

    specs = all_specs(question.test_pp, question.test_tg)
    parts = []
    for name, value in question.limits.items():
        spec = specs[name]
        shown = fmt_bytes(value) if spec.unit == "bytes" else fmt_figure(value)
        parts.append(f"{spec.label} {'≥' if spec.kind == 'min' else '≤'} {shown}")
    return " · ".join(parts) or "no limits"
