"""Check and run a plan (:mod:`lab.plan`): each step through the domain function that measures
and stores it (:func:`lab.bench.run_bench`, :func:`lab.quality.measure_quality`,
:func:`lab.evals.runner.run_eval`).

A step is one engine run: one bench model instance of a sweep, one model's quality against the
reference, one model on one eval suite and constraint setting. Its key hashes the model's
sha256 and the step's whole configuration (as the engine receives it, without file paths); the
run is tagged with it (``runs.plan_step``). A step whose key has an ``ok`` run on this machine
with this llama.cpp build is skipped, so running a plan again resumes where it stopped. A step
that fails — a missing or corrupt model, one that does not fit, an engine that dies — is
stored as a failed run with its reason, and the other steps go on.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lab.errors import Cancelled, LabError, ModelError
from lab.plan import EvalSpec, ModelEntry, Plan

if TYPE_CHECKING:
    from lab.library import LocalModel
    from lab.store import Store

OnEvent = Callable[[dict[str, Any]], None]
CHILD_START_S = 2.0  # an engine child's start (Python, llama.cpp) before it loads a model
# Rough speeds when this machine has none stored for a model: generation reads every weight
# once per token (a few GB/s of memory bandwidth); prompts go about 15 times faster.
GUESS_BANDWIDTH = 4e9
GUESS_PP_FACTOR = 15.0


@dataclass
class Step:
    """One unit of a plan, before it runs: a kind, a model and which sweep/suite it belongs to."""

    kind: str  # "bench", "quality" or "eval"
    model: ModelEntry
    index: int  # the sweep / eval entry it comes from
    constrained: bool | None = None  # eval only

    @property
    def label(self) -> str:
        if self.kind == "bench":
            return f"bench {self.index + 1}"
        if self.kind == "eval":
            return f"eval {self.index + 1} ({'constrained' if self.constrained else 'free'})"
        return "quality"


@dataclass
class StepResult:
    """What became of one engine run of a plan: ``done``, ``skipped`` (already stored here) or
    ``failed`` (stored with ``error``)."""

    kind: str
    label: str
    model: str
    status: str
    key: str | None = None
    run_ids: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float | None = None
    estimate_s: float | None = None
    estimate_guess: bool = False  # the estimate comes from model size, not speeds measured here

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PlanOutcome:
    """Every step's result and, when the plan has limits, the verdict."""

    steps: list[StepResult]
    verdict: dict[str, Any] | None = None

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.status == "failed"]


def plan_steps(plan: Plan) -> list[Step]:
    """Every step in run order: bench sweeps, then quality, then evals, model by model."""
    steps = [Step("bench", m, i) for i in range(len(plan.bench)) for m in plan.models]
    if plan.quality is not None:
        ref = plan.quality.reference
        steps += [Step("quality", m, 0) for m in plan.models if m is not ref]
    steps += [Step("eval", m, i, mode) for i, spec in enumerate(plan.evals) for m in plan.models
              for mode in spec.modes]
    return steps


# --- models -----------------------------------------------------------------------------------


def _hub_cached(entry: ModelEntry) -> "LocalModel | None":
    from lab import config
    from lab.hub.names import parse_spec
    from lab.library import LocalModel

    spec = parse_spec(entry.hub or "")
    folder = config.hf_hub_cache() / ("models--" + spec.repo_id.replace("/", "--")) / "snapshots"
    path = folder / (entry.revision or "") / (spec.filename or "")
    if not path.is_file():
        return None
    return LocalModel(name=f"{spec.repo_id}/{spec.filename}", path=path, source="hf-cache",
                      size=path.stat().st_size, repo=spec.repo_id, revision=entry.revision)


def resolve_model(entry: ModelEntry, store: "Store | None" = None, *, download: bool = True) -> tuple["LocalModel", str]:
    """The local file of a plan model and its sha256 (checked against the plan's pin). A Hub
    model is taken from the cache, else downloaded at its pinned revision when ``download``."""
    from lab import library

    if entry.hub:
        local = _hub_cached(entry)
        if local is None:
            if not download:
                raise ModelError(f"{entry.label} is not downloaded yet")
            from lab.hub.download import pull

            pulled = pull(entry.hub, revision=entry.revision)
            local = _hub_cached(entry) or library.LocalModel(
                name=entry.hub, path=pulled.path, source="hf-cache", size=pulled.size, repo=pulled.repo_id,
                revision=pulled.commit)
    elif entry.path is not None:
        if not entry.path.is_file():
            raise ModelError(f"No such model file: {entry.path}")
        local = library.resolve(str(entry.path))
    else:
        local = library.resolve(entry.name or "")
    sha = library.sha256_file(local.path, store)
    if entry.sha256 and sha != entry.sha256:
        raise ModelError(f"{local.path.name} has sha256 {sha[:12]}…, not the {entry.sha256[:12]}… the plan pins")
    return local, sha


