"""Comparisons, the model table, the Pareto frontier, the recommendation, llama-bench import.

Everything the CLI and the TUI both need to answer "which model and quantization should I deploy
here?" lives here once, as plain values (dicts and dataclasses) read from the store with a few
SQL queries. No Textual, no llama.cpp.

* :func:`compare`            side by side results, with the difference in percent against a baseline
* :func:`model_table`        one row per model and machine: speed, latency, memory, energy, quality, eval
* :func:`pareto_front`       the non-dominated rows for chosen objectives
* :func:`recommend`          the smallest model that meets every limit, and why the others do not
* :func:`import_llama_bench` llama-bench ``-o json`` / ``-o jsonl`` output as runs and results

A figure that was never measured is None all the way through: it is never 0, never guessed, and a
limit that needs it is reported as *unverified*, not as passed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from lab.errors import LabError
from lab.ids import short_id

if TYPE_CHECKING:
    from lab.store import Store

# --- shared helpers ---------------------------------------------------------------------------

_RESULT_SELECT = (
    "select results.*, machines.hostname as hostname, models.file_type as file_type, "
    "models.arch as arch, models.file_size as file_size, runs.status as run_status, runs.kind as run_kind "
    "from results left join runs on runs.id = results.run_id "
    "left join machines on machines.id = results.machine_id "
    "left join models on models.id = results.model_id "
)

IMPORT_KIND = "llama-bench-import"
IMPORTED_MACHINE_PREFIX = "import-"


def pct_diff(value: float | None, baseline: float | None) -> float | None:
    """``(value - baseline) / baseline * 100``; None when either is unknown or the baseline is 0."""
    if value is None or baseline is None or baseline == 0:
        return None
    if isinstance(value, float) and math.isnan(value) or isinstance(baseline, float) and math.isnan(baseline):
        return None
    return (value - baseline) / baseline * 100.0


_BYTE_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 10**3, "kib": 1 << 10,
    "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
    "g": 1 << 30, "gb": 10**9, "gib": 1 << 30,
    "t": 1 << 40, "tb": 10**12, "tib": 1 << 40,
}


def parse_bytes(text: str | int | float) -> int:
    """``"2GiB"`` -> 2147483648. Binary units (KiB, MiB, GiB, TiB, and bare K, M, G, T) and
    decimal ones (KB, MB, GB, TB); a plain number is bytes. Raises LabError on anything else."""
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
        if not match or match.group(2).lower() not in _BYTE_UNITS:
            raise LabError(f"{text!r} is not a memory size; write e.g. 2GiB, 512MiB or 1500000000")
        value, unit = float(match.group(1)), match.group(2).lower()
    if value < 0:
        raise LabError(f"{text!r} is not a memory size; it must not be negative")
    return int(round(value * _BYTE_UNITS[unit]))


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"


def fmt_figure(value: float | None) -> str:
    """A figure for a sentence or a cell: whole numbers bare, others to 3-4 significant
    digits; None is "n/a"."""
    if value is None:
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.4g}"


def _bool_or_none(value: Any) -> bool | None:
    return None if value is None else bool(value)


# --- compare ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A figure shown side by side; ``higher_is_better`` says which way a difference is good."""

    key: str
    title: str
    higher_is_better: bool
    unit: str = ""  # "bytes", "ms", "t/s", "J"


COMPARE_METRICS: tuple[Metric, ...] = (
    Metric("avg_ts", "t/s", True, "t/s"),
    Metric("peak_rss_bytes", "peak RSS", False, "bytes"),
    Metric("peak_vram_bytes", "VRAM", False, "bytes"),
    Metric("j_per_token", "J/tok", False, "J"),
    Metric("ttft_ms", "TTFT ms", False, "ms"),
    Metric("itl_p50_ms", "ITL p50 ms", False, "ms"),
    Metric("itl_p95_ms", "ITL p95 ms", False, "ms"),
    Metric("itl_p99_ms", "ITL p99 ms", False, "ms"),
    Metric("e2e_ms", "e2e ms", False, "ms"),
)

_COMPARE_FIELDS = (
    "run_id", "test", "model_id", "model_filename", "model_type", "file_type", "file_size", "model_size",
    "model_n_params", "machine_id", "hostname", "backends", "n_threads", "n_gpu_layers", "n_batch", "n_ubatch",
    "n_prompt", "n_gen", "n_depth", "type_k", "type_v", "flash_attn", "repetitions", "stddev_ts", "cv",
    "est_memory_bytes", "test_time", "run_kind",
)


