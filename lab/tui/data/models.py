"""The Library and the ladder view: local and measured models with their header summary, the
figures measured for them (through ``lab.select``), memory fit and header details.

No Textual here: these run in worker threads (each with its own ``Store``) or in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import library
from lab.errors import ModelError
from lab.library import LocalModel


CONTEXT_STEPS = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]


@dataclass
class LibraryEntry:
    """A local model with its header summary (None when the header cannot be read)."""

    model: LocalModel
    summary: Any = None  # gguf_info.ModelSummary
    error: str | None = None
    model_id: str | None = None  # sha256, when known without hashing the file
    pp_ts: float | None = None
    tg_ts: float | None = None
    quality: dict[str, Any] | None = None  # newest ``quality`` row (any machine)
    evaluation: dict[str, Any] | None = None  # newest ``eval_runs`` row (any machine)
    row: dict[str, Any] | None = None  # the ``models`` row of a model known only from the store
    missing: bool = False  # measured once, but its file is no longer there

    @property
    def key(self) -> str:
        return str(self.model.path)

    @property
    def bench_arg(self) -> str:
        """The MODEL argument that names this entry on the Run screen (as on the CLI)."""
        if self.model.source == "demo":
            return library.DEMO_NAME
        if self.model.source in ("models", "hf-cache"):
            return self.model.name  # library names resolve as on the CLI, and read better
        return str(self.model.path)


def load_library(store: Any, models: list[LocalModel] | None = None) -> list[LibraryEntry]:
    """Scan the library (unless ``models`` is given) and read every header; never hashes a
    file: the model id comes from the store's hash cache or a registered row with that path.
    Every measured model the scan does not find follows, by its stored path (``missing`` when
    the file is gone)."""
    from lab.gguf_info import inspect

    models = library.scan() if models is None else models
    by_path = {row["path"]: row["id"] for row in store.models() if row.get("path")}
    entries = []
    for m in models:
        entry = LibraryEntry(model=m)
        try:
            entry.summary = inspect(m.path)
        except (ModelError, OSError) as exc:
            entry.error = str(exc)
        try:
            st = m.path.stat()
            entry.model_id = store.cached_sha256(m.path.resolve(), st.st_size, st.st_mtime_ns)
        except OSError:
            pass
        entry.model_id = entry.model_id or by_path.get(str(m.path)) or by_path.get(str(m.path.resolve()))
        entries.append(entry)
    entries += _measured_elsewhere(store, models, {e.model_id for e in entries if e.model_id})
    return entries


def _measured_elsewhere(store: Any, models: list[LocalModel], known_ids: set[str]) -> list[LibraryEntry]:
    """Library entries for measured models outside the scanned folders, by their stored path."""
    from lab.gguf_info import inspect

    seen = {str(m.path) for m in models} | {str(m.path.resolve()) for m in models}
    out = []
    for row in library.measured_models(store):
        if row["id"] in known_ids or not row.get("path") or row["path"] in seen:
            continue
        path = Path(row["path"])
        model = LocalModel(name=str(row.get("model_filename") or path.name), path=path, source="path",
                           size=int(row.get("file_size") or 0))
        entry = LibraryEntry(model=model, model_id=row["id"], row=row, missing=not path.is_file())
        if entry.missing:
            entry.error = f"The file is gone: {path}"
        else:
            try:
                entry.summary = inspect(path)
            except (ModelError, OSError) as exc:
                entry.error = str(exc)
        out.append(entry)
    return out


known_model_id = library.known_model_id  # the deletion plan's lookup: one way to find an id


def last_speeds(store: Any, machine_id: str | None) -> dict[str, dict[str, Any]]:
    """pp and tg t/s per model id measured on this machine, both at the model's best measured
    configuration (``config`` names it; see :func:`lab.select.best_speeds`)."""
    from lab.select import best_speeds

    return best_speeds(store, machine_id) if machine_id else {}


# --- quality and accuracy ---------------------------------------------------------------------

# Fidelity and task accuracy belong to the file, not the hardware (the same weights give the same
# logits within float noise), so these come from any machine; speed and memory from this one.
QUALITY_KEYS = ("kld_mean", "kld_p99", "ppl", "ppl_ratio", "same_top_p", "reference_model_id")
EVAL_KEYS = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "format_valid_rate", "eval_suite",
             "eval_constrained")


def model_figures(store: Any) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The newest quality row and the newest eval run of every model, by model id (one query
    each, whatever the number of models)."""
    from lab.ladder import accuracy_by_model, quality_by_model

    return quality_by_model(store), accuracy_by_model(store)


