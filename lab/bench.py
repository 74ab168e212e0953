"""Benchmarks: plan a sweep, run it in engine children under the monitor, store every figure.

One function, :func:`run_bench`, serves both faces: the CLI calls it and prints rows as they
arrive; the app calls it in a thread worker and renders the same events live. Each engine child
handles one model instance (model file + model parameters); context parameters and tests vary
inside it, so the model is reloaded only when a model parameter changes, as in llama-bench.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from lab import __version__
from lab.engine import protocol
from lab.engine.protocol import BenchItem, BenchJob, ChatPrompt, ContextParams, ModelParams, TestSpec
from lab.errors import Cancelled, LabError, NotEnoughMemory
from lab.stats import NOISY_CV, percentile, speed_stats

OnEvent = Callable[[dict[str, Any]], None]
SAMPLE_INTERVAL_S = 0.1
_BUNDLED_PROMPTS = Path(__file__).parent / "data" / "chat_prompts.jsonl"


@dataclass
class BenchOptions:
    """A sweep, in llama-bench's terms; every list is one axis of the cartesian product."""

    models: list[str]
    n_prompt: list[int] = field(default_factory=lambda: [512])
    n_gen: list[int] = field(default_factory=lambda: [128])
    pg: list[tuple[int, int]] = field(default_factory=list)
    n_depth: list[int] = field(default_factory=lambda: [0])
    repetitions: int = 5
    threads: list[int] = field(default_factory=list)  # empty: physical cores
    n_gpu_layers: list[int] = field(default_factory=lambda: [-1])  # -1: all layers, as llama-bench
    n_batch: list[int] = field(default_factory=lambda: [2048])
    n_ubatch: list[int] = field(default_factory=lambda: [512])
    flash_attn: list[int] = field(default_factory=lambda: [-1])
    type_k: list[str] = field(default_factory=lambda: ["f16"])
    type_v: list[str] = field(default_factory=lambda: ["f16"])
    mmap: list[int] = field(default_factory=lambda: [1])
    repack: list[int] | None = None  # None: probe per CPU and quant type
    chat: bool = False
    prompts_file: Path | None = None
    chat_max_tokens: int = 128
    warmup: bool = True
    force: bool = False
    timeout: float | None = None
    label: str | None = None
    sustained_s: float | None = None  # tg tests run back to back for this long (lab.sustained)
    # llama-batched-bench's sweep (--batched): prompt sizes x generation sizes x sequences
    batched: bool = False
    n_pp: list[int] = field(default_factory=lambda: [128])
    n_tg: list[int] = field(default_factory=lambda: [128])
    n_pl: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    pp_shared: bool = False
    kv_unified: bool = False
    batched_ctx: int | None = None  # most KV cells a row may use (None: the model's n_ctx_train)


@dataclass
class PlannedRun:
    """One engine child: a model instance and the items it will run."""

    model_arg: str
    path: Path
    summary: Any  # gguf_info.ModelSummary
    job: BenchJob
    estimate: Any  # gguf_info.MemoryEstimate of the run's most demanding test

    @property
    def tests(self) -> list[str]:
        return [item.test.name for item in self.job.items]


@dataclass
class BenchOutcome:
    status: str  # "ok", "failed" or "cancelled"
    run_ids: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


# --- planning ---------------------------------------------------------------------------------