def resolve_results(store: "Store", ids: Sequence[str]) -> list[dict[str, Any]]:
    """The results named by ``ids``, in the order given.

    Each id is a result id, its short form (the last 10 hex digits) or any prefix or suffix of it;
    an id that names no result but names a run stands for every result of that run (in test
    order). An id that matches several results or runs, or none, raises LabError.
    """
    out: list[dict[str, Any]] = []
    for raw in ids:
        key = raw.strip().lower()
        if not key or not re.fullmatch(r"[0-9a-f]+", key):
            raise LabError(f"{raw!r} is not a result id (hex digits, as `rightsizer results -o json` shows them)")
        params = {"prefix": f"{key}%", "suffix": f"%{key}"}
        rows = store.query(_RESULT_SELECT + "where results.id like :prefix or results.id like :suffix", params)
        if len(rows) == 1:
            out.append(rows[0])
            continue
        if len(rows) > 1:
            raise LabError(f"Result id {raw!r} matches {len(rows)} results; give more of its digits")
        runs = store.query("select id from runs where id like :prefix or id like :suffix", params)
        if len(runs) > 1:
            raise LabError(f"Id {raw!r} matches {len(runs)} runs; give more of its digits")
        if not runs:
            raise LabError(f"No result or run has the id {raw!r}")
        run_rows = store.query(_RESULT_SELECT + "where results.run_id = ? order by results.test_time, results.id",
                               [runs[0]["id"]])
        if not run_rows:
            raise LabError(f"Run {raw!r} stored no results")
        out.extend(run_rows)
    return out


def compare(store: "Store", result_ids: list[str]) -> list[dict[str, Any]]:
    """Selected results side by side, each with the difference in percent against its baseline.

    The baseline of a row is the first selected result of the same test: with result ids of one
    test (the usual case) that is the first one given; with run ids, each test is compared with
    the same test of the first run. For every metric in :data:`COMPARE_METRICS` a row holds the
    figure (``avg_ts``, ``peak_rss_bytes`` ...) and ``<key>_diff_pct``, which is None when either
    figure was not measured (or the baseline is 0) and exactly 0.0 on the baseline itself.
    Each row also carries ``id``, ``short_id``, ``baseline_id``, ``is_baseline``, ``noisy``
    (bool or None) and the result's configuration (test, model, machine, threads, ...).
    """
    if not result_ids:
        raise LabError("Name at least one result id to compare")
    rows = resolve_results(store, result_ids)
    baselines: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in rows:
        if row["id"] in seen:
            continue
        seen.add(row["id"])
        base = baselines.setdefault(row["test"], row)
        rec: dict[str, Any] = {"id": row["id"], "short_id": short_id(row["id"])}
        rec.update({k: row.get(k) for k in _COMPARE_FIELDS})
        rec["noisy"] = _bool_or_none(row.get("noisy"))
        rec["baseline_id"] = base["id"]
        rec["is_baseline"] = base is row
        for metric in COMPARE_METRICS:
            rec[metric.key] = row.get(metric.key)
            rec[f"{metric.key}_diff_pct"] = pct_diff(row.get(metric.key), base.get(metric.key))
        out.append(rec)
    return out


# --- the model table --------------------------------------------------------------------------


def _machine_clause(machine_id: str | None, params: dict[str, Any], column: str = "results.machine_id") -> str:
    if not machine_id:
        return ""
    params.update(machine=machine_id, machine_prefix=f"{machine_id}%")
    return (f" and ({column} like :machine_prefix or {column} in "
            "(select id from machines where hostname = :machine))")


def _newest_quality(store: "Store") -> dict[str, dict[str, Any]]:
    rows = store.query(
        "select * from (select quality.*, row_number() over (partition by model_id "
        "order by created_at desc, id desc) as rn from quality "
        "where kld_mean is not null or ppl_ratio is not null) where rn = 1"
    )
    return {r["model_id"]: r for r in rows}


def _newest_evals(store: "Store", suite: str | None) -> dict[str, dict[str, Any]]:
    # A failed or cancelled eval run scored only part of the suite: leave it out.
    params: dict[str, Any] = {}
    where = "coalesce(runs.status, 'ok') = 'ok'"
    if suite:
        where += " and eval_runs.suite = :suite"
        params["suite"] = suite
    rows = store.query(
        "select * from (select eval_runs.*, row_number() over (partition by eval_runs.model_id "
        "order by eval_runs.created_at desc, eval_runs.id desc) as rn from eval_runs "
        f"left join runs on runs.id = eval_runs.run_id where {where}) where rn = 1",
        params,
    )
    return {r["model_id"]: r for r in rows}


