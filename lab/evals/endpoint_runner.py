"""Run a task suite against an OpenAI-compatible endpoint: the same items, scorers and summary
as a local model, with the generation done by the endpoint instead of an engine child.

Constraints travel as the API can take them, and each item records how (``constraint_note``):

* a JSON schema (``"constraint": "schema"`` or ``{"json_schema": ...}``) is sent as
  ``response_format`` ``json_schema`` (strict); a server that rejects that form gets the schema
  as ``json_object`` + ``schema`` (llama.cpp's servers take it so); one that rejects both runs
  the item unconstrained. The form that worked is kept for the rest of the run.
* ``"json"`` is sent as ``response_format`` ``json_object``.
* a ``choices`` or GBNF grammar has no API form: the item runs unconstrained, and says so.

Items are generated one after another, greedily (temperature 0). A failure of one request
(timeout, rate limit, server error) is that item's error; a failure that every request would
repeat (no connection, a refused key) stores the remaining items as not run and fails the run
with one sentence.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from lab.errors import Cancelled
from lab.evals.runner import EvalOptions, OnEvent, score_row

if TYPE_CHECKING:
    from lab.endpoints import Caller, Endpoint
    from lab.evals.suite import Item, Suite
    from lab.store import Store

# Forms of a JSON schema in response_format, tried in this order.
_SCHEMA_FORMS = ("json_schema", "json_object_schema")
_SUMMARY_KEYS = ("n_items", "n_correct", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "format_valid_rate",
                 "n_empty", "n_timeout", "n_error", "latency_p50_ms", "latency_p95_ms")


def _item_schema(item: "Item") -> dict[str, Any] | None:
    if item.constraint == "schema":
        return item.schema
    if isinstance(item.constraint, dict) and "json_schema" in item.constraint:
        return item.constraint["json_schema"]
    return None


def _response_format(schema: dict[str, Any], form: str) -> dict[str, Any]:
    if form == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "item", "schema": schema, "strict": True}}
    return {"type": "json_object", "schema": schema}


_FORM_NOTES = {
    "json_schema": "JSON schema sent as response_format json_schema (strict)",
    "json_object_schema": "JSON schema sent as response_format json_object with schema (the server "
                          "rejected json_schema)",
    "json_object": "sent as response_format json_object (JSON mode)",
}


def _rejects_format(exc: Exception) -> bool:
    """A refusal of the response_format itself (so another form may work), not of the request."""
    status = getattr(exc, "status", None)
    text = str(exc).lower()
    return status in (400, 422, 500) and ("response_format" in text or "schema" in text)


class _Constraints:
    """Which response_format each item gets, learning which forms the endpoint takes."""

    def __init__(self, apply: bool):
        self.apply = apply
        self.schema_forms = list(_SCHEMA_FORMS)
        self.json_mode = True

    def plan(self, item: "Item") -> tuple[dict[str, Any] | None, str | None, str | None]:
        """(response_format, note, form) for one item."""
        if item.constraint is None or not self.apply:
            return None, None, None
        schema = _item_schema(item)
        if schema is not None:
            if not self.schema_forms:
                return None, "not sent: the endpoint rejected every JSON-schema form; ran unconstrained", None
            form = self.schema_forms[0]
            return _response_format(schema, form), _FORM_NOTES[form], form
        if item.constraint == "json":
            if not self.json_mode:
                return None, "not sent: the endpoint rejected JSON mode; ran unconstrained", None
            return {"type": "json_object"}, _FORM_NOTES["json_object"], "json_object"
        kind = "a choices grammar" if item.constraint == "choices" else "a GBNF grammar"
        return None, f"not sent: {kind} cannot be sent to an endpoint; ran unconstrained", None

    def rejected(self, form: str) -> None:
        if form == "json_object":
            self.json_mode = False
        elif form in self.schema_forms:
            self.schema_forms.remove(form)


def _messages(item: "Item") -> tuple[list[dict[str, str]], str | None]:
    if item.messages is not None:
        return item.messages, None
    return ([{"role": "user", "content": item.prompt or ""}],
            "raw prompt sent as a user message (the endpoint applies its own chat template)")


def _generate(caller: "Caller", item: "Item", max_tokens: int, constraints: _Constraints) -> dict[str, Any]:
    """One item's engine-like row (``status``, ``output``, ``latency_ms``, ``n_tokens`` ...) plus
    ``constraint_note`` and ``n_prompt_tokens``; a fatal EndpointError propagates."""
    from lab.endpoints import EndpointError

    messages, raw_note = _messages(item)
    while True:
        fmt, note, form = constraints.plan(item)
        try:
            done = caller.complete(messages, max_tokens=max_tokens, response_format=fmt)
        except EndpointError as exc:
            if form is not None and _rejects_format(exc):
                constraints.rejected(form)
                continue  # the same item with the next form (or none)
            if exc.fatal:
                raise
            row = {"status": "timeout" if exc.timed_out else "error", "output": "", "n_tokens": None,
                   "latency_ms": None, "error": str(exc)}
        else:
            row = {"status": "ok", "output": done.text, "n_tokens": done.n_tokens, "latency_ms": done.latency_ms,
                   "n_prompt_tokens": done.n_prompt_tokens, "error": None,
                   "hit_max_tokens": done.finish_reason == "length"}
        row["constraint_note"] = "; ".join(n for n in (note, raw_note) if n) or None
        return row


def run_endpoint_eval(store: "Store", endpoint: "Endpoint", suite: "Suite", items: list["Item"],
                      options: EvalOptions, constrained: bool, machine_id: str, on_event: OnEvent,
                      cancel: threading.Event | None = None, *, max_retries: int | None = None) -> dict[str, Any]:
    """Run ``items`` against ``endpoint``; stores a run, every item and the summary, and returns
    the summary with ``items`` like a local eval. Raises EndpointError (after storing) when the
    endpoint cannot be used at all."""
    from lab import __version__
    from lab.endpoints import DEFAULT_MAX_RETRIES, Caller, EndpointError
    from lab.evals.stats import summarize
    from lab.ids import new_id, short_id
    from lab.store import now_iso

    retries = DEFAULT_MAX_RETRIES if max_retries is None else max_retries
    apply = constrained and any(i.constraint is not None for i in items)
    eval_run_id = new_id()
    config = {"suite": suite.name, "suite_path": str(suite.path), "suite_sha256": suite.sha256,
              "constrained": apply, "max_tokens": options.max_tokens, "timeout_s": options.timeout_s,
              "n_items": len(items), "eval_run_id": eval_run_id, "max_retries": retries,
              "endpoint": {"id": endpoint.id, "name": endpoint.name, "url": endpoint.url, "model": endpoint.model}}
    run_id = store.create_run("eval", machine_id=machine_id, model_id=endpoint.id, model_filename=endpoint.label,
                              config=config, lab_version=__version__)
    on_event({"event": "eval_start", "run_id": run_id, "model_filename": endpoint.label, "constrained": apply,
              "n_items": len(items)})
    done: list[dict[str, Any]] = []
    status, error = "ok", None
    constraints = _Constraints(apply)

    def store_item(item: "Item", child_row: dict[str, Any]) -> None:
        row = score_row(item, child_row)
        row.update(constraint_note=child_row.get("constraint_note"), n_prompt_tokens=child_row.get("n_prompt_tokens"))
        stored = {k: v for k, v in row.items() if k not in ("detail", "line", "hit_max_tokens")}
        stored.update(eval_run_id=eval_run_id, run_id=run_id, machine_id=machine_id, model_id=endpoint.id)
        row["id"] = store.add_row("eval_items", stored)
        done.append(row)
        on_event({"event": "eval_item", "run_id": run_id, "model_filename": endpoint.label, "constrained": apply,
                  "n_done": len(done), "n_items": len(items), **row})

    caller = None
    try:
        caller = Caller(endpoint, timeout_s=options.timeout_s, max_retries=retries)
        for item in items:
            if cancel is not None and cancel.is_set():
                status, error = "cancelled", "cancelled by the user"
                break
            store_item(item, _generate(caller, item, item.max_tokens or options.max_tokens, constraints))
    except EndpointError as exc:
        status, error = "failed", str(exc)
        failed_at = len(done)  # the item whose request failed; the rest were not sent
        for index, item in enumerate(items[failed_at:]):
            store_item(item, {"status": "error", "output": "", "error": error if index == 0 else f"not run: {error}"})
    finally:
        if caller is not None:
            caller.close()
    if status == "ok" and done and all(r["status"] != "ok" for r in done):
        status, error = "failed", done[-1]["error"]
    summary = summarize(done)
    record = {"id": eval_run_id, "run_id": run_id, "machine_id": machine_id, "model_id": endpoint.id,
              "model_filename": endpoint.label, "suite": suite.name, "suite_sha256": suite.sha256,
              "constrained": int(apply), "created_at": now_iso(), **{k: summary[k] for k in _SUMMARY_KEYS}}
    if status != "cancelled":
        store.add_row("eval_runs", record)
    store.finish_run(run_id, status, error=error)
    result = dict(record, status=status, error=error, file_type=None, n_format_checked=summary["n_format_checked"],
                  accuracy_ci95=[record["accuracy_ci_low"], record["accuracy_ci_high"]]
                  if record["accuracy_ci_low"] is not None else None, peak_rss_bytes=None, items=done)
    on_event({"event": "eval_end", **{k: v for k, v in result.items() if k != "items"}})
    if status == "cancelled":
        raise Cancelled(f"{len(done)} of {len(items)} items were scored and stored for {endpoint.label}")
    if status == "failed":
        raise EndpointError(f"{error}; {len(done)} items stored as errors in run {short_id(run_id)}")
    return result


def run_evals(store: "Store", options: EvalOptions, *, on_event: OnEvent | None = None,
              cancel: threading.Event | None = None) -> list[dict[str, Any]]:
    """:func:`lab.evals.runner.run_eval` for a list of MODELS in which some are
    ``endpoint:NAME``: local models run in engine children, endpoints through their API, in the
    order given."""
    from dataclasses import replace

    from lab.endpoints import endpoint_name, get_endpoint
    from lab.evals.runner import run_eval
    from lab.evals.suite import load_suite
    from lab.quality import record_machine

    names = [endpoint_name(m) for m in options.models]
    if not any(names):
        return run_eval(store, options, on_event=on_event, cancel=cancel)
    endpoints = {n: get_endpoint(store, n) for n in names if n}  # unknown names fail before any run
    suite = load_suite(options.suite)
    items = suite.items[: options.limit] if options.limit else suite.items
    emit: OnEvent = on_event or (lambda _e: None)
    machine_id = record_machine(store)
    out: list[dict[str, Any]] = []
    for model, name in zip(options.models, names):
        if name is None:
            out += run_eval(store, replace(options, models=[model]), on_event=on_event, cancel=cancel)
            continue
        for constrained in options.constrained:
            out.append(run_endpoint_eval(store, endpoints[name], suite, items, options, constrained, machine_id,
                                         emit, cancel))
    return out


def constraint_summary(items: list[dict[str, Any]]) -> str | None:
    """The distinct constraint notes of a run's items, with counts (for a one-line report)."""
    counts: dict[str, int] = {}
    for row in items:
        if row.get("constraint_note"):
            counts[row["constraint_note"]] = counts.get(row["constraint_note"], 0) + 1
    return "; ".join(f"{n} item{'s' if n != 1 else ''}: {note}" for note, n in counts.items()) or None

