"""What the screens show, read from the domain as plain values, one module per job:
``machine`` (fingerprint and live gauges), ``models`` (the Library and the ladder view),
``results`` (paged queries, charts, a run's detail), ``machines`` (hosts, one model across them)
and ``forms`` (the Run screen's fields).

No Textual here: these functions run in worker threads (each with its own ``Store``) or in tests.
Queries page, filter and sort in SQLite (``Store.results``), so a screen never holds more rows
than it shows.
"""

from __future__ import annotations

from lab.tui.data.machine import (  # noqa: F401
    GpuReading, MachineContext, detect_machine, SystemReading, SystemProbe, read_gpus,
)
from lab.tui.data.models import (  # noqa: F401
    CONTEXT_STEPS, LibraryEntry, load_library, known_model_id, last_speeds, QUALITY_KEYS, EVAL_KEYS,
    model_figures, attach_model_figures, ladder_base, Ladder, load_ladder, Fit, memory_fit,
    model_details, DeletionPlan, deletion_plan, delete_model,
)
from lab.tui.data.results import (  # noqa: F401
    FILTER_KEYS, parse_filter, results_page, count_results, results_by_id, ChartBar, chart_bars,
    ScatterPoint, scatter_points, run_detail, series, batched_curves, load_curves, COMPARE_METRICS,
)
from lab.tui.data.machines import (  # noqa: F401
    MachineSummary, machine_list, measured_on, ModelTests, comparable_models, default_test,
    fingerprint_rows, MachineFigure, MachineComparison, compare_machines,
)
from lab.tui.data.forms import (  # noqa: F401
    build_options, build_question, LIMIT_FIELDS, RIGHTSIZE_DEFAULTS, build_load_options, LOAD_FIELDS, SLO_FIELDS,
)