def model_table(store: "Store", machine_id: str | None = None, test_pp: str = "pp512", test_tg: str = "tg128",
                *, suite: str | None = None) -> list[dict[str, Any]]:
    """One row per model and machine, from the newest result of each test (``test_pp``,
    ``test_tg`` and ``chat``) of that model on that machine; smallest file first.

    ``machine_id`` (an id, an id prefix or a hostname) keeps one machine; None keeps every
    machine, so a model measured on two machines gets two rows. Keys:

    * model: ``model_id``, ``model_filename``, ``file_type`` (quant), ``file_size``,
      ``model_size`` (llama.cpp's tensor bytes), ``size_bytes`` (file size, else model size),
      ``model_n_params``, ``arch``
    * machine: ``machine_id``, ``hostname``, ``imported`` (figures from a llama-bench file)
    * speed: ``pp_ts``, ``tg_ts`` (avg t/s) with ``*_stddev_ts``, ``*_noisy``, ``*_result_id``
    * chat: ``ttft_ms``, ``itl_p50_ms``, ``itl_p95_ms``, ``itl_p99_ms``, ``e2e_ms``, ``chat_ts``,
      ``chat_result_id``
    * memory: ``peak_rss_bytes`` / ``peak_vram_bytes`` / ``est_memory_bytes``, the largest of
      the selected tests; ``j_per_token`` is the tg test's energy per generated token
    * ``n_threads``, ``n_gpu_layers``, ``measured_at`` (newest test time)
    * quality (newest ``quality`` row of the model, any machine): ``kld_mean``, ``kld_p99``,
      ``ppl_ratio``, ``same_top_p``, ``quality_reference``
    * eval (newest completed ``eval_runs`` row, of ``suite`` when given): ``accuracy``,
      ``accuracy_ci_low``, ``accuracy_ci_high``, ``format_valid_rate``, ``eval_suite``,
      ``eval_n_items``

    Every figure that was never measured is None.
    """
    params: dict[str, Any] = {"pp": test_pp, "tg": test_tg}
    clause = _machine_clause(machine_id, params)
    results = store.query(
        "with ranked as (select results.*, row_number() over (partition by "
        "coalesce(results.model_id, 'file:' || results.model_filename), results.machine_id, results.test "
        "order by results.test_time desc, results.id desc) as rn from results "
        "where results.test in (:pp, :tg, 'chat') and (results.avg_ts is not null or results.ttft_ms is not null)"
        f"{clause}) "
        "select ranked.*, machines.hostname as hostname, models.model_filename as m_filename, "
        "models.file_type as file_type, models.file_size as file_size, models.model_size as m_model_size, "
        "models.model_n_params as m_n_params, models.arch as arch "
        "from ranked left join machines on machines.id = ranked.machine_id "
        "left join models on models.id = ranked.model_id where ranked.rn = 1",
        params,
    )
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in results:
        key = (r["model_id"] or f"file:{r['model_filename']}", r["machine_id"])
        groups.setdefault(key, {})[r["test"]] = r
    quality = _newest_quality(store)
    evals = _newest_evals(store, suite)
    rows = [_model_row(key, tests, test_pp, test_tg, quality.get(key[0]), evals.get(key[0]))
            for key, tests in groups.items()]
    rows.sort(key=lambda r: (_none_last(r["size_bytes"]), _none_last(r["peak_rss_bytes"]),
                             r["model_filename"] or "", r["hostname"] or "", r["machine_id"] or ""))
    return rows


def _none_last(value: float | None) -> tuple[int, float]:
    return (1, 0.0) if value is None else (0, float(value))


def _max_known(values: Iterable[Any]) -> Any:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _model_row(key: tuple[str, str], tests: dict[str, dict[str, Any]], test_pp: str, test_tg: str,
               quality: dict[str, Any] | None, ev: dict[str, Any] | None) -> dict[str, Any]:
    pp, tg, chat = tests.get(test_pp), tests.get(test_tg), tests.get("chat")
    any_row = tg or pp or chat
    assert any_row is not None
    file_size = any_row.get("file_size")
    model_size = any_row.get("m_model_size") or any_row.get("model_size")
    row: dict[str, Any] = {
        "model_id": key[0], "machine_id": key[1], "hostname": any_row.get("hostname"),
        "imported": (key[1] or "").startswith(IMPORTED_MACHINE_PREFIX),
        "model_filename": any_row.get("m_filename") or any_row.get("model_filename"),
        "file_type": any_row.get("file_type"), "file_size": file_size, "model_size": model_size,
        "size_bytes": file_size if file_size is not None else model_size,
        "model_n_params": any_row.get("m_n_params") or any_row.get("model_n_params"),
        "arch": any_row.get("arch"),
        "n_threads": (tg or pp or chat or {}).get("n_threads"),
        "n_gpu_layers": (tg or pp or chat or {}).get("n_gpu_layers"),
    }
    for prefix, test_name, res in (("pp", test_pp, pp), ("tg", test_tg, tg)):
        row[f"{prefix}_test"] = test_name
        row[f"{prefix}_ts"] = res.get("avg_ts") if res else None
        row[f"{prefix}_stddev_ts"] = res.get("stddev_ts") if res else None
        row[f"{prefix}_noisy"] = _bool_or_none(res.get("noisy")) if res else None
        row[f"{prefix}_result_id"] = res["id"] if res else None
    for k in ("ttft_ms", "itl_p50_ms", "itl_p95_ms", "itl_p99_ms", "e2e_ms"):
        row[k] = chat.get(k) if chat else None
    row["chat_ts"] = chat.get("avg_ts") if chat else None
    row["chat_result_id"] = chat["id"] if chat else None
    chosen = [r for r in (pp, tg, chat) if r is not None]
    for k in ("peak_rss_bytes", "peak_vram_bytes", "est_memory_bytes"):
        row[k] = _max_known(r.get(k) for r in chosen)
    row["j_per_token"] = tg.get("j_per_token") if tg else None
    row["measured_at"] = _max_known(r.get("test_time") for r in chosen)
    q = quality or {}
    row.update(kld_mean=q.get("kld_mean"), kld_p99=q.get("kld_p99"), ppl_ratio=q.get("ppl_ratio"),
               same_top_p=q.get("same_top_p"), quality_reference=q.get("reference_filename"))
    e = ev or {}
    row.update(accuracy=e.get("accuracy"), accuracy_ci_low=e.get("accuracy_ci_low"),
               accuracy_ci_high=e.get("accuracy_ci_high"), format_valid_rate=e.get("format_valid_rate"),
               eval_suite=e.get("suite"), eval_n_items=e.get("n_items"))
    return row


