"""The report's charts as standalone SVG text, drawn with matplotlib's SVG backend (no display,
no network): one point per candidate that has both figures, the Pareto front as a line, and
the baseline marked (a star, or a dashed line at the one figure it has — the reference's own
KLD is not measured).

Every candidate point is an SVG group with the id ``candidate-N`` (N: its place in the
candidate list), the front ``pareto-front`` and the baseline ``baseline``, so a reader or a
test can find them. matplotlib is the ``report`` extra: without it, :func:`require_matplotlib`
says in one sentence how to install it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Sequence

from lab.errors import LabError
from lab.report.table import pareto_front

INSTALL_HINT = "The report draws its charts with matplotlib; install it with: pip install 'rightsizer[report]'"


class ReportDependencyError(LabError):
    """The plotting library is not installed."""


def require_matplotlib() -> Any:
    """matplotlib set to its SVG backend, or ReportDependencyError saying how to install it."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ReportDependencyError(INSTALL_HINT) from None
    matplotlib.use("svg", force=True)
    return matplotlib


@dataclass
class ChartSpec:
    """One chart: the row keys on each axis, how each is better, labels and scales."""

    name: str
    title: str
    x: str
    y: str
    x_label: str
    y_label: str
    x_better: str  # "min" or "max"
    y_better: str
    x_scale: float = 1.0  # the axis shows value * scale (bytes -> MiB, fraction -> %)
    y_scale: float = 1.0


CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec("size-kld", "File size against KLD", "file_size", "kld_mean", "file size (MiB)",
              "mean KLD against the reference", "min", "min", x_scale=1 / 2**20),
    ChartSpec("tg-accuracy", "Generation speed against accuracy", "tg_ts", "accuracy", "tg t/s",
              "accuracy (%)", "max", "max", y_scale=100.0),
    ChartSpec("cost-accuracy", "Cost against accuracy", "usd_per_mtok", "accuracy",
              "USD per 1M generated tokens", "accuracy (%)", "min", "max", y_scale=100.0),
)


@dataclass
class Chart:
    """A drawn chart: its SVG text, the candidates plotted (their index in the list given) and
    those left out for lack of a figure."""

    spec: ChartSpec
    svg: str
    plotted: list[int] = field(default_factory=list)
    front: list[int] = field(default_factory=list)
    not_plotted: list[str] = field(default_factory=list)
    baseline_shown: str | None = None  # "point", "x line", "y line" or None


def _known(value: Any) -> bool:
    return value is not None and value == value


def draw(spec: ChartSpec, rows: Sequence[dict[str, Any]], baseline_index: int | None = None) -> Chart:
    """Draw one chart of ``rows`` (model-table-like dicts with ``model_filename``/``file_type``)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    placed = [i for i, r in enumerate(rows) if _known(r.get(spec.x)) and _known(r.get(spec.y))]
    front_rows = pareto_front([rows[i] for i in placed], {spec.x: spec.x_better, spec.y: spec.y_better}).front
    front = [i for i in placed if any(rows[i] is f for f in front_rows)]
    fig = Figure(figsize=(6.4, 4.0), dpi=96)
    ax = fig.add_subplot()
    for i in placed:
        r = rows[i]
        is_base = i == baseline_index
        (line,) = ax.plot([r[spec.x] * spec.x_scale], [r[spec.y] * spec.y_scale], linestyle="none",
                          marker="*" if is_base else "o", markersize=14 if is_base else 7,
                          color="#d62728" if is_base else ("#1f77b4" if i in front else "#7f7f7f"))
        line.set_gid("baseline" if is_base else f"candidate-{i}")
        ax.annotate(r.get("file_type") or r.get("model_filename") or "?", (r[spec.x] * spec.x_scale,
                    r[spec.y] * spec.y_scale), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if len(front) > 1:
        pts = sorted((rows[i][spec.x] * spec.x_scale, rows[i][spec.y] * spec.y_scale) for i in front)
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="--", color="#1f77b4", linewidth=1,
                          label="Pareto front")
        line.set_gid("pareto-front")
    shown = "point" if baseline_index in placed else None
    if baseline_index is not None and shown is None:
        base = rows[baseline_index]
        # the baseline lacks one figure (the reference's KLD against itself is never measured):
        # a dashed line at the figure it has
        if _known(base.get(spec.x)):
            line = ax.axvline(base[spec.x] * spec.x_scale, color="#d62728", linestyle=":", label="baseline")
            shown = "x line"
        elif _known(base.get(spec.y)):
            line = ax.axhline(base[spec.y] * spec.y_scale, color="#d62728", linestyle=":", label="baseline")
            shown = "y line"
        if shown:
            line.set_gid("baseline")
    ax.set_xlabel(spec.x_label)
    ax.set_ylabel(spec.y_label)
    ax.set_title(spec.title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.StringIO()
    # fixed ids and no date: the same figures give the same file
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "rightsizer", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "rightsizer (matplotlib)"})
    text = buf.getvalue()
    svg = text[text.index("<svg"):]  # inline: no XML declaration or doctype
    missing = [rows[i].get("model_filename") or "?" for i in range(len(rows)) if i not in placed]
    return Chart(spec, svg, placed, front, missing, shown)


def draw_all(rows: Sequence[dict[str, Any]], baseline_index: int | None = None) -> list[Chart]:
    """Every chart of :data:`CHARTS`."""
    return [draw(spec, rows, baseline_index) for spec in CHARTS]
