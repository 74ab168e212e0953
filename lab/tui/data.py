"""What the screens show, read from the domain as plain values.

No Textual here: these functions run in worker threads (each with its own ``Store``) or in tests.
Queries page, filter and sort in SQLite (``Store.results``), so a screen never holds more rows
than it shows.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import psutil

from lab import library
from lab.errors import LabError, ModelError
from lab.library import LocalModel
from lab.nvml import GpuReading

# --- the machine ------------------------------------------------------------------------------


@dataclass
class MachineContext:
    """What the app knows about this machine: its fingerprint (a ``machines`` row) and the
    figures the Run screen's defaults and the Library's fit column need."""

    fingerprint: dict[str, Any]
    physical_cores: int
    gpu_offload: bool | None
    memory_total: int | None
    vram_total: int | None
    nvml_status: str = "n/a"

    @property
    def id(self) -> str | None:
        return self.fingerprint.get("id")


def detect_machine() -> MachineContext:
    """Fingerprint this machine (the llama.cpp build comes from an engine child the first time,
    ~0.5 s, cached after: call it in a worker). This process never loads llama.cpp."""
    from lab import hardware, nvml

    fp = hardware.fingerprint()
    offload = fp.get("gpu_offload")
    return MachineContext(
        fingerprint=fp, physical_cores=hardware.physical_cores(),
        gpu_offload=None if offload is None else bool(offload), memory_total=hardware.memory_total(),
        vram_total=fp.get("vram_bytes"), nvml_status=nvml.status(),
    )


@dataclass
class SystemReading:
    """One look at the whole machine (not one process): the Machine screen's gauges."""

    cpu_per_core: list[float]
    cpu_total: float | None
    memory_total: int | None
    memory_available: int | None
    swap_total: int | None
    swap_used: int | None
    load_avg: tuple[float, float, float] | None
    gpus: list[GpuReading] = field(default_factory=list)

    @property
    def memory_used(self) -> int | None:
        if self.memory_total is None or self.memory_available is None:
            return None
        return self.memory_total - self.memory_available


class SystemProbe:
    """Reads the machine's CPU, memory and GPUs. CPU percentages are over the time since the
    previous ``read()`` (psutil's non-blocking mode), so a read never sleeps."""

    def __init__(self) -> None:
        psutil.cpu_percent(percpu=True)

    def memory_available(self) -> int | None:
        return int(psutil.virtual_memory().available)

    def read(self) -> SystemReading:
        per_core = [float(v) for v in psutil.cpu_percent(percpu=True)]
        vm = psutil.virtual_memory()
        try:
            sw = psutil.swap_memory()
            swap_total, swap_used = int(sw.total), int(sw.used)
        except (OSError, RuntimeError):
            swap_total = swap_used = None
        try:
            load = tuple(float(x) for x in os.getloadavg())
        except (AttributeError, OSError):
            load = None
        return SystemReading(
            cpu_per_core=per_core, cpu_total=sum(per_core) / len(per_core) if per_core else None,
            memory_total=int(vm.total), memory_available=int(vm.available),
            swap_total=swap_total, swap_used=swap_used, load_avg=load,  # type: ignore[arg-type]
            gpus=read_gpus(),
        )


def read_gpus() -> list[GpuReading]:
    """Per-GPU memory, utilisation, power and temperature through NVML; [] without NVML.
    Figures a device cannot give are None."""
    from lab import nvml

    return nvml.read_gpus()


# --- the library ------------------------------------------------------------------------------

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


def last_speeds(store: Any, machine_id: str | None) -> dict[str, dict[str, float]]:
    """Newest pp and tg t/s per model id measured on this machine."""
    return store.last_speeds(machine_id) if machine_id else {}


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
    front = pareto_front(rows, {"size": "min", "kld_mean": "min"}).front
    return Ladder(base_model_id, store.get("models", base_model_id), rows, reference,
                  {r["model_id"] for r in front})


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


# --- results ----------------------------------------------------------------------------------

FILTER_KEYS = ("model", "quant", "test", "machine", "since", "run")


def parse_filter(text: str) -> dict[str, str]:
    """``smol quant:Q4_1 test:tg128 since:2025-06-01`` -> Store.results keyword filters.
    Bare words filter the model. Raises LabError naming an unknown key."""
    out: dict[str, str] = {}
    bare = []
    for word in text.split():
        key, sep, value = word.partition(":")
        if sep and key.lower() in FILTER_KEYS and value:
            out[key.lower()] = value
        elif sep and key and key.lower() not in FILTER_KEYS:
            raise LabError(f"Unknown filter '{key}'; use {', '.join(k + ':' for k in FILTER_KEYS)} or a model name")
        else:
            bare.append(word)
    if bare:
        out["model"] = " ".join(bare)
    return out


def results_page(store: Any, filters: dict[str, str], order: str, descending: bool,
                 limit: int, offset: int) -> tuple[list[dict[str, Any]], bool]:
    """One page of results and whether another page follows (one extra row is read)."""
    rows = store.results(**filters, order=order, descending=descending, limit=limit + 1, offset=offset)
    return rows[:limit], len(rows) > limit


def count_results(store: Any, filters: dict[str, str]) -> int | None:
    """How many results match, when the store can count them cheaply (else None)."""
    counter = getattr(store, "count_results", None)
    if counter is None:
        if not filters:
            return int(store.query("select count(*) as n from results")[0]["n"])
        return None
    return int(counter(**filters))


