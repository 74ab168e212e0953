"""The model table (one row per model and machine, every figure at one configuration) and the
Pareto frontier over its rows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from lab.report.common import IMPORTED_MACHINE_PREFIX, bool_or_none
from lab.report.costs import add_costs
from lab.select import Selection, is_swapped, select

if TYPE_CHECKING:
    from lab.store import Store


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
                *, suite: str | None = None, config: Mapping[str, Any] | None = None,
                unmeasured: bool = True) -> list[dict[str, Any]]:
    """One row per model and machine, every speed, latency and memory figure from ONE
    configuration (see :func:`lab.select.select`); smallest file first.

    ``machine_id`` (an id, an id prefix or a hostname) keeps one machine; None keeps every
    machine, so a model measured on two machines gets two rows. ``config`` (keys of
    :data:`lab.select.CONFIG_KEYS`) judges that configuration only; without it each model is
    shown at its best measured one. With ``unmeasured``, a model that has some stored figure
    (quality, eval, or a result at another configuration) but no ``test_pp``, ``test_tg`` or chat
    result here gets a row too, its speeds None. Keys:

    * model: ``model_id``, ``model_filename``, ``path``, ``file_type`` (quant), ``file_size``
      (bytes of the file), ``model_size`` (llama.cpp's bytes of the weights), ``model_n_params``,
      ``arch``
    * machine: ``machine_id``, ``hostname``, ``imported`` (figures from a llama-bench file)
    * configuration: ``config`` (``"t=2 ngl=0 b=2048 ub=512 fa=auto kv=f16/f16"``, None when
      nothing was measured), ``config_values`` (the settings as a dict), ``other_configs`` (how
      many other configurations were measured, not mixed in), ``builds``, ``n_threads``,
      ``n_gpu_layers``, ``n_ctx`` (the largest context the chosen tests used)
    * speed: ``pp_ts``, ``tg_ts`` (avg t/s) with ``*_stddev_ts``, ``*_noisy``, ``*_result_id``
    * chat: ``ttft_ms``, ``itl_p50_ms``, ``itl_p95_ms``, ``itl_p99_ms``, ``e2e_ms``, ``chat_ts``,
      ``chat_result_id``
    * memory: ``peak_rss_bytes`` / ``peak_vram_bytes`` / ``est_memory_bytes``, the largest of
      the selected tests; ``j_per_token`` is the tg test's energy per generated token
    * ``measured_at`` (newest test time)
    * quality (newest ``quality`` row of the model, any machine): ``kld_mean``, ``kld_p99``,
      ``ppl_ratio``, ``same_top_p``, ``quality_reference``
    * eval (newest completed ``eval_runs`` row, of ``suite`` when given): ``accuracy``,
      ``accuracy_ci_low``, ``accuracy_ci_high``, ``format_valid_rate``, ``eval_suite``,
      ``eval_n_items``, ``eval_run_id``
    * cost (:func:`lab.report.costs.row_cost`): ``usd_per_mtok`` per 1M generated tokens at the
      tg speed, ``cost_basis``, ``cost_missing`` (what it needs when it cannot be computed)

    Every figure that was never measured is None.
    """
    selections = select(store, machine_id=machine_id, pp_test=test_pp, tg_test=test_tg, config=config)
    quality = _newest_quality(store)
    evals = _newest_evals(store, suite)
    rows = [_model_row(sel, test_pp, test_tg, quality.get(sel.model_id), evals.get(sel.model_id))
            for sel in selections]
    if unmeasured:
        shown = {r["model_id"] for r in rows}
        elsewhere = {s.model_id for s in select(store, machine_id=machine_id, any_size=True)}
        for model_id in sorted((set(quality) | set(evals) | elsewhere) - shown):
            info = store.get("models", model_id) or {}
            q, e = quality.get(model_id) or {}, evals.get(model_id) or {}
            info.setdefault("model_filename", q.get("model_filename") or e.get("model_filename"))
            rows.append(_unmeasured_row(model_id, info, test_pp, test_tg, q, e))
    rows.sort(key=lambda r: (none_last(r["file_size"]), none_last(r["model_size"]),
                             none_last(r["peak_rss_bytes"]), r["model_filename"] or "", r["hostname"] or "",
                             r["machine_id"] or ""))
    return add_costs(store, rows)


def none_last(value: float | None) -> tuple[int, float]:
    """A sort key that puts None after every number."""
    return (1, 0.0) if value is None else (0, float(value))


def _max_known(values: Iterable[Any]) -> Any:
    known = [v for v in values if v is not None]
    return max(known) if known else None


_SPEED_KEYS = ("ts", "stddev_ts", "noisy", "result_id")
_CHAT_KEYS = ("ttft_ms", "itl_p50_ms", "itl_p95_ms", "itl_p99_ms", "e2e_ms", "chat_ts", "chat_result_id")
_MEMORY_KEYS = ("peak_rss_bytes", "peak_vram_bytes", "est_memory_bytes", "j_per_token", "measured_at", "n_ctx")


def _figures(row: dict[str, Any], quality: Mapping[str, Any], ev: Mapping[str, Any]) -> dict[str, Any]:
    row.update(kld_mean=quality.get("kld_mean"), kld_p99=quality.get("kld_p99"), ppl_ratio=quality.get("ppl_ratio"),
               same_top_p=quality.get("same_top_p"), quality_reference=quality.get("reference_filename"))
    row.update(accuracy=ev.get("accuracy"), accuracy_ci_low=ev.get("accuracy_ci_low"),
               accuracy_ci_high=ev.get("accuracy_ci_high"), format_valid_rate=ev.get("format_valid_rate"),
               eval_suite=ev.get("suite"), eval_n_items=ev.get("n_items"), eval_run_id=ev.get("id"))
    return row


def _unmeasured_row(model_id: str, info: Mapping[str, Any], test_pp: str, test_tg: str,
                    quality: Mapping[str, Any], ev: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model_id": model_id, "machine_id": None, "hostname": None, "imported": False,
        "model_filename": info.get("model_filename"), "path": info.get("path"), "file_type": info.get("file_type"),
        "file_size": info.get("file_size"), "model_size": info.get("model_size"),
        "model_n_params": info.get("model_n_params"), "arch": info.get("arch"),
        "config": None, "config_values": None, "other_configs": 0, "builds": [], "n_threads": None,
        "n_gpu_layers": None, "pp_test": test_pp, "tg_test": test_tg,
    }
    row.update({f"{p}_{k}": None for p in ("pp", "tg") for k in _SPEED_KEYS})
    row.update({k: None for k in (*_CHAT_KEYS, *_MEMORY_KEYS)})
    return _figures(row, quality, ev)


def _model_row(sel: Selection, test_pp: str, test_tg: str, quality: dict[str, Any] | None,
               ev: dict[str, Any] | None) -> dict[str, Any]:
    pp, tg, chat = sel.pp, sel.tg, sel.chat
    any_row = sel.any_row
    row: dict[str, Any] = {
        "model_id": sel.model_id, "machine_id": sel.machine_id, "hostname": sel.hostname,
        "imported": (sel.machine_id or "").startswith(IMPORTED_MACHINE_PREFIX),
        "model_filename": any_row.get("m_filename") or any_row.get("model_filename"),
        "path": any_row.get("m_path"), "file_type": any_row.get("file_type"), "file_size": any_row.get("file_size"),
        "model_size": any_row.get("m_model_size") or any_row.get("model_size"),
        "model_n_params": any_row.get("m_n_params") or any_row.get("model_n_params"),
        "arch": any_row.get("arch"),
        "config": sel.config.label(), "config_values": sel.config.to_dict(), "other_configs": sel.other_configs,
        "builds": sel.builds, "n_threads": sel.config.n_threads, "n_gpu_layers": sel.config.n_gpu_layers,
    }
    for prefix, test_name, res in (("pp", test_pp, pp), ("tg", test_tg, tg)):
        row[f"{prefix}_test"] = test_name
        row[f"{prefix}_ts"] = res.get("avg_ts") if res else None
        row[f"{prefix}_stddev_ts"] = res.get("stddev_ts") if res else None
        row[f"{prefix}_noisy"] = bool_or_none(res.get("noisy")) if res else None
        row[f"{prefix}_result_id"] = res["id"] if res else None
    for k in ("ttft_ms", "itl_p50_ms", "itl_p95_ms", "itl_p99_ms", "e2e_ms"):
        row[k] = chat.get(k) if chat else None
    row["chat_ts"] = chat.get("avg_ts") if chat else None
    row["chat_result_id"] = chat["id"] if chat else None
    chosen = sel.rows
    for k in ("peak_rss_bytes", "peak_vram_bytes", "est_memory_bytes", "n_ctx"):
        row[k] = _max_known(r.get(k) for r in chosen)
    row["j_per_token"] = tg.get("j_per_token") if tg else None
    row["swapped"] = any(is_swapped(r) for r in chosen)
    row["measured_at"] = _max_known(r.get("test_time") for r in chosen)
    return _figures(row, quality or {}, ev or {})


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