def attach_model_figures(store: Any, rows: list[dict[str, Any]]) -> None:
    """Add ``model_kld`` and ``model_accuracy`` (the newest of the row's model, None when never
    measured) to result rows in place: two queries for a page, none per row."""
    quality, accuracy = model_figures(store)
    for row in rows:
        q = quality.get(row.get("model_id") or "")
        e = accuracy.get(row.get("model_id") or "")
        row["model_kld"] = q.get("kld_mean") if q else None
        row["model_accuracy"] = e.get("accuracy") if e else None


def ladder_base(store: Any, model_id: str | None) -> str | None:
    """The base model of the ladder ``model_id`` belongs to: its ``base_model_id`` when it was
    built from one, itself when others were built from it, None when it is in no ladder."""
    if not model_id:
        return None
    rows = store.query("select base_model_id from models where id = ?", [model_id])
    if rows and rows[0].get("base_model_id"):
        return str(rows[0]["base_model_id"])
    built = store.query("select 1 from models where base_model_id = ? limit 1", [model_id])
    return model_id if built else None


@dataclass
class Ladder:
    """The ladder view's data: the base model's row and one row per quant, largest first."""

    base_model_id: str
    base: dict[str, Any] | None  # the base's ``models`` row (None: forgotten, only its quants remain)
    rows: list[dict[str, Any]]
    reference: dict[str, Any] | None  # the ``models`` row the quality figures were measured against
    front: set[str]  # model ids on the size / KLD Pareto front
    # endpoints with an eval run on the ladder's suite (see ladder_baselines)
    baselines: list[dict[str, Any]] = field(default_factory=list)


def load_ladder(store: Any, base_model_id: str, machine_id: str | None) -> Ladder:
    """``lab.ladder.ladder_table`` with speed and memory from this machine and fidelity and
    accuracy from any machine (see QUALITY_KEYS), plus the size / mean-KLD Pareto front."""
    from lab.ladder import ladder_table
    from lab.report import pareto_front

    rows = ladder_table(store, base_model_id, machine_id=machine_id) if machine_id else []
    anywhere = ladder_table(store, base_model_id)
    if not rows:
        # no machine known yet: show no speeds rather than another machine's
        rows = [dict(r, pp=None, tg=None, pp_test=None, tg_test=None, peak_rss_bytes=None) for r in anywhere]
    else:
        by_id = {r["model_id"]: r for r in anywhere}
        for row in rows:
            other = by_id.get(row["model_id"], {})
            row.update({k: other.get(k) for k in (*QUALITY_KEYS, *EVAL_KEYS)})
    refs = {r["reference_model_id"] for r in rows if r.get("reference_model_id")}
    reference = store.get("models", sorted(refs)[0]) if len(refs) == 1 else None
    front = pareto_front(rows, {"file_size": "min", "kld_mean": "min"}).front
    return Ladder(base_model_id, store.get("models", base_model_id), rows, reference,
                  {r["model_id"] for r in front}, ladder_baselines(store, rows))


def _newest_eval_run(store: Any, model_id: str, suite: str) -> dict[str, Any] | None:
    rows = store.query("select * from eval_runs where model_id = ? and suite = ? "
                       "order by created_at desc, id desc limit 1", [model_id, suite])
    return rows[0] if rows else None


