"""Comparisons, the model table, the Pareto frontier, the recommendation, llama-bench import.

Everything the CLI and the TUI both need to answer "which model and quantization should I deploy
here?" lives here once, as plain values (dicts and dataclasses) read from the store. Every speed,
latency and memory figure comes through :mod:`lab.select`, at one configuration per model, and
says which. No Textual, no llama.cpp.

* :mod:`lab.report.comparison`    side by side results, with the difference in percent against a baseline
* :mod:`lab.report.table`      one row per model and machine; the Pareto frontier of such rows
* :mod:`lab.report.recommendation`  the model that meets every limit, by preference, and why the others do not
* :mod:`lab.report.importers`  llama-bench ``-o json`` / ``jsonl`` / ``csv`` / ``sql`` output as runs and results
* :mod:`lab.report.costs`      cost per 1M generated tokens of a table row (machine settings or endpoint prices)
* :mod:`lab.report.baseline`   every candidate against a baseline: paired accuracy, latency and cost ratios
* :mod:`lab.report.share`      the report to share (HTML / Markdown), its charts in :mod:`lab.report.charts`
  (matplotlib, the ``report`` extra; imported only by ``rightsizer report``)

A figure that was never measured is None all the way through: it is never 0, never guessed, and a
limit that needs it is reported as *unverified*, not as passed.
"""

from __future__ import annotations

from lab.report.common import (IMPORT_KIND, IMPORTED_MACHINE_PREFIX, fmt_bytes, fmt_figure, parse_bytes,
                               pct_diff)
from lab.report.comparison import COMPARE_METRICS, Metric, compare, resolve_results
from lab.report.importers import (import_llama_bench, imported_machine, llama_bench_test_name,
                                  quant_from_model_type, read_llama_bench)
from lab.report.recommendation import (LIMITS, PREFER, PREFER_HELP, Candidate, LimitCheck, LimitSpec,
                                  Recommendation, check_limit, limit_specs, recommend)
from lab.report.table import ParetoFront, model_table, pareto_front

__all__ = [
    "COMPARE_METRICS", "IMPORT_KIND", "IMPORTED_MACHINE_PREFIX", "LIMITS", "PREFER", "PREFER_HELP", "Candidate",
    "LimitCheck", "LimitSpec", "Metric", "ParetoFront", "Recommendation", "check_limit", "compare",
    "fmt_bytes", "fmt_figure", "import_llama_bench", "imported_machine", "limit_specs", "llama_bench_test_name",
    "model_table", "parse_bytes", "pareto_front", "pct_diff", "quant_from_model_type", "read_llama_bench",
    "recommend", "resolve_results",
]
