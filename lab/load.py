"""Load with a latency objective: how many users a model serves on this machine.

A load run serves levels — N closed-loop users (``load u4``) or Poisson arrivals at R requests/s
(``load r1.5``) — for a fixed duration each, in an engine child that batches requests
continuously the way llama-server's slots do (:mod:`lab.engine.serving`). Per level it stores one
``results`` row (throughput, TTFT/ITL/e2e percentiles, goodput, SLO attainment, peak RSS, the KV
cache those slots need) and one ``load_requests`` row per request.

Goodput is the rate of requests that met every objective (a failed or timed-out request never
does); SLO attainment is their share of all requests sent. ``find_max`` searches for the most
users (or the highest rate) at which attainment stays at or above :data:`ATTAINMENT_TARGET`, and
stores it on the run as ``max_users_at_slo`` / ``max_rate_at_slo`` beside the objective.

One function, :func:`run_load`, serves every face: the CLI prints levels as they come, an app
would render the same events (``level_start``, ``load_progress`` with active sequences, queue
length and running percentiles, ``level`` with the stored row, ``probe`` during a search).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from lab import __version__
from lab.engine import protocol
from lab.errors import Cancelled, LabError, NotEnoughMemory
from lab.ids import short_id
from lab.load_figures import (ATTAINMENT_TARGET, Objective, level_figures, level_key, passes, request_figures,  # noqa: F401
                              running_figures, search_levels, store_level_rows)

OnEvent = Callable[[dict[str, Any]], None]
SAMPLE_INTERVAL_S = 0.1


@dataclass
class LoadOptions:
    """A load run: the levels (``users`` or ``rates``), how long each lasts, the requests."""

    model: str
    users: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    slots: int = 4  # sequences in the context for open-loop levels (closed loop: one per user)
    duration_s: float = 30.0
    prompts_file: Path | None = None
    max_tokens: int = 128
    objective: Objective = field(default_factory=Objective)
    find_max: bool = False
    max_users: int = 64  # the search's ceiling (users); for rates, max_rate
    max_rate: float = 64.0
    threads: int | None = None
    n_gpu_layers: int = -1
    seed: int = 1234
    request_timeout_s: float = 120.0
    warmup: bool = True
    force: bool = False
    timeout: float | None = None  # a child's whole run
    label: str | None = None


@dataclass
class LoadOutcome:
    status: str  # "ok", "failed" or "cancelled"
    run_id: str | None = None
    levels: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    max_level: float | None = None  # find_max: the answer (0: not even the smallest level)
    max_kv_bytes: int | None = None


# --- planning -----------------------------------------------------------------------------------


def validate(o: LoadOptions) -> None:
    """Refuse options that cannot make a load run, in one sentence."""
    if o.users and o.rates:
        raise LabError("Give either --users or --rate (comma lists), not both")
    if not (o.users or o.rates or o.find_max):
        raise LabError("Give the levels to serve: --users (comma list) or --rate (requests/s, comma list)")
    if any(u < 1 for u in o.users):
        raise LabError("--users values must be at least 1")
    if any(not (r > 0 and math.isfinite(r)) for r in o.rates):
        raise LabError("--rate values must be requests per second above 0")
    if o.duration_s <= 0 or o.max_tokens < 1 or o.slots < 1 or o.request_timeout_s <= 0:
        raise LabError("--duration and --request-timeout must be above 0, --max-tokens and --slots at least 1")
    if o.find_max and not o.objective.given:
        raise LabError("--find-max needs an objective: --slo-ttft-ms, --slo-itl-p95-ms or --slo-e2e-ms")
    if o.find_max and (o.max_users < 1 or o.max_rate <= 0):
        raise LabError("--max-users must be at least 1 and --max-rate above 0")


@dataclass
class _Plan:
    path: Path
    summary: Any
    payload: dict[str, Any]  # the child's job without its levels
    prompts: list[Any]


def memory_need(summary: Any, slots: int, max_tokens: int) -> tuple[int, int]:
    """The estimated peak RSS of ``slots`` sequences and the memory available now. Prompt
    lengths are known only once tokenized in the child: 512 tokens each are allowed, as the chat
    test's estimate does."""
    import psutil

    from lab.gguf_info import estimate_memory

    return estimate_memory(summary, slots * (512 + max_tokens)).host_bytes, psutil.virtual_memory().available