# --- Pareto frontier --------------------------------------------------------------------------


@dataclass
class ParetoFront:
    """The non-dominated rows (``front``, in input order), the rows that lacked a figure an
    objective needs (``excluded``, each with the keys it lacked), and the objectives used."""

    front: list[dict[str, Any]]
    excluded: list[tuple[dict[str, Any], list[str]]]
    objectives: list[tuple[str, str]]

    def note(self) -> str | None:
        """One sentence about the excluded rows, or None when every row took part."""
        if not self.excluded:
            return None
        missing = sorted({k for _, keys in self.excluded for k in keys})
        n = len(self.excluded)
        return (f"{n} row{'s' if n != 1 else ''} left out of the frontier because "
                f"{'they lack' if n != 1 else 'it lacks'} {', '.join(missing)} (never measured).")

    def contains(self, row: dict[str, Any]) -> bool:
        """Whether ``row`` (the same object) is on the front."""
        return any(r is row for r in self.front)


def _objectives(objectives: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str]) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    pairs = objectives.items() if isinstance(objectives, Mapping) else objectives
    for obj in pairs:
        if isinstance(obj, str):  # "+tg_ts" / "-peak_rss_bytes"
            if obj[:1] not in "+-" or len(obj) < 2:
                raise ValueError(f"objective {obj!r}: write +key to maximize or -key to minimize")
            items.append((obj[1:], "max" if obj[0] == "+" else "min"))
            continue
        key, direction = obj
        if direction not in ("max", "min"):
            raise ValueError(f"objective {key!r}: direction must be 'max' or 'min', not {direction!r}")
        items.append((key, direction))
    if not items:
        raise ValueError("pareto_front needs at least one objective")
    return items


def pareto_front(rows: Sequence[dict[str, Any]],
                 objectives: Mapping[str, str] | Sequence[tuple[str, str]] | Sequence[str]) -> ParetoFront:
    """The rows no other row beats on every objective at once.

    ``objectives`` maps a row key to ``"max"`` or ``"min"`` (``{"tg_ts": "max",
    "peak_rss_bytes": "min", "kld_mean": "min"}``), or is a list of such pairs, or of ``"+key"`` /
    ``"-key"`` strings. Row A dominates B when A is at least as good on every objective and
    strictly better on one; rows with equal figures do not dominate each other. A row with None
    in any objective cannot be placed, so it is left out and listed in ``excluded`` with the
    keys it lacks — never treated as 0.
    """
    objs = _objectives(objectives)
    placed: list[tuple[dict[str, Any], tuple[float, ...]]] = []
    excluded: list[tuple[dict[str, Any], list[str]]] = []
    for row in rows:
        missing = [k for k, _ in objs if row.get(k) is None or (isinstance(row.get(k), float) and math.isnan(row[k]))]
        if missing:
            excluded.append((row, missing))
            continue
        # Turn every objective into "bigger is better".
        placed.append((row, tuple(float(row[k]) if d == "max" else -float(row[k]) for k, d in objs)))

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    front = [row for row, v in placed if not any(dominates(w, v) for _, w in placed)]
    return ParetoFront(front=front, excluded=excluded, objectives=objs)


# --- recommendation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitSpec:
    """A limit ``recommend`` understands: its parameter, the model-table key it checks, and
    whether the figure must be at least (``min``) or at most (``max``) the limit."""

    name: str
    key: str
    kind: str  # "min" or "max"
    label: str
    unit: str = ""  # "bytes" formats as sizes


LIMITS: tuple[LimitSpec, ...] = (
    LimitSpec("min_tg", "tg_ts", "min", "tg t/s"),
    LimitSpec("min_pp", "pp_ts", "min", "pp t/s"),
    LimitSpec("max_ttft_ms", "ttft_ms", "max", "chat TTFT ms"),
    LimitSpec("max_itl_p95_ms", "itl_p95_ms", "max", "chat ITL p95 ms"),
    LimitSpec("max_memory_bytes", "peak_rss_bytes", "max", "peak RSS", "bytes"),
    LimitSpec("max_j_per_token", "j_per_token", "max", "J/token"),
    LimitSpec("min_accuracy", "accuracy", "min", "accuracy"),
    LimitSpec("max_kld", "kld_mean", "max", "KLD"),
    LimitSpec("max_ppl_ratio", "ppl_ratio", "max", "PPL ratio"),
)


def limit_specs(test_pp: str = "pp512", test_tg: str = "tg128") -> list[LimitSpec]:
    """:data:`LIMITS` with the speed labels naming the tests checked (``tg128 t/s``)."""
    labels = {"min_tg": f"{test_tg} t/s", "min_pp": f"{test_pp} t/s"}
    return [replace(s, label=labels.get(s.name, s.label)) for s in LIMITS]