def load_prompts(path: Path | None = None) -> list[ChatPrompt]:
    """Chat prompts from a JSONL file: ``{"messages": [{"role":..., "content":...}]}`` or
    ``{"prompt": "..."}`` per line. Errors name the line."""
    path = path or _BUNDLED_PROMPTS
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LabError(f"No such prompts file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"Cannot read prompts file {path}: {exc}") from None
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise LabError(f"{path} line {number} is not valid JSON") from None
        if isinstance(item, dict) and isinstance(item.get("prompt"), str):
            messages = [{"role": "user", "content": item["prompt"]}]
        elif isinstance(item, dict) and isinstance(item.get("messages"), list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in item["messages"]
        ) and item["messages"]:
            messages = item["messages"]
        else:
            raise LabError(f"{path} line {number} needs a 'prompt' string or a 'messages' list of role/content")
        prompts.append(ChatPrompt(messages=messages, id=str(item.get("id", number))))
    if not prompts:
        raise LabError(f"{path} holds no prompts")
    return prompts


def _tests(o: BenchOptions) -> list[TestSpec]:
    if o.batched:
        from lab.engine.batched import batched_tests

        return batched_tests(o.n_pp, o.n_tg, o.n_pl, pp_shared=o.pp_shared, kv_unified=o.kv_unified)
    tests: list[TestSpec] = []
    for d in o.n_depth:
        tests += [TestSpec(n_prompt=p, n_depth=d) for p in o.n_prompt if p > 0]
        tests += [TestSpec(n_gen=n, n_depth=d) for n in o.n_gen if n > 0]
        tests += [TestSpec(n_prompt=p, n_gen=n, n_depth=d) for p, n in o.pg]
    if o.chat:
        tests.append(TestSpec(kind="chat"))
    return tests


def _validate(o: BenchOptions) -> None:
    if not o.models:
        raise LabError("Give at least one MODEL (a .gguf path, a library name, or 'demo')")
    if o.repetitions < 1:
        raise LabError("--repetitions must be at least 1")
    for name, values in (("-p", o.n_prompt), ("-n", o.n_gen), ("-d", o.n_depth)):
        if any(v < 0 for v in values):
            raise LabError(f"{name} values cannot be negative")
    for name, values in (("-t", o.threads), ("-b", o.n_batch), ("-ub", o.n_ubatch)):
        if any(v < 1 for v in values):
            raise LabError(f"{name} values must be at least 1")
    if o.batched and any(v < 1 for v in (*o.n_pp, *o.n_tg, *o.n_pl)):
        raise LabError("-npp, -ntg and -npl values must be at least 1")
    if not _tests(o):
        raise LabError("Nothing to run: every test size is 0 (give -p, -n, -pg or --chat)")
    if o.sustained_s is not None and (o.sustained_s <= 0 or not any(n > 0 for n in o.n_gen)):
        raise LabError("--sustained takes a number of seconds above 0 and a tg test (-n above 0)")


def plan(options: BenchOptions, *, available_bytes: int | None = None) -> list[PlannedRun]:
    """Resolve models, read their headers, build one job per model instance and check that
    each fits in memory (refused unless ``force``)."""
    from lab import library
    from lab.gguf_info import inspect

    _validate(options)
    from lab.hardware import default_threads

    threads = options.threads or [default_threads()]
    prompts = load_prompts(options.prompts_file) if options.chat else []
    tests = _tests(options)
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    offload = _gpu_offload()
    runs: list[PlannedRun] = []
    for arg in options.models:
        local = library.resolve(arg)
        summary = inspect(local.path)
        if options.batched:
            _check_batched_sizes(options, tests, summary, local.name)
        repacks: list[bool | None] = [None] if options.repack is None else [bool(r) for r in options.repack]
        for ngl, mmap, repack in itertools.product(options.n_gpu_layers, options.mmap, repacks):
            items = [
                BenchItem(test, ContextParams(n_threads=t, n_batch=b, n_ubatch=ub, flash_attn=fa, type_k=tk, type_v=tv))
                for b, ub, fa, tk, tv, t in itertools.product(
                    options.n_batch, options.n_ubatch, options.flash_attn, options.type_k, options.type_v, threads)
                for test in tests
            ]
            job = BenchJob(
                model=ModelParams(str(local.path), n_gpu_layers=ngl, use_mmap=bool(mmap), repack=repack),
                items=items, repetitions=options.repetitions, warmup=options.warmup,
                prompts=prompts, chat_max_tokens=options.chat_max_tokens, sustained_s=options.sustained_s,
            )
            est = max((test_estimate(summary, i, job, effective_gpu_layers(ngl, summary, offload)) for i in items),
                      key=lambda e: e.host_bytes)
            if est.host_bytes > available_bytes and not options.force:
                raise NotEnoughMemory(
                    f"{local.name} needs about {est.host_bytes / 2**30:.2f} GiB at context {est.n_ctx} "
                    f"but only {available_bytes / 2**30:.2f} GiB is available; use --force to try anyway"
                )
            runs.append(PlannedRun(arg, local.path, summary, job, est))
    return runs


def _check_batched_sizes(options: BenchOptions, tests: list[TestSpec], summary: Any, name: str) -> None:
    from lab.engine.batched import check_sizes

    if options.batched_ctx is not None:
        check_sizes(tests, options.batched_ctx, f"the limit of {options.batched_ctx} set with -c")
    elif summary.n_ctx_train:  # llama-batched-bench's default context (-c 0)
        check_sizes(tests, summary.n_ctx_train,
                    f"the {summary.n_ctx_train} tokens {name} was trained for (raise the limit with -c)")


def _gpu_offload() -> bool:
    from lab.hardware import llama_cpp_info

    return bool(llama_cpp_info().get("gpu_offload"))


def effective_gpu_layers(n_gpu_layers: int, summary: Any, offload: bool) -> int:
    """Layers that really go to a GPU: none without offload support; -1 means all of them
    (the blocks plus the output layer)."""
    if not offload:
        return 0
    if n_gpu_layers < 0:
        return (summary.n_layer or 0) + 1
    return n_gpu_layers


def test_estimate(summary: Any, item: BenchItem, job: BenchJob, gpu_layers: int, n_ctx: int | None = None,
                  repack: bool | None = None) -> Any:
    """The memory estimate (``gguf_info.MemoryEstimate``) of one test in its configuration:
    its context, batch sizes, KV types, flash attention, and the most tokens it decodes at
    once (a pp test's prompt or the depth fill; 1 for tg; a chat prompt up to the ubatch).
    ``repack``: whether the engine used the extra CPU buffer types; None takes the job's
    setting, and assumes them on where the job leaves it to the engine's probe."""
    from lab.gguf_info import estimate_memory

    test, cp = item.test, item.ctx
    n_decode = None if test.kind == "chat" else max(test.n_prompt, test.n_depth, 1)
    return estimate_memory(
        summary, n_ctx or _n_ctx(test, job), n_ubatch=cp.n_ubatch, n_batch=cp.n_batch, type_k=cp.type_k,
        type_v=cp.type_v, flash_attn=cp.flash_attn, n_gpu_layers=gpu_layers, n_decode=n_decode,
        repack=job.model.repack is not False if repack is None else repack,
    )


def _n_ctx(test: TestSpec, job: BenchJob) -> int:
    if test.kind == "chat":
        # Prompts are short; the estimate allows 512 prompt tokens plus the generation.
        return 512 + job.chat_max_tokens
    if test.kind == "batched":
        from lab.engine.batched import n_ctx_required

        return n_ctx_required(test)
    return max(1, test.n_prompt + test.n_gen + test.n_depth)


# --- running ----------------------------------------------------------------------------------


class _RunRecorder:
    """Turns one child's events into rows, as they arrive."""

    def __init__(self, store: Any, planned: PlannedRun, run_id: str, machine: dict[str, Any],
                 model_row: dict[str, Any], on_event: OnEvent):
        from lab.monitor import WindowTag

        self.store = store
        self.planned = planned
        self.run_id = run_id
        self.machine = machine
        self.model_row = model_row
        self.on_event = on_event
        self.sampler: Any = None
        self.t0 = time.monotonic()
        self.tag = WindowTag()
        self.tokens = 0
        self.loaded: dict[str, Any] = {}
        self.results: list[dict[str, Any]] = []
        # energy counters at the start and end of each timed repetition of the current test
        self._rep_start: Any = None
        self._spans: list[tuple[Any, Any]] = []
        self._samples: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    # sampler thread
    def on_sample(self, sample: Any) -> None:
        row = sample.to_row()
        row.update(run_id=self.run_id, test=self.tag.of(sample), tokens=self.tokens)
        with self._lock:
            self._samples.append(row)
        self.on_event({"event": "sample", "run_id": self.run_id, "sample": row})

    def flush_samples(self) -> None:
        with self._lock:
            rows, self._samples = self._samples, []
        self.store.add_samples(rows)

    def start_sampler(self, pid: int) -> None:
        from lab.monitor import Sampler

        self.sampler = Sampler(pid, interval=SAMPLE_INTERVAL_S, on_sample=self.on_sample)
        self.sampler.start()

    # bench thread
    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        # Counters first: the child is already timing (or has just stopped timing) this repetition.
        if kind == protocol.REP_START:
            self._rep_start = self.sampler.read_energy() if self.sampler is not None else None
        elif kind == protocol.REP and self._rep_start is not None:
            self._spans.append((self._rep_start, self.sampler.read_energy()))
            self._rep_start = None
        if kind == protocol.LOADED:
            self.loaded = event
            fields: dict[str, Any] = {"load_ms": event.get("load_ms")}
            if event.get("repack_warning"):  # extra buffer types off for this run only: say why
                fields["warnings"] = event["repack_warning"]
            self.store.update_run(self.run_id, **fields, **self.storage())
        elif kind == protocol.TEST_START:
            self.tag.begin(event["test"], self.sampler)
            self.tokens = 0
            self._rep_start, self._spans = None, []
            if self.sampler is not None:
                self.sampler.begin_window()
            event = dict(event, n_tests=len(self.planned.job.items))
        elif kind == protocol.REP:
            item = self.planned.job.items[event["index"]]
            self.tokens += item.test.n_tokens if item.test.kind != "chat" else int(event.get("n_generated") or 0)
        elif kind == protocol.TOKEN:
            pass
        elif kind == protocol.TEST_END:
            row = self.result_row(event)
            # samples from here to the next test's start (its context, warm-up) are not this test's
            with self._lock:
                self.tag.end(self._samples, event.get("mono"), self.sampler)
            self.store.add_result(row)
            self.flush_samples()
            self.results.append(row)
            self.on_event({"event": "result", "run_id": self.run_id, "row": row})
            return
        self.on_event(dict(event, run_id=self.run_id))

    def result_row(self, end: dict[str, Any]) -> dict[str, Any]:
        item = self.planned.job.items[end["index"]]
        test, cp, mp = item.test, item.ctx, self.planned.job.model
        window = self.sampler.end_window() if self.sampler is not None else None
        n_ctx = int(end.get("n_ctx") or 0)
        offloaded = effective_gpu_layers(mp.n_gpu_layers, self.planned.summary, bool(self.machine.get("gpu_offload")))
        est = test_estimate(self.planned.summary, item, self.planned.job, offloaded, max(n_ctx, 1),
                            self.loaded.get("repack"))
        row: dict[str, Any] = {
            "run_id": self.run_id, "machine_id": self.machine["id"], "model_id": self.model_row["id"],
            "model_filename": self.model_row["model_filename"],
            "model_type": self.loaded.get("desc") or self.model_row.get("model_type"),
            "model_size": self.loaded.get("model_size") or self.model_row.get("model_size"),
            "model_n_params": self.loaded.get("n_params") or self.model_row.get("model_n_params"),
            "backends": self.machine.get("backends"), "test": test.name, "n_prompt": test.n_prompt,
            "n_gen": test.n_gen, "n_depth": test.n_depth, "n_batch": cp.n_batch, "n_ubatch": cp.n_ubatch,
            "n_threads": cp.n_threads, "n_gpu_layers": mp.n_gpu_layers, "type_k": cp.type_k, "type_v": cp.type_v,
            "flash_attn": cp.flash_attn, "use_mmap": int(mp.use_mmap), "n_ctx": n_ctx,
            "peak_rss_bytes": end.get("peak_rss_bytes"), "rss_reset_failed": int(bool(end.get("rss_reset_failed"))),
            "est_memory_bytes": est.host_bytes,
            "kv_bytes": est.kv_bytes, "est_alloc_bytes": est.alloc_bytes,
            "alloc_model_bytes": self.loaded.get("alloc_model_bytes"),
            **{k: end.get(k) for k in ("alloc_kv_bytes", "alloc_compute_bytes", "alloc_output_bytes")},
        }
        if test.kind == "chat":
            chats = end.get("chat") or []
            row.update(chat_figures(chats), chat_template=end.get("chat_template"))
            rep_tokens = [int(c["n_generated"]) for c in chats]
        elif test.kind == "batched":
            from lab.engine.batched import batched_figures

            row.update(batched_figures(test, end))
            rep_tokens = [test.n_tokens] * len(end["samples_ns"])
        else:
            stats = speed_stats(end["samples_ns"], test.n_tokens)
            row.update(stats, repetitions=len(end["samples_ns"]), samples_ns=end["samples_ns"])
            rep_tokens = [test.n_tokens] * len(end["samples_ns"])
        row["noisy"] = int(row.get("cv") is not None and row["cv"] > NOISY_CV)
        if window is not None:
            row.update(peak_vram_bytes=window.peak_vram_bytes, mean_cpu_percent=window.mean_cpu_percent)
            if row.get("peak_rss_bytes") is None:
                row["peak_rss_bytes"] = window.peak_rss_bytes
        row.update(self.energy_figures(offloaded, rep_tokens))
        row.update(self.heat_figures(window, test, end, rep_tokens), **self.storage())
        return row

    def storage(self) -> dict[str, Any]:
        """The model file's file system and device (an SD card loads slower than NVMe)."""
        from lab.hardware import model_storage

        fs_type, device = model_storage(self.planned.path)
        return {"model_fs_type": fs_type, "model_device": device}

    def heat_figures(self, window: Any, test: TestSpec, end: dict[str, Any], rep_tokens: list[int]) -> dict[str, Any]:
        """Paging and heat over the timed repetitions (``swapped``, ``throttled``), and a
        sustained tg test's first- vs last-window speed and clocks."""
        from lab import monitor
        from lab.sustained import Rep, sustained_figures

        if self.sampler is None:
            return {}
        spans = self._spans if len(self._spans) == len(rep_tokens) else []
        figures = monitor.result_figures(spans, window, self.sampler.reference_clock_mhz())
        seconds = self.planned.job.sustained_s
        if seconds and test.kind != "chat" and test.n_gen and not test.n_prompt:
            reps = [Rep(a.t, b.t, ns, n) for (a, b), ns, n in zip(spans, end.get("samples_ns") or [], rep_tokens)]
            with self._lock:
                clocks = [(s["t"], s.get("cpu_freq_mhz")) for s in self._samples if s.get("test") == test.name]
            figures.update(sustained_figures(reps, clocks, seconds))
        return figures

    def energy_figures(self, offloaded_layers: int, rep_tokens: list[int]) -> dict[str, Any]:
        """Energy over the timed repetitions only (each repetition's counter difference), from
        the sources the test used: the CPU packages, plus the GPUs holding layers."""
        from lab import monitor

        if self.sampler is None:
            return {}
        sources = monitor.energy_sources(offloaded_layers, self.sampler.child_gpus, self.sampler.gpu_indices,
                                         self.sampler.board_sources)
        # a repetition without its start reading (should not happen) would misalign the spans
        spans = self._spans if len(self._spans) == len(rep_tokens) else []
        figures = monitor.energy_over(spans, sources)
        tokens = sum(rep_tokens)
        return {
            "energy_j": figures.energy_j, "energy_source": figures.energy_source,
            "mean_power_w": figures.mean_power_w,
            "energy_by_source": json.dumps(figures.by_source),
            "energy_samples_j": json.dumps(figures.per_rep_j) if figures.per_rep_j is not None else None,
            "j_per_token": figures.energy_j / tokens if figures.energy_j is not None and tokens else None,
        }


def chat_figures(chats: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``chat`` result's figures from each prompt's timing (``ttft_ns``, ``gaps_ns``,
    ``e2e_ns``, ``n_generated``, ``n_prompt_tokens``; ``ts`` when the source counts tokens
    apart from the gaps, as a streamed endpoint does)."""
    from lab.stats import cv as _cv, mean, stddev

    gaps_ms = [g / 1e6 for c in chats for g in c["gaps_ns"]]
    speeds = [c["ts"] if "ts" in c else len(c["gaps_ns"]) * 1e9 / sum(c["gaps_ns"])
              for c in chats if sum(c["gaps_ns"]) > 0]
    speeds = [s for s in speeds if s is not None]
    e2e = [c["e2e_ns"] for c in chats]
    prompt_tokens = [c["n_prompt_tokens"] for c in chats]
    return dict(
        repetitions=len(chats), samples_ns=e2e, samples_ts=speeds,
        avg_ns=mean([float(x) for x in e2e]), stddev_ns=stddev([float(x) for x in e2e]),
        avg_ts=mean(speeds), stddev_ts=stddev(speeds), cv=_cv(speeds),
        ttft_ms=mean([c["ttft_ns"] / 1e6 for c in chats]),
        itl_p50_ms=percentile(gaps_ms, 50), itl_p95_ms=percentile(gaps_ms, 95),
        itl_p99_ms=percentile(gaps_ms, 99), e2e_ms=mean([x / 1e6 for x in e2e]),
        n_generated=sum(c["n_generated"] for c in chats),
        # None when a source did not count them (an endpoint that reports no usage).
        n_prompt_tokens=sum(prompt_tokens) if None not in prompt_tokens else None, n_prompts=len(chats),
    )


def run_bench(options: BenchOptions, store: Any, *, on_event: OnEvent | None = None,
              cancel: threading.Event | None = None, plans: list[PlannedRun] | None = None) -> BenchOutcome:
    """Plan (unless given), then run every planned model instance in its own engine child.

    Rows are written as events arrive. A failed child is recorded as ``failed`` (exit code or
    signal, log tail) and the sweep goes on with the next model; Ctrl-C or ``cancel`` stops it,
    records ``cancelled`` and keeps finished tests. Raises :class:`Cancelled` on Ctrl-C after
    everything is stored.
    """
    from lab import hardware, library
    from lab.engine.runner import run_child

    emit_event: OnEvent = on_event or (lambda _e: None)
    plans = plans if plans is not None else plan(options)
    machine = hardware.fingerprint()
    store.upsert_machine(machine)
    outcome = BenchOutcome(status="ok")
    interrupted = False
    for index, planned in enumerate(plans):
        if cancel is not None and cancel.is_set():
            outcome.status = "cancelled"
            break
        model_row = library.register(store, library.resolve(planned.model_arg))
        config = {
            "model": asdict(planned.job.model), "tests": planned.tests, "repetitions": planned.job.repetitions,
            "items": [{"test": i.test.name, **asdict(i.ctx)} for i in planned.job.items],
            "chat_max_tokens": planned.job.chat_max_tokens if options.chat else None,
            "n_prompts": len(planned.job.prompts) or None, "timeout": options.timeout,
            "sustained_s": options.sustained_s,
        }
        run_id = store.create_run(
            "bench", machine_id=machine["id"], model_id=model_row["id"], model_filename=model_row["model_filename"],
            config=config, lab_version=__version__, llama_cpp_version=machine.get("llama_cpp_version"),
            build_commit=machine.get("build_commit"), n_gpu_layers=planned.job.model.n_gpu_layers,
            use_mmap=int(planned.job.model.use_mmap), est_memory_bytes=planned.estimate.host_bytes,
            label=options.label,
        )
        outcome.run_ids.append(run_id)
        recorder = _RunRecorder(store, planned, run_id, machine, model_row, emit_event)
        emit_event({
            "event": "run_start", "run_id": run_id, "model_filename": model_row["model_filename"],
            "index": index, "n_runs": len(plans), "tests": planned.tests,
            "items": [{"test": i.test.name, "n_prompt": i.test.n_prompt, "n_gen": i.test.n_gen,
                       "n_depth": i.test.n_depth, "kind": i.test.kind} for i in planned.job.items],
            "repetitions": planned.job.repetitions, "est_memory_bytes": planned.estimate.host_bytes,
        })
        try:
            child = run_child(
                planned.job.to_wire(), on_event=recorder.handle, cancel=cancel, timeout=options.timeout,
                on_start=recorder.start_sampler,
                on_log=lambda line, rid=run_id: emit_event({"event": "log", "run_id": rid, "line": line}),
            )
        finally:
            if recorder.sampler is not None:
                recorder.sampler.stop()
        recorder.flush_samples()
        rss = [r["peak_rss_bytes"] for r in recorder.results if r.get("peak_rss_bytes") is not None]
        vram = [r["peak_vram_bytes"] for r in recorder.results if r.get("peak_vram_bytes") is not None]
        store.finish_run(
            run_id, child.status, error=child.error, exit_code=child.exit_code, signal=child.signal,
            log_tail=child.log_tail if child.status != "ok" else None,
            peak_rss_bytes=max(rss) if rss else None, peak_vram_bytes=max(vram) if vram else None,
        )
        outcome.results.extend(recorder.results)
        emit_event({"event": "run_end", "run_id": run_id, "status": child.status, "error": child.error,
                    "exit_code": child.exit_code, "signal": child.signal})
        if child.status == "cancelled":
            outcome.status = "cancelled"
            outcome.error = "cancelled by the user"
            interrupted = bool(child.extra.get("interrupted"))
            break
        if child.status == "failed":
            outcome.status = "failed"
            outcome.error = f"{model_row['model_filename']}: {child.error}"
    if interrupted:
        raise Cancelled(f"finished tests are stored ({len(outcome.results)} results)")
    return outcome