def _plan(o: LoadOptions, largest_slots: int) -> _Plan:
    from lab import library
    from lab.bench import load_prompts
    from lab.engine.protocol import ContextParams, ModelParams
    from lab.gguf_info import inspect
    from lab.hardware import default_threads

    local = library.resolve(o.model)
    summary = inspect(local.path)
    prompts = load_prompts(o.prompts_file)
    if not o.force:
        need, available = memory_need(summary, largest_slots, o.max_tokens)
        if need > available:
            raise NotEnoughMemory(f"{local.name} needs about {need / 2**30:.2f} GiB for {largest_slots} "
                                  f"slots but only {available / 2**30:.2f} GiB is available; use --force to try anyway")
    payload = {
        "model": asdict(ModelParams(str(local.path), n_gpu_layers=o.n_gpu_layers)),
        "ctx": asdict(ContextParams(n_threads=o.threads or default_threads())),
        "prompts": [asdict(p) for p in prompts], "max_tokens": o.max_tokens, "duration_s": o.duration_s,
        "seed": o.seed, "request_timeout_s": o.request_timeout_s, "warmup": o.warmup,
    }
    return _Plan(local.path, summary, payload, prompts)


# --- running ------------------------------------------------------------------------------------


class _Recorder:
    """One child's events as stored rows, and live events for the face."""

    def __init__(self, run: "_Run", levels: list[dict[str, Any]]):
        from lab.monitor import WindowTag

        self.run, self.levels = run, levels
        self.sampler: Any = None
        self.loaded: dict[str, Any] = {}
        self.tag = WindowTag()
        self.done: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self._samples: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def start_sampler(self, pid: int) -> None:
        from lab.monitor import Sampler

        self.sampler = Sampler(pid, interval=SAMPLE_INTERVAL_S, on_sample=self.on_sample)
        self.sampler.start()

    def on_sample(self, sample: Any) -> None:
        row = sample.to_row()
        row.update(run_id=self.run.run_id, test=self.tag.of(sample), tokens=None)
        with self._lock:
            self._samples.append(row)
        self.run.emit({"event": "sample", "run_id": self.run.run_id, "sample": row})

    def flush_samples(self) -> None:
        with self._lock:
            rows, self._samples = self._samples, []
        self.run.store.add_samples(rows)

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == protocol.LOADED:
            self.loaded = event
        elif kind == protocol.TEST_START:
            self.tag.begin(event["test"], self.sampler)
            self.done = []
            if self.sampler is not None:
                self.sampler.begin_window()
            level = self.levels[event["index"]]
            self.run.emit({"event": "level_start", "run_id": self.run.run_id, "test": event["test"],
                           "slots": event["slots"], **dict([level_key(level)])})
        elif kind == protocol.PROGRESS:
            self.done += event.get("done") or []
            self.run.emit({"event": "load_progress", "run_id": self.run.run_id, "test": event["test"],
                           "elapsed_s": event["elapsed_s"], "active": event["active"], "queue": event["queue"],
                           "sent": event["sent"], **running_figures(self.done)})
        elif kind == protocol.TEST_END:
            window = self.sampler.end_window() if self.sampler is not None else None
            # the child goes on to the next level's context while this one is stored: samples
            # from now on are not this level's
            with self._lock:
                self.tag.end(self._samples, event.get("mono"), self.sampler)
            row = self.run.store_level(self.levels[event["index"]], event, self.loaded, window)
            self.flush_samples()
            self.rows.append(row)
            self.run.emit({"event": "level", "run_id": self.run.run_id, "row": row})