@dataclass
class LimitCheck:
    """One limit checked against one candidate: ``pass``, ``fail`` or ``unverified`` (the
    figure was never measured). ``delta`` is value minus limit; ``delta_pct`` relative to it."""

    name: str
    key: str
    kind: str
    label: str
    limit: float
    value: float | None
    status: str
    delta: float | None
    delta_pct: float | None
    unit: str = ""

    def _fmt(self, value: float | None) -> str:
        return _fmt_bytes(value) if self.unit == "bytes" else fmt_figure(value)

    def describe(self) -> str:
        """``"tg128 t/s 12.30 is 7.70 below the minimum 20 (-38.5%)"`` and the like."""
        if self.status == "unverified":
            return f"{self.label} was never measured (limit {'≥' if self.kind == 'min' else '≤'} {self._fmt(self.limit)})"
        pct = f" ({self.delta_pct:+.1f}%)" if self.delta_pct is not None else ""
        assert self.delta is not None
        if self.status == "pass":
            sign = "≥" if self.kind == "min" else "≤"
            return f"{self.label} {self._fmt(self.value)} {sign} {self._fmt(self.limit)}"
        if self.kind == "min":
            return f"{self.label} {self._fmt(self.value)} is {self._fmt(-self.delta)} below the minimum {self._fmt(self.limit)}{pct}"
        return f"{self.label} {self._fmt(self.value)} is {self._fmt(self.delta)} over the limit {self._fmt(self.limit)}{pct}"


@dataclass
class Candidate:
    """A model-table row with its checks. ``status`` is ``pass`` (every limit met), ``fail``
    (at least one limit measured and not met; ``first_failure`` is the first in limit order)
    or ``unverified`` (none failed, but a figure a limit needs was never measured)."""

    row: dict[str, Any]
    checks: list[LimitCheck]

    @property
    def status(self) -> str:
        statuses = {c.status for c in self.checks}
        return "fail" if "fail" in statuses else "unverified" if "unverified" in statuses else "pass"

    @property
    def first_failure(self) -> LimitCheck | None:
        return next((c for c in self.checks if c.status == "fail"), None)

    @property
    def unverified(self) -> list[LimitCheck]:
        return [c for c in self.checks if c.status == "unverified"]

    def reason(self) -> str:
        """Why this candidate is where it is, in a phrase."""
        failure = self.first_failure
        if failure is not None:
            return failure.describe()
        missing = self.unverified
        if missing:
            return "not measured: " + ", ".join(c.label for c in missing)
        return "meets every limit"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "reason": self.reason(),
            "first_failure": asdict(self.first_failure) if self.first_failure else None,
            "unverified": [c.name for c in self.unverified],
            "checks": [asdict(c) for c in self.checks], **self.row,
        }


@dataclass
class Recommendation:
    """What :func:`recommend` found. ``pick`` is the smallest passing candidate (None when
    nothing passes); ``passing``, ``failing`` and ``unverified`` partition every candidate."""

    pick: Candidate | None
    passing: list[Candidate]
    failing: list[Candidate]
    unverified: list[Candidate]
    limits: dict[str, float]
    machine_id: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def candidates(self) -> list[Candidate]:
        """Every candidate, smallest first (the order the pick was made in)."""
        return sorted(self.passing + self.failing + self.unverified, key=_candidate_order)

    def summary(self) -> str:
        """The pick and why, or why there is none, in one or two sentences."""
        n = len(self.candidates)
        if self.pick is None:
            parts = []
            if self.failing:
                parts.append(f"{len(self.failing)} fail{'s' if len(self.failing) == 1 else ''} a limit")
            if self.unverified:
                parts.append(f"{len(self.unverified)} could not be checked (a figure was never measured)")
            return f"No model meets every limit: of {n} candidate{'s' if n != 1 else ''}, {' and '.join(parts)}."
        row = self.pick.row
        quant = f"{row['file_type']}, " if row.get("file_type") else ""
        where = f" on {row['hostname'] or row['machine_id']}" if self.machine_id is None else ""
        met = "; ".join(c.describe() for c in self.pick.checks)
        why = f": {met}" if met else " (no limits were given)"
        n_pass = len(self.passing)
        which = "the only candidate that meets" if n_pass == 1 else f"the smallest of {n_pass} candidates that meet"
        return f"{row['model_filename']} ({quant}{_fmt_bytes(row['size_bytes'])}){where} is {which} every limit{why}."

    def to_dict(self) -> dict[str, Any]:
        return {
            "pick": self.pick.to_dict() if self.pick else None, "summary": self.summary(),
            "limits": self.limits, "machine_id": self.machine_id, "notes": self.notes,
            "candidates": [c.to_dict() for c in self.candidates],
        }


def _candidate_order(c: Candidate) -> tuple[Any, ...]:
    r = c.row
    return (_none_last(r.get("size_bytes")), _none_last(r.get("peak_rss_bytes")), r.get("model_filename") or "",
            r.get("machine_id") or "")