def results_by_id(store: Any, ids: Iterable[str]) -> list[dict[str, Any]]:
    """Result rows (with hostname and quant) in the order given."""
    rows = []
    machines: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for rid in ids:
        row = store.get("results", rid)
        if row is None:
            continue
        mid = row.get("machine_id")
        if mid not in machines:
            machines[mid] = store.get("machines", mid) if mid else None
        model_id = row.get("model_id")
        if model_id not in models:
            models[model_id] = store.get("models", model_id) if model_id else None
        machine, model = machines[mid] or {}, models[model_id] or {}
        row.update(hostname=machine.get("hostname"), file_type=model.get("file_type"),
                   file_size=model.get("file_size"), arch=model.get("arch"))
        rows.append(row)
    return rows


# metric key, label, lower is better (None: neither way is better, e.g. CPU use)
COMPARE_METRICS: list[tuple[str, str, bool | None]] = [
    ("avg_ts", "t/s", False),
    ("stddev_ts", "t/s stddev", True),
    ("cv", "CV", True),
    ("peak_rss_bytes", "peak RSS", True),
    ("est_memory_bytes", "est. memory", True),
    ("peak_vram_bytes", "peak VRAM", True),
    ("mean_cpu_percent", "mean CPU %", None),
    ("mean_power_w", "mean power W", True),
    ("j_per_token", "J/token", True),
    ("ttft_ms", "TTFT ms", True),
    ("itl_p50_ms", "ITL p50 ms", True),
    ("itl_p95_ms", "ITL p95 ms", True),
    ("e2e_ms", "e2e ms", True),
    ("model_size", "model size", None),
]


@dataclass
class ChartBar:
    label: str  # model file (quant)
    value: float
    n: int


def chart_bars(store: Any, filters: dict[str, str], *, limit: int = 5000,
               tests: int = 3) -> tuple[dict[str, list[ChartBar]], int]:
    """Mean t/s per model/quant for the most frequent tests among the newest ``limit``
    matching results (the cap keeps the chart instant at any database size)."""
    rows = store.results(**filters, order="test_time", descending=True, limit=limit)
    counts: dict[str, int] = {}
    for r in rows:
        if r.get("avg_ts") is not None and r.get("n_seq") is None:
            counts[r["test"]] = counts.get(r["test"], 0) + 1
    chosen = sorted(counts, key=lambda t: (-counts[t], t))[:tests]
    groups: dict[str, dict[str, list[float]]] = {t: {} for t in chosen}
    for r in rows:
        if r["test"] in groups and r.get("avg_ts") is not None:
            label = r["model_filename"] or "n/a"
            if r.get("file_type") and r["file_type"] not in label:
                label += f" ({r['file_type']})"
            groups[r["test"]].setdefault(label, []).append(float(r["avg_ts"]))
    out = {
        test: sorted((ChartBar(label, statistics.fmean(v), len(v)) for label, v in by_label.items()),
                     key=lambda b: -b.value)
        for test, by_label in groups.items()
    }
    out.update(batched_curves(rows))
    return out, len(rows)


def batched_curves(rows: list[dict[str, Any]]) -> dict[str, list[ChartBar]]:
    """Generation speed against the number of sequences B for batched results: per model and
    row shape, one group of aggregate S_TG and one of S_TG per sequence, bars in order of B."""
    acc: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in rows:
        if r.get("n_seq") is None or r.get("s_tg") is None:
            continue
        shape = (f"pp{r['n_prompt']}+tg{r['n_gen']}" + (" pps" if r.get("pp_shared") else "")
                 + (" kvu" if r.get("kv_unified") else ""))
        acc.setdefault((r["model_filename"] or "n/a", shape), {}).setdefault(int(r["n_seq"]), []).append(float(r["s_tg"]))
    out: dict[str, list[ChartBar]] = {}
    for (model, shape), by_b in acc.items():
        bs = sorted(by_b)
        out[f"{model} {shape}: S_TG, all sequences"] = [
            ChartBar(f"B={b}", statistics.fmean(by_b[b]), len(by_b[b])) for b in bs]
        out[f"{model} {shape}: S_TG per sequence"] = [
            ChartBar(f"B={b}", statistics.fmean(by_b[b]) / b, len(by_b[b])) for b in bs]
    return out


@dataclass
class ScatterPoint:
    label: str
    x: float  # file size, bytes
    y: float  # t/s


def scatter_points(store: Any, filters: dict[str, str], test_prefix: str = "tg",
                   limit: int = 5000) -> list[ScatterPoint]:
    """Speed against file size: one point per model file (mean t/s of its ``test_prefix``
    tests among the newest ``limit`` matching results)."""
    rows = store.results(**filters, order="test_time", descending=True, limit=limit)
    acc: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        size = r.get("file_size") or r.get("model_size")
        if r.get("avg_ts") is None or not size or not str(r["test"]).startswith(test_prefix):
            continue
        acc.setdefault((r["model_filename"], float(size)), []).append(float(r["avg_ts"]))
    return [ScatterPoint(label, size, statistics.fmean(v)) for (label, size), v in acc.items()]


def run_detail(store: Any, run_id: str) -> dict[str, Any] | None:
    """A run with its config, machine, model, results and samples."""
    import json

    run = store.get("runs", run_id)
    if run is None:
        return None
    try:
        config = json.loads(run.get("config") or "{}")
    except ValueError:
        config = {}
    return {
        "run": run, "config": config,
        "machine": store.get("machines", run["machine_id"]) if run.get("machine_id") else None,
        "model": store.get("models", run["model_id"]) if run.get("model_id") else None,
        "results": store.results(run=run_id, order="test_time"),
        "samples": store.samples(run_id),
    }


def series(samples: list[dict[str, Any]], key: str, scale: float = 1.0) -> list[float] | None:
    """One column of a run's samples as floats (None values skipped); None when all missing."""
    values = [float(s[key]) / scale for s in samples if s.get(key) is not None]
    return values or None


# --- the Run screen's form --------------------------------------------------------------------


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


def finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]