class _Run:
    """One ``load`` run in the store: its levels, each served in an engine child."""

    def __init__(self, o: LoadOptions, store: Any, plan: _Plan, emit: OnEvent, cancel: threading.Event | None):
        from lab import hardware, library

        self.o, self.store, self.plan, self.emit, self.cancel = o, store, plan, emit, cancel
        self.machine = hardware.fingerprint()
        store.upsert_machine(self.machine)
        self.model_row = library.register(store, library.resolve(o.model))
        config = {"model": plan.payload["model"], "ctx": plan.payload["ctx"], "users": o.users, "rates": o.rates,
                  "slots": o.slots, "duration_s": o.duration_s, "max_tokens": o.max_tokens,
                  "n_prompts": len(plan.prompts), "seed": o.seed, "request_timeout_s": o.request_timeout_s,
                  "find_max": o.find_max, "max_users": o.max_users if o.find_max else None,
                  "objective": json.loads(o.objective.to_json())}
        self.run_id = store.create_run(
            "load", machine_id=self.machine["id"], model_id=self.model_row["id"],
            model_filename=self.model_row["model_filename"], config=config, lab_version=__version__,
            llama_cpp_version=self.machine.get("llama_cpp_version"), build_commit=self.machine.get("build_commit"),
            n_gpu_layers=o.n_gpu_layers, use_mmap=1, label=o.label, slo=o.objective.to_json())
        self.rows: list[dict[str, Any]] = []

    def serve(self, levels: list[dict[str, Any]]) -> Any:
        """Serve ``levels`` in one engine child; returns the child's outcome."""
        from lab.engine.runner import run_child

        recorder = _Recorder(self, levels)
        job = {"kind": "load", "payload": dict(self.plan.payload, levels=levels)}
        try:
            child = run_child(job, on_event=recorder.handle, cancel=self.cancel, timeout=self.o.timeout,
                              on_start=recorder.start_sampler,
                              on_log=lambda line: self.emit({"event": "log", "run_id": self.run_id, "line": line}))
        finally:
            if recorder.sampler is not None:
                recorder.sampler.stop()
        recorder.flush_samples()
        return child

    def store_level(self, level: dict[str, Any], end: dict[str, Any], loaded: dict[str, Any], window: Any) -> dict[str, Any]:
        from lab.gguf_info import estimate_memory
        from lab.ids import new_id

        o, cp, mp = self.o, self.plan.payload["ctx"], self.plan.payload["model"]
        prompts = self.plan.prompts
        requests = []
        for record in end["requests"]:
            figures = request_figures(record)
            figures.update(prompt_id=prompts[record["prompt"]].id, meets_slo=int(o.objective.meets(figures)))
            requests.append(figures)
        n_ctx = int(end.get("n_ctx") or 0)
        kv = estimate_memory(self.plan.summary, max(n_ctx, 1), type_k=cp["type_k"], type_v=cp["type_v"]).kv_bytes
        row: dict[str, Any] = {
            "id": new_id(), "run_id": self.run_id, "machine_id": self.machine["id"], "model_id": self.model_row["id"],
            "model_filename": self.model_row["model_filename"],
            "model_type": loaded.get("desc") or self.model_row.get("model_type"),
            "model_size": loaded.get("model_size") or self.model_row.get("model_size"),
            "model_n_params": loaded.get("n_params") or self.model_row.get("model_n_params"),
            "backends": self.machine.get("backends"), "test": end["test"], "n_prompt": 0, "n_gen": o.max_tokens,
            "n_depth": 0, "n_batch": cp["n_batch"], "n_ubatch": cp["n_ubatch"], "n_threads": cp["n_threads"],
            "n_gpu_layers": mp["n_gpu_layers"], "type_k": cp["type_k"], "type_v": cp["type_v"],
            "flash_attn": cp["flash_attn"], "use_mmap": int(mp["use_mmap"]), "n_ctx": n_ctx,
            "n_seq": end["slots"], "kv_unified": 1, "kv_bytes": kv,
            "peak_rss_bytes": end.get("peak_rss_bytes"), "rss_reset_failed": int(bool(end.get("rss_reset_failed"))),
            "alloc_model_bytes": loaded.get("alloc_model_bytes"),
            **{k: end.get(k) for k in ("alloc_kv_bytes", "alloc_compute_bytes", "alloc_output_bytes")},
            "chat_template": end.get("chat_template"), "load_users": level.get("users"), "load_rate": level.get("rate"),
            "load_duration_s": o.duration_s, "load_max_active": end.get("max_active"),
            "load_mean_active": end.get("mean_active"),
            **level_figures(requests, end["level_ns"] / 1e9, o.objective),
        }
        if window is not None:
            row.update(peak_vram_bytes=window.peak_vram_bytes, mean_cpu_percent=window.mean_cpu_percent)
            if row["peak_rss_bytes"] is None:
                row["peak_rss_bytes"] = window.peak_rss_bytes
        store_level_rows(self.store, row, requests)
        self.rows.append(row)
        return row

    def finish(self, status: str, error: str | None, **values: Any) -> None:
        rss = [r["peak_rss_bytes"] for r in self.rows if r.get("peak_rss_bytes") is not None]
        self.store.finish_run(self.run_id, status, error=error, peak_rss_bytes=max(rss) if rss else None, **values)