def _key(kind: str, model_sha: str | None, config: dict[str, Any]) -> str:
    blob = json.dumps({"kind": kind, "model": model_sha, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _bench_config(planned: Any) -> dict[str, Any]:
    payload = planned.job.to_wire()["payload"]
    payload["model"] = {k: v for k, v in payload["model"].items() if k != "path"}
    return payload


def _file_sha(path: Path) -> str:
    from lab.library import sha256_file

    return sha256_file(path)


def _quality_config(plan: Plan, ref_sha: str) -> dict[str, Any]:
    from lab.hardware import default_threads
    from lab.quality import DEFAULT_TEXT

    q = plan.quality
    assert q is not None
    text = q.text or DEFAULT_TEXT
    if not text.is_file():
        raise LabError(f"No such text file: {text}")
    return {"reference": ref_sha, "text": _file_sha(text), "n_ctx": q.n_ctx, "n_chunks": q.n_chunks,
            "n_threads": q.n_threads or default_threads(), "n_gpu_layers": q.n_gpu_layers}


def _eval_config(spec: EvalSpec, constrained: bool) -> dict[str, Any]:
    from lab.evals.suite import load_suite
    from lab.hardware import default_threads

    suite = load_suite(spec.suite)
    return {"suite": suite.sha256, "constrained": constrained, "max_tokens": spec.max_tokens,
            "timeout": spec.timeout, "limit": spec.limit, "n_ctx": spec.n_ctx,
            "n_threads": spec.n_threads or default_threads(), "n_gpu_layers": spec.n_gpu_layers}


def done_run(store: "Store", key: str, machine: dict[str, Any]) -> str | None:
    """The id of an ``ok`` run of step ``key`` on this machine and llama.cpp build, if any."""
    rows = store.query(
        "select id from runs where plan_step = ? and machine_id = ? and status = 'ok' and build_commit is ? "
        "order by started_at desc limit 1", [key, machine["id"], machine.get("build_commit")])
    return rows[0]["id"] if rows else None


# --- estimates --------------------------------------------------------------------------------


@dataclass
class Speeds:
    pp: float
    tg: float
    measured: bool  # False: a guess from the model's size


def speeds_for(store: "Store | None", machine_id: str, sha: str, size: int) -> Speeds:
    """Stored pp/tg speeds of this model on this machine, else a guess from its size."""
    known = store.last_speeds(machine_id).get(sha, {}) if store is not None else {}
    tg = known.get("tg") or GUESS_BANDWIDTH / max(size, 1)
    pp = known.get("pp") or tg * GUESS_PP_FACTOR
    return Speeds(pp, tg, "tg" in known and "pp" in known)


def _load_s(size: int) -> float:
    return CHILD_START_S + size / 2e9


def estimate_bench(planned: Any, s: Speeds) -> float:
    """Seconds for one bench run: load, then every test's warm-up and repetitions."""
    job = planned.job
    total = _load_s(planned.summary.file_size or 0)
    reps = job.repetitions + (1 if job.warmup else 0)
    for item in job.items:
        t = item.test
        if t.kind == "chat":
            total += len(job.prompts) * (job.chat_max_tokens / s.tg + 64 / s.pp)
        else:
            total += reps * ((t.n_prompt + t.n_depth) / s.pp + t.n_gen / s.tg)
    return total


def estimate_eval(spec: EvalSpec, size: int, s: Speeds) -> float:
    from lab.evals.suite import load_suite

    n_items = len(load_suite(spec.suite).items)
    n_items = min(n_items, spec.limit) if spec.limit else n_items
    return _load_s(size) + n_items * (spec.max_tokens / s.tg + 128 / s.pp)


def estimate_quality(plan: Plan, size: int, s: Speeds) -> float:
    from lab.quality import DEFAULT_TEXT

    q = plan.quality
    assert q is not None
    text = q.text or DEFAULT_TEXT
    n_tokens = text.stat().st_size / 4 if text.is_file() else 0  # about 4 bytes a token
    n_chunks = min(q.n_chunks or 10**9, int(n_tokens // q.n_ctx))
    return _load_s(size) + n_chunks * q.n_ctx / s.pp


# --- check -------------------------------------------------------------------------------------


@dataclass
class CheckReport:
    """What ``plan check`` found: problems (each one sentence), and what will run."""

    problems: list[str]
    steps: list[StepResult]
    notes: list[str] = field(default_factory=list)

    @property
    def estimate_s(self) -> float:
        return sum(s.estimate_s or 0.0 for s in self.steps if s.status == "to run")


def _fits(label: str, summary: Any, n_ctx: int, available: int) -> str | None:
    from lab.gguf_info import estimate_memory

    est = estimate_memory(summary, n_ctx)
    if est.host_bytes > available:
        return (f"{label} needs about {est.host_bytes / 2**30:.2f} GiB at context {n_ctx} but only "
                f"{available / 2**30:.2f} GiB is available on this machine")
    return None


def _check_files(plan: Plan, problems: list[str]) -> None:
    from lab.evals.suite import load_suite

    for index, spec in enumerate(plan.evals):
        try:
            load_suite(spec.suite)
        except LabError as exc:
            problems.append(f"evals[{index}].suite: {str(exc).rstrip('.')}")
    if plan.quality is not None and plan.quality.text is not None and not plan.quality.text.is_file():
        problems.append(f"quality.text: no such file: {plan.quality.text}")
    for index, options in enumerate(plan.bench):
        if options.chat and options.prompts_file is not None and not options.prompts_file.is_file():
            problems.append(f"bench[{index}].prompts: no such file: {options.prompts_file}")


def check_plan(plan: Plan, store: "Store | None" = None, *, available_bytes: int | None = None) -> CheckReport:
    """Validate what a plan names on this machine — model files and their sha256, suites,
    texts, whether each model fits in available memory — and list every step with an
    estimate of its time (``skipped`` when already stored here). Downloads nothing."""
    import psutil

    from lab import bench, hardware
    from lab.gguf_info import inspect

    available = available_bytes if available_bytes is not None else psutil.virtual_memory().available
    problems: list[str] = []
    _check_files(plan, problems)
    machine = hardware.fingerprint()
    report = CheckReport(problems, [])
    resolved: dict[int, tuple[Any, str, Any] | None] = {}
    for entry in plan.models + ([plan.quality.reference] if plan.quality else []):
        if id(entry) in resolved:
            continue
        try:
            local, sha = resolve_model(entry, store, download=False)
            resolved[id(entry)] = (local, sha, inspect(local.path))
        except LabError as exc:
            resolved[id(entry)] = None
            text = str(exc).rstrip(".")
            (report.notes if "not downloaded yet" in text else problems).append(
                f"{text}; it will be downloaded at its pinned revision" if "not downloaded yet" in text else text)
    if problems:
        return report
    for step in plan_steps(plan):
        got = resolved.get(id(step.model))
        if got is None:
            report.steps.append(StepResult(step.kind, step.label, step.model.label, "to run"))
            continue
        local, sha, summary = got
        speeds = speeds_for(store, machine["id"], sha, local.size)
        try:
            for row in _check_step(plan, step, local, sha, summary, speeds, store, machine, available):
                report.steps.append(row)
        except LabError as exc:
            problems.append(f"{step.label}, {step.model.label}: {str(exc).rstrip('.')}")
    return report


def _check_step(plan: Plan, step: Step, local: Any, sha: str, summary: Any, speeds: Speeds,
                store: "Store | None", machine: dict[str, Any], available: int) -> list[StepResult]:
    from lab import bench

    def row(key: str, estimate: float) -> StepResult:
        stored = store is not None and done_run(store, key, machine) is not None
        return StepResult(step.kind, step.label, local.path.name, "skipped" if stored else "to run", key=key,
                          estimate_s=estimate, estimate_guess=not speeds.measured)

    if step.kind == "bench":
        options = replace(plan.bench[step.index], models=[str(local.path)])
        return [row(_key("bench", sha, _bench_config(p)), estimate_bench(p, speeds))
                for p in bench.plan(options, available_bytes=available)]
    if step.kind == "quality":
        assert plan.quality is not None
        problem = _fits(local.path.name, summary, plan.quality.n_ctx, available)
        if problem:
            raise LabError(problem)
        ref_local, ref_sha = resolve_model(plan.quality.reference, store, download=False)
        return [row(_key("quality", sha, _quality_config(plan, ref_sha)), estimate_quality(plan, local.size, speeds))]
    spec = plan.evals[step.index]
    problem = _fits(local.path.name, summary, spec.n_ctx or 1024, available)
    if problem:
        raise LabError(problem)
    assert step.constrained is not None
    return [row(_key("eval", sha, _eval_config(spec, step.constrained)), estimate_eval(spec, local.size, speeds))]


# --- run ---------------------------------------------------------------------------------------


class _Runner:
    """Runs a plan's steps in order, storing each outcome."""

    def __init__(self, plan: Plan, store: "Store", on_event: OnEvent):
        from lab import hardware

        self.plan = plan
        self.store = store
        self.on_event = on_event
        self.machine = hardware.fingerprint()
        store.upsert_machine(self.machine)
        self.models: dict[int, tuple[Any, str] | LabError] = {}

    def model(self, entry: ModelEntry) -> tuple[Any, str]:
        if id(entry) not in self.models:
            try:
                self.models[id(entry)] = resolve_model(entry, self.store)
            except LabError as exc:
                self.models[id(entry)] = exc
        got = self.models[id(entry)]
        if isinstance(got, LabError):
            raise got
        return got

    def tag(self, run_ids: list[str], key: str) -> None:
        for run_id in run_ids:
            self.store.update_run(run_id, plan_step=key)

    def record_failure(self, step: Step, key: str, started: str, error: str) -> list[str]:
        """Tag the failed run the domain function stored, or store one when it failed before
        any run existed (a model that cannot be read, does not fit, is not the pinned file)."""
        from lab.quality import run_extra

        kind = {"bench": "bench", "quality": "quality", "eval": "eval"}[step.kind]
        got = self.models.get(id(step.model))
        model_id = got[1] if isinstance(got, tuple) else None
        rows = self.store.query(
            "select id from runs where started_at >= ? and machine_id = ? and kind = ? and plan_step is null "
            "and status != 'ok' and model_id is ?", [started, self.machine["id"], kind, model_id])
        ids = [r["id"] for r in rows]
        if ids:
            self.tag(ids, key)
            return ids
        filename = got[0].path.name if isinstance(got, tuple) else (
            step.model.path.name if step.model.path else step.model.label)
        if model_id is not None and self.store.get("models", model_id) is None:
            model_id = None  # never registered: the file could not be read
        run_id = self.store.create_run(kind, machine_id=self.machine["id"], model_id=model_id,
                                       model_filename=filename, config={"plan": self.plan.name, "step": step.label},
                                       plan_step=key, **run_extra())
        self.store.finish_run(run_id, "failed", error=error)
        return [run_id]

    def run(self, step: Step, index: int, total: int) -> list[StepResult]:
        from lab.store import now_iso

        started, t0 = now_iso(), time.monotonic()
        self.on_event({"event": "step_start", "index": index, "n_steps": total, "kind": step.kind,
                       "label": step.label, "model": step.model.label})
        try:
            results = self._run(step)
        except Cancelled:
            raise
        except LabError as exc:
            error = str(exc).rstrip(".")
            key = _key(step.kind, None, {"model": step.model.label, "step": step.label, "plan": self.plan.name})
            ids = self.record_failure(step, key, started, error)
            results = [StepResult(step.kind, step.label, step.model.label, "failed", key, ids, error)]
        for r in results:
            if r.seconds is None:
                r.seconds = time.monotonic() - t0
            self.on_event({"event": "step_end", "index": index, "n_steps": total, **r.to_dict()})
        return results

    def _one(self, step: Step, model: str, key: str, func: Callable[[], tuple[list[str], str, str | None]]) -> StepResult:
        """Skip a stored step, else run ``func`` -> (run ids, status, error) and tag its runs."""
        from lab.store import now_iso

        stored = done_run(self.store, key, self.machine)
        if stored is not None:
            return StepResult(step.kind, step.label, model, "skipped", key, [stored], seconds=0.0)
        started, t0 = now_iso(), time.monotonic()
        try:
            run_ids, status, error = func()
        except Cancelled:
            raise
        except LabError as exc:
            error = str(exc).rstrip(".")
            ids = self.record_failure(step, key, started, error)
            return StepResult(step.kind, step.label, model, "failed", key, ids, error, time.monotonic() - t0)
        self.tag(run_ids, key)
        ok = status == "ok"
        return StepResult(step.kind, step.label, model, "done" if ok else "failed", key, run_ids,
                          None if ok else (error or status), time.monotonic() - t0)

    def _run(self, step: Step) -> list[StepResult]:
        from lab import bench

        local, sha = self.model(step.model)
        name = local.path.name
        if step.kind == "bench":
            options = replace(self.plan.bench[step.index], models=[str(local.path)])
            out = []
            for planned in bench.plan(options):
                def go(p: Any = planned) -> tuple[list[str], str, str | None]:
                    outcome = bench.run_bench(options, self.store, plans=[p], on_event=self.on_event)
                    return outcome.run_ids, outcome.status, outcome.error
                out.append(self._one(step, name, _key("bench", sha, _bench_config(planned)), go))
            return out
        if step.kind == "quality":
            return [self._quality(step, local, sha)]
        return [self._eval(step, local, sha)]

    def _quality(self, step: Step, local: Any, sha: str) -> StepResult:
        from lab.quality import QualityOptions, measure_quality

        q = self.plan.quality
        assert q is not None
        ref_local, ref_sha = self.model(q.reference)
        config = _quality_config(self.plan, ref_sha)

        def go() -> tuple[list[str], str, str | None]:
            rows = measure_quality(self.store, QualityOptions(
                models=[str(local.path)], reference=str(ref_local.path), text=q.text, n_ctx=q.n_ctx,
                n_chunks=q.n_chunks, n_threads=config["n_threads"], n_gpu_layers=q.n_gpu_layers, timeout=q.timeout),
                on_event=self.on_event)
            return [r["run_id"] for r in rows], rows[0].get("status", "ok"), rows[0].get("error")
        return self._one(step, local.path.name, _key("quality", sha, config), go)

    def _eval(self, step: Step, local: Any, sha: str) -> StepResult:
        from lab.evals.runner import EvalOptions, run_eval

        spec = self.plan.evals[step.index]
        assert step.constrained is not None
        config = _eval_config(spec, step.constrained)

        def go() -> tuple[list[str], str, str | None]:
            runs = run_eval(self.store, EvalOptions(
                models=[str(local.path)], suite=spec.suite, constrained=[step.constrained], max_tokens=spec.max_tokens,
                timeout_s=spec.timeout, n_ctx=spec.n_ctx, n_threads=config["n_threads"],
                n_gpu_layers=spec.n_gpu_layers, limit=spec.limit), on_event=self.on_event)
            return [r["run_id"] for r in runs], runs[0]["status"], runs[0].get("error")
        return self._one(step, local.path.name, _key("eval", sha, config), go)


def run_plan(plan: Plan, store: "Store", *, on_event: OnEvent | None = None) -> PlanOutcome:
    """Run every step of ``plan`` not yet stored for this machine and build; then the verdict
    when the plan has limits. Raises :class:`Cancelled` on Ctrl-C, with finished steps stored."""
    runner = _Runner(plan, store, on_event or (lambda _e: None))
    steps = plan_steps(plan)
    results: list[StepResult] = []
    for index, step in enumerate(steps):
        results.extend(runner.run(step, index, len(steps)))
    outcome = PlanOutcome(results)
    if plan.limits:
        outcome.verdict = verdict(plan, store, runner)
    return outcome


def verdict(plan: Plan, store: "Store", runner: _Runner) -> dict[str, Any]:
    """``recommend`` on this machine with the plan's limits, kept to the plan's models."""
    from lab import report

    limits = dict(plan.limits)
    kwargs: dict[str, Any] = {k: limits.pop(k) for k in list(limits) if k in (
        "min_tg", "min_pp", "max_ttft_ms", "max_itl_p95_ms", "max_j_per_token", "min_accuracy", "max_kld",
        "max_ppl_ratio", "suite")}
    if "max_memory" in limits:
        kwargs["max_memory_bytes"] = report.parse_bytes(limits.pop("max_memory"))
    kwargs["test_pp"] = limits.pop("pp_test", "pp512")
    kwargs["test_tg"] = limits.pop("tg_test", "tg128")
    ids = {got[1] for got in runner.models.values() if isinstance(got, tuple)}
    try:
        rec = report.recommend(store, machine_id=runner.machine["id"], **kwargs)
    except LabError as exc:
        return {"pick": None, "summary": str(exc).rstrip(".") + ".", "candidates": []}
    ours = [c for c in rec.candidates if c.row.get("model_id") in ids]
    pick = next((c for c in ours if c.status == "pass"), None)
    met = "; ".join(c.describe() for c in pick.checks) if pick else ""
    summary = (f"{pick.row['model_filename']} is the smallest plan model that meets every limit: {met}."
               if pick else "No plan model meets every limit.")
    return {"pick": pick.row["model_filename"] if pick else None, "summary": summary,
            "candidates": [{"model_filename": c.row["model_filename"], "status": c.status, "reason": c.reason()}
                           for c in ours]}
