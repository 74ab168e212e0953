"""Run a task suite against models: generation in an engine child, scoring in the parent.

The child (``run_eval_job``) loads one model, renders each item through the model's chat
template, and generates greedily — through llama.cpp's grammar sampler when the item carries a
constraint and the run applies constraints. It stops at an end-of-generation token, at the
item's ``max_tokens``, or when the item's time is up (checked after every token), and sends the
raw output, latency and token count of each item as it finishes.

The parent (``run_eval``) scores each output as it arrives (scorers are pure Python), stores it
in ``eval_items`` at once, and watches the child: an item that does not come back within its
timeout plus a grace period gets the child stopped, the item recorded as a timeout, and a fresh
child started for the items left, so one runaway generation cannot stall a suite. The summary
(accuracy with a Wilson 95% interval, format-valid rate, failure counts, latency p50/p95) goes
to ``eval_runs``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lab.errors import Cancelled, LabError

if TYPE_CHECKING:
    from lab.evals.suite import Item, Suite
    from lab.store import Store

OnEvent = Callable[[dict[str, Any]], None]
DEFAULT_MAX_TOKENS = 128
DEFAULT_TIMEOUT_S = 60.0
GRACE_S = 10.0  # beyond an item's own timeout, before the parent stops the child
LOAD_TIMEOUT_S = 600.0
MAX_RESTARTS = 3


# --- child side -----------------------------------------------------------------------------


def _generate(model: Any, ctx: Any, prompt: list[int], sampler: Any, max_tokens: int,
              deadline: float) -> tuple[list[int], str]:
    """Greedy generation; returns (tokens without the end token, status)."""
    import numpy as np

    ctx.clear()
    ctx.decode(prompt)
    if sampler is not None:
        sampler.reset()
    out: list[int] = []
    while True:
        token = sampler.sample(ctx) if sampler is not None else int(np.argmax(ctx.logits_last()))
        if model.is_eog(token):
            return out, "ok"
        out.append(token)
        if len(out) >= max_tokens:
            return out, "ok"
        if time.perf_counter() > deadline:
            return out, "timeout"
        ctx.decode_one(token)


def run_eval_job(payload: dict[str, Any], emit: Callable[..., None]) -> None:
    """Entry point in the engine child for ``kind == "eval"``.

    payload: ``model``, ``items`` (``Item.to_wire()``), ``max_tokens``, ``timeout_s``,
    ``constrained``, ``n_threads``, ``n_ctx`` (None: fitted to the longest item),
    ``n_gpu_layers``. Emits ``progress`` (stage ``item_start``) and one ``row`` per item.
    """
    from lab.engine import llm, protocol
    from lab.engine.worker import peak_rss_bytes

    t0 = time.perf_counter()
    model = llm.Model(payload["model"], n_gpu_layers=int(payload.get("n_gpu_layers") or 0),
                      repack=payload.get("repack"))
    samplers: dict[str, Any] = {}
    ctx = None
    try:
        items = payload["items"]
        default_max = int(payload.get("max_tokens") or DEFAULT_MAX_TOKENS)
        timeout_s = float(payload.get("timeout_s") or DEFAULT_TIMEOUT_S)
        constrained = bool(payload.get("constrained", True))
        prompts: list[list[int]] = []
        for it in items:
            if it.get("messages") is not None:
                text = model.apply_chat_template(it["messages"])
            else:
                text = it["prompt"]
            prompts.append(model.tokenize(text, add_special=True, parse_special=True))
        longest = max(len(p) + int(it.get("max_tokens") or default_max) for p, it in zip(prompts, items))
        n_ctx = int(payload.get("n_ctx") or (longest + 8))
        ctx = llm.Context(model, n_ctx=n_ctx, n_batch=min(n_ctx, 2048), n_ubatch=min(n_ctx, 512),
                          n_threads=int(payload["n_threads"]))
        if constrained:
            for it in items:
                g = it.get("grammar")
                if g and g not in samplers:
                    try:
                        samplers[g] = llm.GrammarSampler(model, g)
                    except LabError:
                        raise LabError(f"suite line {it['line']}: llama.cpp rejected the item's grammar "
                                       "(its log says where)") from None
        emit(protocol.LOADED, load_ms=(time.perf_counter() - t0) * 1000, desc=model.desc, n_ctx=n_ctx,
             model_size=model.size, n_params=model.n_params, peak_rss_bytes=peak_rss_bytes(),
             chat_template=model.chat_template_used() if any(it.get("messages") is not None for it in items)
             else None)
        for it, prompt in zip(items, prompts):
            emit(protocol.PROGRESS, stage="item_start", index=it["index"])
            max_tokens = int(it.get("max_tokens") or default_max)
            sampler = samplers.get(it.get("grammar") or "") if constrained else None
            start = time.perf_counter()
            row: dict[str, Any] = {"index": it["index"], "n_prompt_tokens": len(prompt)}
            if len(prompt) + max_tokens > n_ctx:
                row.update(status="error", output="", n_tokens=0, latency_ms=None,
                           error=f"the prompt ({len(prompt)} tokens) and max_tokens ({max_tokens}) exceed "
                                 f"the context of {n_ctx}")
            else:
                try:
                    tokens, status = _generate(model, ctx, prompt, sampler, max_tokens, start + timeout_s)
                    row.update(status=status, output=model.detokenize(tokens), n_tokens=len(tokens),
                               hit_max_tokens=len(tokens) >= max_tokens, error=None if status == "ok" else
                               f"generation took longer than {timeout_s:g} s")
                except LabError as exc:
                    row.update(status="error", output="", n_tokens=0, error=str(exc))
                row["latency_ms"] = (time.perf_counter() - start) * 1000
            emit(protocol.ROW, table="eval_item", **row)
        emit(protocol.PROGRESS, stage="finished", peak_rss_bytes=peak_rss_bytes())
    finally:
        for s in samplers.values():
            s.close()
        if ctx is not None:
            ctx.close()
        model.close()


# --- parent side ----------------------------------------------------------------------------


@dataclass
class EvalOptions:
    """``rightsizer eval MODEL... --suite FILE``."""

    models: list[str]
    suite: str | Path
    constrained: list[bool] = field(default_factory=lambda: [True])  # [True, False] runs both
    max_tokens: int = DEFAULT_MAX_TOKENS
    timeout_s: float = DEFAULT_TIMEOUT_S
    n_ctx: int | None = None
    n_threads: int | None = None
    n_gpu_layers: int = 0
    limit: int | None = None  # only the first N items (quick looks)


def _expected_text(item: "Item") -> str | None:
    if not item.has_expected:
        return None
    return item.expected if isinstance(item.expected, str) else json.dumps(item.expected, ensure_ascii=False)


def _format_applies(item: "Item") -> bool:
    return item.scorer in ("json_schema", "choice")


def score_row(item: "Item", child_row: dict[str, Any]) -> dict[str, Any]:
    """The ``eval_items`` figures of one generated (or failed) item."""
    from lab.evals.scorers import score_item

    output = child_row.get("output") or ""
    status = child_row.get("status", "error")
    if status == "error":
        score, correct, valid, detail = 0.0, False, (False if _format_applies(item) else None), None
    else:
        s = score_item(item, output)
        score, correct, valid, detail = s.score, s.correct, s.format_valid, s.detail
        if status == "timeout":
            score, correct = 0.0, False
        if child_row.get("hit_max_tokens") and not correct:
            detail = f"stopped at max_tokens ({child_row.get('n_tokens')}); {detail or 'incomplete'}"
    return {
        "item_index": item.index, "item_id": item.id, "input": item.input_text, "expected": _expected_text(item),
        "output": output, "scorer": item.scorer, "score": score, "correct": int(correct),
        "format_valid": None if valid is None else int(valid), "status": status,
        "error": child_row.get("error"), "latency_ms": child_row.get("latency_ms"),
        "n_tokens": child_row.get("n_tokens"), "detail": detail, "line": item.line,
        "hit_max_tokens": child_row.get("hit_max_tokens"),
    }


class _Watchdog:
    """Stops the child when an item overstays (timeout + grace) or the model takes too long to
    load, or when the user cancels; tells which happened."""

    def __init__(self, user_cancel: threading.Event | None, item_timeout: float):
        self.user_cancel = user_cancel
        self.limit = item_timeout + GRACE_S
        self.stop = threading.Event()
        self.stalled_index: int | None = None
        self.load_stalled = False
        self._item: tuple[int, float] | None = None
        self._started = time.monotonic()
        self._loaded = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eval-watchdog", daemon=True)
        self._thread.start()

    def loaded(self) -> None:
        self._loaded = True

    def item_started(self, index: int) -> None:
        self._item = (index, time.monotonic())

    def item_finished(self) -> None:
        self._item = None

    def current_index(self) -> int | None:
        """The item being generated when the child stopped (None: none had started)."""
        return self._item[0] if self._item is not None else None

    def _run(self) -> None:
        while not self._done.wait(0.1):
            if self.user_cancel is not None and self.user_cancel.is_set():
                self.stop.set()
                return
            now = time.monotonic()
            item = self._item
            if item is not None and now - item[1] > self.limit:
                self.stalled_index = item[0]
                self.stop.set()
                return
            if not self._loaded and now - self._started > LOAD_TIMEOUT_S:
                self.load_stalled = True
                self.stop.set()
                return

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=1)


def _eval_one(store: "Store", suite: "Suite", items: list["Item"], model: Any, model_row: dict[str, Any],
              constrained: bool, options: EvalOptions, machine_id: str, on_event: OnEvent,
              cancel: threading.Event | None) -> dict[str, Any]:
    from lab.engine.runner import run_child
    from lab.evals.stats import summarize
    from lab.ids import new_id
    from lab.provenance import run_extra
    from lab.store import now_iso

    apply = constrained and any(i.grammar for i in items)
    eval_run_id = new_id()
    config = {"suite": suite.name, "suite_path": str(suite.path), "suite_sha256": suite.sha256,
              "constrained": apply, "max_tokens": options.max_tokens, "timeout_s": options.timeout_s,
              "n_ctx": options.n_ctx, "n_threads": options.n_threads, "n_items": len(items),
              "eval_run_id": eval_run_id}
    run_id = store.create_run("eval", machine_id=machine_id, model_id=model_row["id"],
                              model_filename=model_row["model_filename"], config=config, **run_extra())
    by_index = {i.index: i for i in items}
    done: dict[int, dict[str, Any]] = {}
    peak_rss: list[int] = []
    template: list[str] = []  # what the engine rendered the items' messages with
    last_error: str | None = None
    last_log_tail: str | None = None
    status = "ok"
    restarts = 0
    on_event({"event": "eval_start", "run_id": run_id, "model_filename": model_row["model_filename"],
              "constrained": apply, "n_items": len(items)})

    def store_item(item: "Item", child_row: dict[str, Any]) -> None:
        row = score_row(item, child_row)
        stored = {k: v for k, v in row.items() if k not in ("detail", "line", "hit_max_tokens")}
        stored.update(eval_run_id=eval_run_id, run_id=run_id, machine_id=machine_id, model_id=model_row["id"])
        row["id"] = store.add_row("eval_items", stored)
        done[item.index] = row
        on_event({"event": "eval_item", "run_id": run_id, "model_filename": model_row["model_filename"],
                  "constrained": apply, "n_done": len(done), "n_items": len(items), **row})

    while len(done) < len(items):
        remaining = [i for i in items if i.index not in done]
        payload = {"model": str(model.path), "items": [i.to_wire() for i in remaining],
                   "max_tokens": options.max_tokens, "timeout_s": options.timeout_s, "constrained": apply,
                   "n_ctx": options.n_ctx, "n_threads": options.n_threads, "n_gpu_layers": options.n_gpu_layers}
        dog = _Watchdog(cancel, options.timeout_s)
        n_before = len(done)

        def handle(event: dict[str, Any]) -> None:
            kind = event.get("event")
            if kind == "loaded":
                dog.loaded()
                if event.get("chat_template"):
                    template.append(event["chat_template"])
                if event.get("peak_rss_bytes"):
                    peak_rss.append(event["peak_rss_bytes"])
            elif kind == "progress" and event.get("stage") == "item_start":
                dog.item_started(event["index"])
            elif kind == "progress" and event.get("stage") == "finished" and event.get("peak_rss_bytes"):
                peak_rss.append(event["peak_rss_bytes"])
            elif kind == "row" and event.get("table") == "eval_item":
                dog.item_finished()
                store_item(by_index[event["index"]], event)

        try:
            outcome = run_child({"kind": "eval", "payload": payload}, on_event=handle, cancel=dog.stop)
        finally:
            dog.close()
        if outcome.status == "ok":
            if len(done) == n_before:  # a child that ends well yet answers nothing: do not loop
                for item in [i for i in items if i.index not in done]:
                    store_item(item, {"status": "error", "output": "", "error": "the engine returned no answer"})
            continue  # every remaining item came back
        if dog.stalled_index is not None:
            store_item(by_index[dog.stalled_index], {
                "status": "timeout", "output": "", "n_tokens": None, "latency_ms": None,
                "error": f"no answer within {options.timeout_s + GRACE_S:g} s; the engine was stopped"})
            continue
        if outcome.status == "cancelled":
            status, last_error = "cancelled", "cancelled by the user"
            break
        last_error = "the model did not load in time" if dog.load_stalled else outcome.error
        last_log_tail = outcome.log_tail
        in_flight = dog.current_index()
        if in_flight is None:
            # It failed before generating anything: a model that cannot load, a grammar that
            # llama.cpp rejects, a context too large. Restarting would fail the same way.
            store.finish_run(run_id, "failed", error=last_error, exit_code=outcome.exit_code,
                             signal=outcome.signal, log_tail=outcome.log_tail)
            raise LabError(f"{model_row['model_filename']}: {last_error}")
        # The engine died during an item (a crash, an OOM kill): that item is an error, and a
        # fresh engine goes on with the rest, a few times at most.
        store_item(by_index[in_flight], {"status": "error", "output": "", "n_tokens": None, "latency_ms": None,
                                         "error": f"the engine stopped during this item: {last_error}"})
        restarts += 1
        if restarts > MAX_RESTARTS:
            for item in [i for i in items if i.index not in done]:
                store_item(item, {"status": "error", "output": "", "error": f"not run: {last_error}"})
            status = "failed"

    rows = [done[i.index] for i in items if i.index in done]
    summary = summarize(rows)
    record = {
        "id": eval_run_id, "run_id": run_id, "machine_id": machine_id, "model_id": model_row["id"],
        "model_filename": model_row["model_filename"], "suite": suite.name, "suite_sha256": suite.sha256,
        "constrained": int(apply), "created_at": now_iso(), "chat_template": template[-1] if template else None,
        **{k: summary[k] for k in ("n_items", "n_correct", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                                   "format_valid_rate", "n_empty", "n_timeout", "n_error", "latency_p50_ms",
                                   "latency_p95_ms")},
    }
    if status != "cancelled":
        store.add_row("eval_runs", record)
    store.finish_run(run_id, status, error=last_error if status != "ok" else None,
                     log_tail=last_log_tail if status != "ok" else None,
                     peak_rss_bytes=max(peak_rss) if peak_rss else None)
    result = dict(record, status=status, error=last_error if status != "ok" else None,
                  file_type=model_row.get("file_type"), n_format_checked=summary["n_format_checked"],
                  accuracy_ci95=[record["accuracy_ci_low"], record["accuracy_ci_high"]]
                  if record["accuracy_ci_low"] is not None else None,
                  peak_rss_bytes=max(peak_rss) if peak_rss else None, items=rows)
    on_event({"event": "eval_end", **{k: v for k, v in result.items() if k != "items"}})
    if status == "cancelled":
        raise Cancelled(f"{len(rows)} of {len(items)} items were scored and stored for {model_row['model_filename']}")
    return result


def run_eval(store: "Store", options: EvalOptions, *, on_event: OnEvent | None = None,
             cancel: threading.Event | None = None) -> list[dict[str, Any]]:
    """Run the suite against every model (and constraint setting); returns one summary per
    (model, setting), each with its scored ``items``. Raises SuiteError before any model is
    loaded when the suite has a problem."""
    from lab import library
    from lab.evals.suite import load_suite
    from lab.hardware import default_threads
    from lab.provenance import record_machine

    if options.max_tokens < 1:
        raise LabError("--max-tokens must be at least 1")
    if options.timeout_s <= 0:
        raise LabError("--timeout must be more than 0 seconds")
    suite = load_suite(options.suite)
    items = suite.items[: options.limit] if options.limit else suite.items
    options.n_threads = options.n_threads or default_threads()
    emit_event: OnEvent = on_event or (lambda _e: None)
    models = [library.resolve(m) for m in options.models]
    machine_id = record_machine(store)
    out = []
    for model in models:
        row = library.register(store, model)
        for constrained in options.constrained:
            out.append(_eval_one(store, suite, items, model, row, constrained, options, machine_id,
                                 emit_event, cancel))
    return out