def run_load(options: LoadOptions, store: Any, *, on_event: OnEvent | None = None,
             cancel: threading.Event | None = None) -> LoadOutcome:
    """Serve every level (or search for the most users/rate within the objective) and store it.

    Rows are stored as levels end. A failed child fails the run; Ctrl-C or ``cancel`` stops it,
    records ``cancelled`` and keeps the finished levels; Ctrl-C then raises :class:`Cancelled`.
    """
    from lab.endpoints import endpoint_name

    validate(options)
    emit: OnEvent = on_event or (lambda _e: None)
    run: Any
    if endpoint_name(options.model):  # the same levels, driven by threads through the API
        from lab.load_endpoint import EndpointRun

        run = EndpointRun(options, store, emit, cancel)
    else:
        # a search checks each probe's memory as it goes: a level that does not fit fails
        slots = max([*options.users, options.slots if options.rates else 1])
        run = _Run(options, store, _plan(options, slots), emit, cancel)
    outcome = LoadOutcome(status="ok", run_id=run.run_id)
    emit({"event": "run_start", "run_id": run.run_id, "model_filename": run.model_row["model_filename"],
          "objective": options.objective.describe(), "find_max": options.find_max})
    failure: dict[str, Any] = {}

    def serve(levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        before = len(run.rows)
        child = run.serve(levels)
        if child.status != "ok":
            failure.update(status=child.status, error=child.error, interrupted=bool(child.extra.get("interrupted")))
            raise _Stop()
        return run.rows[before:]

    try:
        if options.find_max:
            by_rate = bool(options.rates)

            def probe(value: float) -> bool:
                level = {"rate": value, "slots": options.slots} if by_rate else {"users": int(value)}
                if not by_rate and isinstance(run, _Run) and not options.force:
                    need, available = memory_need(run.plan.summary, int(value), options.max_tokens)
                    if need > available:
                        emit({"event": "probe", "run_id": run.run_id, "test": f"load u{int(value)}", "passed": False,
                              "slo_attainment": None, "reason": "does not fit in the memory available"})
                        return False
                row = serve([level])[0]
                ok = passes(row)
                emit({"event": "probe", "run_id": run.run_id, "test": row["test"], "passed": ok,
                      "slo_attainment": row["slo_attainment"]})
                return ok

            start = options.rates[0] if by_rate else float(options.users[0] if options.users else 1)
            ceiling = options.max_rate if by_rate else float(options.max_users)
            best = search_levels(probe, start=start, ceiling=ceiling, integer=not by_rate)
            outcome.max_level = best
            at = [r for r in run.rows if (r["load_rate"] if by_rate else r["load_users"]) == best]
            outcome.max_kv_bytes = at[0].get("kv_bytes") if at else None
        else:
            levels = [{"users": u} for u in options.users] or [{"rate": r, "slots": options.slots} for r in options.rates]
            serve(levels)
    except _Stop:
        pass
    except KeyboardInterrupt:  # between children: the run is still recorded as cancelled
        failure.update(status="cancelled", error="cancelled by the user", interrupted=True)
    outcome.levels = run.rows
    if failure:
        outcome.status, outcome.error = failure["status"], failure["error"]
        run.finish(outcome.status, outcome.error)
    else:
        values: dict[str, Any] = {}
        if options.find_max:
            key = "max_rate_at_slo" if options.rates else "max_users_at_slo"
            values = {key: outcome.max_level if options.rates else int(outcome.max_level or 0),
                      "max_kv_bytes": outcome.max_kv_bytes}
        run.finish("ok", None, **values)
    emit({"event": "run_end", "run_id": run.run_id, "status": outcome.status, "error": outcome.error,
          "max_level": outcome.max_level})
    if failure.get("interrupted"):
        stored = store.query("select count(*) n from results where run_id = ?", [run.run_id])[0]["n"]
        raise Cancelled(f"the finished levels are stored ({stored} of them, run {short_id(run.run_id)})")
    return outcome


class _Stop(Exception):
    """A child ended without finishing its levels: stop the run."""