def check_limit(spec: LimitSpec, limit: float, row: dict[str, Any]) -> LimitCheck:
    """Check one limit against one model-table row; a missing figure is ``unverified``."""
    value = row.get(spec.key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return LimitCheck(spec.name, spec.key, spec.kind, spec.label, limit, None, "unverified", None, None, spec.unit)
    ok = value >= limit if spec.kind == "min" else value <= limit
    delta = value - limit
    return LimitCheck(spec.name, spec.key, spec.kind, spec.label, limit, value, "pass" if ok else "fail",
                      delta, pct_diff(value, limit), spec.unit)


def _current_machine_id() -> str | None:
    from lab.hardware import fingerprint

    return fingerprint().get("id")


def recommend(store: "Store", *, machine_id: str | None = None, min_tg: float | None = None,
              min_pp: float | None = None, max_ttft_ms: float | None = None,
              max_itl_p95_ms: float | None = None, max_memory_bytes: int | None = None,
              max_j_per_token: float | None = None, min_accuracy: float | None = None,
              max_kld: float | None = None, max_ppl_ratio: float | None = None, suite: str | None = None,
              test_pp: str = "pp512", test_tg: str = "tg128") -> Recommendation:
    """The smallest model (by file size, then peak RSS) that meets every limit given.

    Candidates are the rows of :func:`model_table` on ``machine_id`` (id, id prefix or hostname).
    Without one, this machine is used when it has results; otherwise every machine, with a note.
    A candidate lacking a figure that a limit needs is *unverified*: it is never picked and never
    counted as passing. ``min_accuracy`` is a fraction (0.8 = 80%); ``suite`` picks the eval suite
    whose accuracy counts (default: each model's newest completed eval). Raises LabError when the
    store holds no results to choose from, or a limit is out of range.
    """
    given = {"min_tg": min_tg, "min_pp": min_pp, "max_ttft_ms": max_ttft_ms, "max_itl_p95_ms": max_itl_p95_ms,
             "max_memory_bytes": max_memory_bytes, "max_j_per_token": max_j_per_token,
             "min_accuracy": min_accuracy, "max_kld": max_kld, "max_ppl_ratio": max_ppl_ratio}
    limits = {k: float(v) for k, v in given.items() if v is not None}
    for name, value in limits.items():
        if math.isnan(value) or value < 0:
            raise LabError(f"The limit {name} must be a non-negative number, not {value:g}")
    if "min_accuracy" in limits and limits["min_accuracy"] > 1:
        raise LabError(f"min_accuracy is a fraction between 0 and 1 (0.8 means 80%), not {limits['min_accuracy']:g}")
    if "max_memory_bytes" in limits:
        limits["max_memory_bytes"] = int(limits["max_memory_bytes"])

    notes: list[str] = []
    chosen_machine = machine_id
    rows: list[dict[str, Any]]
    if machine_id:
        rows = model_table(store, machine_id, test_pp, test_tg, suite=suite)
        if not rows:
            raise LabError(f"No {test_pp}, {test_tg} or chat results are stored for machine {machine_id!r}")
    else:
        here = _current_machine_id()
        rows = model_table(store, here, test_pp, test_tg, suite=suite) if here else []
        if rows:
            chosen_machine = here
        else:
            rows = model_table(store, None, test_pp, test_tg, suite=suite)
            machines = sorted({r["machine_id"] for r in rows})
            if rows:
                notes.append(f"This machine ({here or 'unknown'}) has no results; candidates come from "
                             f"{len(machines)} other machine{'s' if len(machines) != 1 else ''}, so speeds and "
                             "memory were measured elsewhere.")
    if not rows:
        raise LabError(f"No {test_pp}, {test_tg} or chat results are stored yet; run `rightsizer bench MODEL` first")
    active = [spec for spec in limit_specs(test_pp, test_tg) if spec.name in limits]
    candidates = [Candidate(row, [check_limit(spec, limits[spec.name], row) for spec in active]) for row in rows]
    candidates.sort(key=_candidate_order)
    passing = [c for c in candidates if c.status == "pass"]
    failing = [c for c in candidates if c.status == "fail"]
    unverified = [c for c in candidates if c.status == "unverified"]
    if not limits:
        notes.append("No limits were given, so every measured model passes and the smallest is picked.")
    if "min_accuracy" in limits and not suite:
        suites = sorted({r["eval_suite"] for r in rows if r.get("eval_suite")})
        if len(suites) > 1:
            notes.append(f"Accuracy comes from different eval suites ({', '.join(suites)}); "
                         "pass --suite to compare on one.")
    if {"max_kld", "max_ppl_ratio"} & set(limits):
        refs = sorted({r["quality_reference"] for r in rows if r.get("quality_reference")})
        if len(refs) > 1:
            notes.append(f"KLD and PPL ratio were measured against different references ({', '.join(refs)}).")
    if any(c.row.get("imported") and c.unverified for c in candidates):
        notes.append("Some candidates come from imported llama-bench files: their memory, energy and "
                     "latency were not measured, so limits on them are unverified.")
    return Recommendation(pick=passing[0] if passing else None, passing=passing, failing=failing,
                          unverified=unverified, limits=limits, machine_id=chosen_machine, notes=notes)


# --- llama-bench import -----------------------------------------------------------------------

LLAMA_BENCH_REQUIRED = ("build_commit", "cpu_info", "model_filename", "n_prompt", "n_gen", "avg_ns", "avg_ts")

# llama.cpp's llama_model_ftype_name() wording -> the quant names gguf_info uses (Q4_K_M ...).
_FTYPE_WORDS = {"Small": "S", "Medium": "M", "Large": "L"}


def quant_from_model_type(model_type: str | None) -> str | None:
    """``"qwen2 7B Q4_K - Medium"`` -> ``"Q4_K_M"``: the file type in llama-bench's ``model_type``
    (arch, size, then llama.cpp's file type name). None when it cannot be read."""
    if not model_type:
        return None
    parts = model_type.replace(" (guessed)", "").split(" ", 2)
    if len(parts) < 3:
        return None
    ftype = parts[2].strip()
    ftype = ftype.removeprefix("mostly ")
    if ftype == "all F32":
        return "F32"
    if ftype == "MXFP4 MoE":
        return "MXFP4_MOE"
    if ftype.startswith("IQ3_S mix"):
        return "IQ3_M"
    head, _, tail = ftype.partition(" - ")
    head = head.strip()
    if head == "Q2_K" and tail == "Medium":
        return "Q2_K"
    if tail in _FTYPE_WORDS and re.fullmatch(r"Q\d_K", head):
        return f"{head}_{_FTYPE_WORDS[tail]}"
    return head if re.fullmatch(r"[A-Z0-9_]+", head) else None


def llama_bench_test_name(n_prompt: int, n_gen: int, n_depth: int = 0) -> str:
    """llama-bench's test name: ``pp512``, ``tg128``, ``pp512+tg128``, with ``@ dN`` for a depth."""
    if n_prompt and n_gen:
        base = f"pp{n_prompt}+tg{n_gen}"
    elif n_prompt:
        base = f"pp{n_prompt}"
    else:
        base = f"tg{n_gen}"
    return f"{base} @ d{n_depth}" if n_depth else base


def _where(path: Path, fmt: str, index: int, line: int | None) -> str:
    return f"{path} line {line}" if fmt == "jsonl" and line is not None else f"{path} entry {index + 1}"


def read_llama_bench(path: str | Path) -> tuple[str, list[tuple[int | None, dict[str, Any]]]]:
    """Read and check a llama-bench ``-o json`` (an array) or ``-o jsonl`` (an object per line)
    file. Returns the format and the entries with their line numbers (JSONL) or None (JSON).
    Raises LabError naming the file and the line or entry at fault."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabError(f"No such file: {path}") from None
    except IsADirectoryError:
        raise LabError(f"{path} is a folder, not a llama-bench output file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"Cannot read {path}: {exc}") from None
    stripped = text.lstrip()
    entries: list[tuple[int | None, Any]] = []
    if stripped.startswith("["):
        fmt = "json"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabError(f"{path} line {exc.lineno} is not valid JSON ({exc.msg}); "
                           "expected llama-bench -o json or -o jsonl output") from None
        entries = [(None, item) for item in data]
    else:
        fmt = "jsonl"
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise LabError(f"{path} line {number} is not valid JSON ({exc.msg}); "
                               "expected llama-bench -o json or -o jsonl output") from None
    if not entries:
        raise LabError(f"{path} holds no llama-bench results")
    for index, (line, entry) in enumerate(entries):
        where = _where(path, fmt, index, line)
        if not isinstance(entry, dict):
            raise LabError(f"{where} is not a llama-bench result object")
        missing = [k for k in LLAMA_BENCH_REQUIRED if k not in entry or entry[k] is None]
        if missing:
            raise LabError(f"{where} lacks the llama-bench key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        for key in ("n_prompt", "n_gen", "n_depth"):
            value = entry.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise LabError(f"{where} has {key} = {value!r}, not a token count")
        if not entry["n_prompt"] and not entry["n_gen"]:
            raise LabError(f"{where} has neither prompt nor generated tokens (n_prompt and n_gen are 0)")
        for key in ("avg_ns", "avg_ts", "stddev_ns", "stddev_ts", "model_size", "model_n_params"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                raise LabError(f"{where} has {key} = {value!r}, not a number")
        for key in ("samples_ns", "samples_ts"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, list)
                                      or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise LabError(f"{where} has {key} that is not a list of numbers")
    return fmt, entries


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _iso_time(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.astimezone(_dt.timezone.utc).isoformat(timespec="microseconds")


def imported_machine(entry: dict[str, Any]) -> dict[str, Any]:
    """The ``machines`` row for an imported llama-bench entry: only what the file says
    (cpu_info, gpu_info, backends, build_commit); the rest is NULL. Its id is
    ``import-`` + 16 hex digits of a hash of those fields, so imports are easy to tell apart
    (``rightsizer results --machine import-``) and the same hardware and build merges."""
    fields = {
        "cpu_info": entry.get("cpu_info") or None, "gpu_info": entry.get("gpu_info") or None,
        "backends": entry.get("backends") or None, "build_commit": entry.get("build_commit") or None,
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return {"id": IMPORTED_MACHINE_PREFIX + digest, **fields}


def _imported_model(store: "Store", entry: dict[str, Any]) -> dict[str, Any]:
    filename = Path(str(entry["model_filename"])).name
    size, n_params = _int_or_none(entry.get("model_size")), _int_or_none(entry.get("model_n_params"))
    # The same file already known by its sha256 (same name, size and parameter count): use it,
    # so quality and eval figures of that model meet the imported speeds.
    known = store.query("select * from models where model_filename = ? and id not like 'file:%'", [filename])
    same = [m for m in known if m.get("model_size") == size and m.get("model_n_params") == n_params and size]
    if len(same) == 1:
        return same[0]
    return {
        "id": f"file:{filename}", "model_filename": filename, "path": str(entry["model_filename"]),
        "model_type": entry.get("model_type"), "file_type": quant_from_model_type(entry.get("model_type")),
        "model_size": size, "model_n_params": n_params, "source": IMPORT_KIND,
    }


def import_llama_bench(store: "Store", path: str | Path) -> int:
    """Import llama-bench ``-o json`` or ``-o jsonl`` output; returns the number of results stored.

    Each model (per machine) in the file becomes a run of kind ``llama-bench-import`` with one
    ``results`` row per entry: the test name as llama-bench writes it (``pp512``, ``tg128``,
    ``pp512+tg128``, ``tg128 @ d512``), its times and speeds, every repetition, and ``noisy``
    when the speeds' coefficient of variation exceeds 5%. The machine row holds only what the
    file says (see :func:`imported_machine`); the model row is keyed ``file:<file name>`` unless
    the same file is already known by its sha256. Figures the file does not hold (memory, energy,
    latency) stay NULL. The whole file is checked before anything is written, and a file
    already imported (same content) is refused.
    """
    from lab import __version__
    from lab.stats import NOISY_CV, cv as _cv

    path = Path(path)
    fmt, entries = read_llama_bench(path)
    file_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    previous = store.query(
        "select id from runs where kind = ? and json_extract(config, '$.sha256') = ?", [IMPORT_KIND, file_sha])
    if previous:
        raise LabError(f"{path} was already imported (run {short_id(previous[0]['id'])})")

    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for index, (line, entry) in enumerate(entries):
        machine = imported_machine(entry)
        model = _imported_model(store, entry)
        group = groups.setdefault((machine["id"], model["id"]), {"machine": machine, "model": model, "items": []})
        group["items"].append((index, line, entry))

    count = 0
    for group in groups.values():
        store.upsert_machine(group["machine"])
        model = group["model"]
        if model["id"].startswith("file:"):
            store.upsert_model(model)
        items = group["items"]
        times = [t for t in (_iso_time(e.get("test_time")) for _, _, e in items) if t]
        first = items[0][2]
        config = {
            "source_file": str(path.resolve()), "sha256": file_sha, "format": fmt,
            "entries": [i + 1 for i, _, _ in items], "build_number": first.get("build_number"),
            "model_path": str(first["model_filename"]),
        }
        run_id = store.create_run(
            IMPORT_KIND, machine_id=group["machine"]["id"], model_id=model["id"],
            model_filename=model["model_filename"], config=config, build_commit=first.get("build_commit"),
            lab_version=__version__, label=f"imported from {path.name}",
            n_gpu_layers=_int_or_none(first.get("n_gpu_layers")), use_mmap=_int_or_none(first.get("use_mmap")),
            **({"started_at": min(times)} if times else {}),
        )
        for _, _, e in items:
            samples_ns = e.get("samples_ns")
            samples_ts = e.get("samples_ts")
            if samples_ts:
                cv = _cv([float(v) for v in samples_ts])
            elif e.get("stddev_ts") is not None and e["avg_ts"]:
                cv = float(e["stddev_ts"]) / float(e["avg_ts"])
            else:
                cv = None
            store.add_result({
                "run_id": run_id, "machine_id": group["machine"]["id"], "model_id": model["id"],
                "model_filename": model["model_filename"], "model_type": e.get("model_type"),
                "model_size": _int_or_none(e.get("model_size")), "model_n_params": _int_or_none(e.get("model_n_params")),
                "backends": e.get("backends") or None,
                "test": llama_bench_test_name(e["n_prompt"], e["n_gen"], e.get("n_depth") or 0),
                "n_prompt": e["n_prompt"], "n_gen": e["n_gen"], "n_depth": e.get("n_depth") or 0,
                "n_batch": _int_or_none(e.get("n_batch")), "n_ubatch": _int_or_none(e.get("n_ubatch")),
                "n_threads": _int_or_none(e.get("n_threads")), "n_gpu_layers": _int_or_none(e.get("n_gpu_layers")),
                "type_k": e.get("type_k"), "type_v": e.get("type_v"),
                "flash_attn": _int_or_none(e.get("flash_attn")), "use_mmap": _int_or_none(e.get("use_mmap")),
                "repetitions": len(samples_ns) if isinstance(samples_ns, list) else None,
                "avg_ns": float(e["avg_ns"]), "stddev_ns": None if e.get("stddev_ns") is None else float(e["stddev_ns"]),
                "avg_ts": float(e["avg_ts"]), "stddev_ts": None if e.get("stddev_ts") is None else float(e["stddev_ts"]),
                "samples_ns": samples_ns, "samples_ts": samples_ts,
                "cv": cv, "noisy": None if cv is None else int(cv > NOISY_CV),
                "test_time": _iso_time(e.get("test_time")),
            })
            count += 1
        store.finish_run(run_id, "ok")
        if times:
            store.update_run(run_id, finished_at=max(times))
    return count