def ladder_baselines(store: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every registered endpoint with an eval run on the suite the ladder's accuracy comes from
    (one suite only: otherwise nothing is comparable), as ``recommend --baseline`` sees it
    (:mod:`lab.report.baseline`): its newest chat latency, its cost per 1M tokens from its prices,
    its accuracy on that suite, and ``vs`` — every rung compared with it (paired accuracy, time
    per token, cost), by model id."""
    from lab.report.baseline import ENDPOINT_PREFIX, compare_to_baseline, resolve_baseline

    suites = {r["eval_suite"] for r in rows if r.get("eval_suite")}
    if len(suites) != 1:
        return []
    suite = suites.pop()
    names = store.query("select distinct endpoints.name as name from endpoints join eval_runs "
                        "on eval_runs.model_id = endpoints.id where endpoints.removed_at is null "
                        "and eval_runs.suite = ? order by endpoints.name", [suite])
    out = []
    for name in (r["name"] for r in names):
        base = resolve_baseline(store, ENDPOINT_PREFIX + name, [])
        ev = _newest_eval_run(store, base["model_id"], suite) or {}
        row = dict(base, file_type=base["model_filename"], accuracy=ev.get("accuracy"),
                   accuracy_ci_low=ev.get("accuracy_ci_low"), accuracy_ci_high=ev.get("accuracy_ci_high"),
                   format_valid_rate=ev.get("format_valid_rate"), eval_suite=suite, n_items=ev.get("n_items"))
        row["vs"] = {}
        for rung in rows:
            mine = _newest_eval_run(store, rung["model_id"], suite)
            candidate = {"model_filename": rung.get("model_filename"), "eval_run_id": mine["id"] if mine else None,
                         "eval_suite": suite, "tg_ts": rung.get("tg"), "usd_per_mtok": rung.get("usd_per_mtok")}
            row["vs"][rung["model_id"]] = {
                "is_baseline": False, "vs_baseline": compare_to_baseline(store, candidate, base, base["model_filename"])}
        out.append(row)
    return out


@dataclass
class Fit:
    est_bytes: int | None
    n_ctx: int | None
    fits_ram: bool | None
    fits_gpu: bool | None  # None: no GPU figures on this machine

    @property
    def label(self) -> str:
        if self.fits_ram is None:
            return "n/a"
        if self.fits_gpu is None:
            return "yes" if self.fits_ram else "no"
        parts = [name for name, ok in (("RAM", self.fits_ram), ("GPU", self.fits_gpu)) if ok]
        return "+".join(parts) if parts else "no"


def memory_fit(summary: Any, n_ctx: int, available: int | None, vram_total: int | None) -> Fit:
    """The memory estimate at ``n_ctx`` (capped at the training context, as ``models list``
    does) and whether it fits in available RAM and, with every layer offloaded, in VRAM."""
    from lab.gguf_info import estimate_memory

    if summary is None:
        return Fit(None, None, None, None)
    ctx = min(n_ctx, summary.n_ctx_train or n_ctx)
    est = estimate_memory(summary, ctx)
    fits_ram = None if available is None else est.host_bytes <= available
    fits_gpu = None
    if vram_total:
        full = estimate_memory(summary, ctx, n_gpu_layers=(summary.n_layer or 0) + 1)
        fits_gpu = full.gpu_weights_bytes + full.kv_bytes + full.compute_bytes <= vram_total
    return Fit(est.host_bytes, ctx, fits_ram, fits_gpu)


def model_details(path: Path) -> dict[str, Any]:
    """Everything the detail panel shows: the summary and every GGUF metadata key."""
    from lab.gguf_info import read_file_header, summarize

    header = read_file_header(path)
    summary = summarize(header, path)
    metadata = {}
    for key, value in sorted(header.metadata.items()):
        if isinstance(value, dict) and "array_len" in value:
            value = f"[{value['array_len']} items]"
        elif isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, str) and len(value) > 200:
            value = value[:200].replace("\n", " ") + f"… ({len(value)} chars)"
        metadata[key] = value
    return {"summary": summary, "metadata": metadata, "gguf_version": header.version,
            "n_tensors": len(header.tensors)}


# Deletion lives in the domain, where ``models rm`` uses the same plan.
DeletionPlan = library.DeletionPlan
deletion_plan = library.deletion_plan
delete_model = library.delete_model
