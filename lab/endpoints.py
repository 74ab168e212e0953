"""OpenAI-compatible endpoints (the model a team calls today) as candidates beside local models.

An endpoint is registered by name (``rightsizer endpoints add``): base URL, the API's model id,
prices per million input/output tokens, and the NAME of an environment variable holding the API
key. The key itself is read from that variable at call time and is never stored, logged or put
into a message (a server's error text is scrubbed of it; an authentication refusal is described
without the server's words, since servers quote part of the key back).

Calls go through the official ``openai`` client with an explicit timeout and retry count. Every
failure a user or a remote service can cause (no route, refused connection, timeout, rate
limit, server error, a refused key) becomes one :class:`EndpointError` sentence; an eval stores
it as the item's error instead of stopping.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from lab.errors import LabError

if TYPE_CHECKING:
    from lab.store import Store

PREFIX = "endpoint:"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 2
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Sent when the endpoint takes no key: without it the client would fall back to
# $OPENAI_API_KEY and hand that key to whatever URL was registered.
_NO_KEY = "no-key"


class EndpointError(LabError):
    """An endpoint that is unknown, misregistered, unreachable or refused a request.

    ``fatal`` is true when every further request would fail the same way (no connection, a
    refused key, an unknown model), so an eval stops calling and records the rest as not run."""

    def __init__(self, message: str, *, fatal: bool = False, status: int | None = None, timed_out: bool = False):
        super().__init__(message)
        self.fatal = fatal
        self.status = status
        self.timed_out = timed_out


@dataclass
class Endpoint:
    id: str
    name: str
    url: str
    model: str
    api_key_env: str | None = None
    price_in_per_mtok: float | None = None
    price_out_per_mtok: float | None = None
    added_at: str | None = None

    @property
    def label(self) -> str:
        """How runs against it are named (``model_filename``)."""
        return PREFIX + self.name

    def as_row(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "url": self.url, "model": self.model,
                "api_key_env": self.api_key_env, "price_in_per_mtok": self.price_in_per_mtok,
                "price_out_per_mtok": self.price_out_per_mtok, "added_at": self.added_at}


def endpoint_name(arg: str) -> str | None:
    """``NAME`` for a MODEL argument ``endpoint:NAME``; None for anything else."""
    return arg[len(PREFIX):] if arg.startswith(PREFIX) else None


# --- registry -------------------------------------------------------------------------------


def _from_row(row: dict[str, Any]) -> Endpoint:
    return Endpoint(**{k: row.get(k) for k in Endpoint.__dataclass_fields__})


def list_endpoints(store: "Store") -> list[Endpoint]:
    """Registered endpoints (not removed), by name."""
    rows = store.query("select * from endpoints where removed_at is null order by name, added_at")
    return [_from_row(r) for r in rows]


def get_endpoint(store: "Store", name: str) -> Endpoint:
    """The registered endpoint called ``name`` (the newest, should a merge have brought two)."""
    rows = store.query("select * from endpoints where name = ? and removed_at is null "
                       "order by added_at desc limit 1", [name])
    if not rows:
        known = ", ".join(e.name for e in list_endpoints(store)) or "none"
        raise EndpointError(f"No endpoint called {name!r} (registered: {known}); add it with "
                            "'rightsizer endpoints add'")
    return _from_row(rows[0])


def _check_price(value: float | None, flag: str) -> None:
    if value is not None and not (value >= 0 and value < float("inf")):
        raise EndpointError(f"{flag} must be a price of 0 or more (USD per million tokens)")


def add_endpoint(store: "Store", name: str, *, url: str, model: str, api_key_env: str | None = None,
                 price_in: float | None = None, price_out: float | None = None) -> Endpoint:
    """Register an endpoint; refuses a name in use, a URL that is not http(s), and a key value
    given where the NAME of an environment variable belongs."""
    from lab.ids import new_id
    from lab.store import now_iso

    if not _NAME.match(name):
        raise EndpointError(f"Endpoint name {name!r} must be letters, digits, '.', '_' or '-' (64 at most)")
    if not re.match(r"^https?://[^\s/]+", url):
        raise EndpointError(f"{url!r} is not an http:// or https:// URL (e.g. https://api.openai.com/v1)")
    if not model.strip():
        raise EndpointError("--model must name the API's model id (e.g. gpt-4o-mini)")
    if api_key_env is not None and not _ENV_NAME.match(api_key_env):
        # Never echo the value: it may be the key itself.
        raise EndpointError("--api-key-env takes the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                            "not the key")
    _check_price(price_in, "--price-in")
    _check_price(price_out, "--price-out")
    if store.query("select 1 from endpoints where name = ? and removed_at is null", [name]):
        raise EndpointError(f"An endpoint called {name!r} exists; remove it first ('rightsizer endpoints rm {name}')")
    endpoint = Endpoint(id=new_id(), name=name, url=url.rstrip("/"), model=model.strip(), api_key_env=api_key_env,
                        price_in_per_mtok=price_in, price_out_per_mtok=price_out, added_at=now_iso())
    store.add_row("endpoints", endpoint.as_row())
    return endpoint


def remove_endpoint(store: "Store", name: str) -> Endpoint:
    """Take an endpoint off the list. Its row stays, marked removed, so the runs measured
    against it keep their URL and model; the name can be registered again."""
    from lab.store import now_iso

    endpoint = get_endpoint(store, name)
    with store.db.conn:
        store.db.execute("update endpoints set removed_at = ? where id = ?", [now_iso(), endpoint.id])
    return endpoint


# --- calls ----------------------------------------------------------------------------------


def _api_key(endpoint: Endpoint) -> str:
    if not endpoint.api_key_env:
        return _NO_KEY
    value = os.environ.get(endpoint.api_key_env)
    if not value:
        raise EndpointError(f"Endpoint {endpoint.name} reads its API key from ${endpoint.api_key_env}, "
                            "which is not set", fatal=True)
    return value


def client(endpoint: Endpoint, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_retries: int = DEFAULT_MAX_RETRIES) -> Any:
    """An ``openai.OpenAI`` client for ``endpoint`` with an explicit timeout and retry count
    (the client retries connection errors, 408, 409, 429 and 5xx with backoff)."""
    import openai

    return openai.OpenAI(base_url=endpoint.url, api_key=_api_key(endpoint), timeout=timeout_s,
                         max_retries=max_retries)


def _scrub(text: str, endpoint: Endpoint) -> str:
    key = os.environ.get(endpoint.api_key_env) if endpoint.api_key_env else None
    if key:
        text = text.replace(key, "***")
    return " ".join(text.split())[:300]


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        msg = inner.get("message") if isinstance(inner, dict) else None
        if isinstance(msg, str) and msg.strip():
            return msg
    return str(getattr(exc, "message", "") or exc)


def describe_error(exc: BaseException, endpoint: Endpoint, *, timeout_s: float, max_retries: int) -> EndpointError:
    """One sentence for an ``openai`` exception (never containing the key)."""
    import openai

    where = f"endpoint {endpoint.name} ({endpoint.url})"
    tries = f"after {max_retries} retr{'y' if max_retries == 1 else 'ies'}" if max_retries else "with no retry"
    if isinstance(exc, openai.APITimeoutError):
        return EndpointError(f"{where} did not answer within {timeout_s:g} s {tries}", timed_out=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = str(cause) if cause is not None else str(exc)
        if "refused" in detail.lower():
            detail = "connection refused"
        return EndpointError(f"Cannot reach {where} ({_scrub(detail, endpoint)}) {tries}", fatal=True)
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        source = f"${endpoint.api_key_env}" if endpoint.api_key_env else "no key (none registered)"
        return EndpointError(f"{where} refused the API key from {source} ({exc.status_code})",
                             fatal=True, status=exc.status_code)
    if isinstance(exc, openai.RateLimitError):
        return EndpointError(f"{where} is rate-limiting requests (429) {tries}: "
                             f"{_scrub(_server_message(exc), endpoint)}", status=429)
    if isinstance(exc, openai.NotFoundError):
        return EndpointError(f"{where} answered 404 for model {endpoint.model!r}: "
                             f"{_scrub(_server_message(exc), endpoint)}", fatal=True, status=404)
    if isinstance(exc, openai.APIStatusError):
        kind = "a server error" if exc.status_code >= 500 else "a refusal"
        return EndpointError(f"{where} answered with {kind} ({exc.status_code}): "
                             f"{_scrub(_server_message(exc), endpoint)}", status=exc.status_code)
    if isinstance(exc, openai.OpenAIError):
        return EndpointError(f"{where} gave an answer that could not be read: {_scrub(str(exc), endpoint)}")
    raise exc


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    n_prompt_tokens: int | None  # as the API counted them (None: it did not say)
    n_tokens: int | None
    latency_ms: float


class Caller:
    """Calls one endpoint with one client (one connection pool) for a whole run."""

    def __init__(self, endpoint: Endpoint, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_retries: int = DEFAULT_MAX_RETRIES):
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._client = client(endpoint, timeout_s=timeout_s, max_retries=max_retries)

    def _error(self, exc: BaseException) -> EndpointError:
        return describe_error(exc, self.endpoint, timeout_s=self.timeout_s, max_retries=self.max_retries)

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int,
                 response_format: dict[str, Any] | None = None) -> Completion:
        """One greedy chat completion (temperature 0, as local evals decode)."""
        import openai

        extra: dict[str, Any] = {"response_format": response_format} if response_format else {}
        start = time.perf_counter()
        try:
            response = self._client.chat.completions.create(
                model=self.endpoint.model, messages=messages, max_tokens=max_tokens, temperature=0, **extra)
        except openai.OpenAIError as exc:
            raise self._error(exc) from None
        latency_ms = (time.perf_counter() - start) * 1000
        choice = response.choices[0] if response.choices else None
        usage = response.usage
        return Completion(
            text=(choice.message.content or "") if choice is not None else "",
            finish_reason=choice.finish_reason if choice is not None else None,
            n_prompt_tokens=usage.prompt_tokens if usage is not None else None,
            n_tokens=usage.completion_tokens if usage is not None else None, latency_ms=latency_ms)

    def stream_chat(self, messages: list[dict[str, str]], *, max_tokens: int) -> dict[str, Any]:
        """One streamed greedy answer, timed from the stream itself: time to the first content
        chunk, the gaps between content chunks, end to end. Same shape as a local chat prompt's
        figures (``ttft_ns``, ``gaps_ns``, ``e2e_ns``, ``n_generated``, ``n_prompt_tokens``,
        ``text``) plus ``ts``: generated tokens after the first over the time they took.

        Tokens are the API's count when it reports usage in the stream, else one per content
        chunk (llama.cpp servers send one token per chunk)."""
        import openai

        stamps: list[int] = []
        parts: list[str] = []
        usage = None
        t0 = time.perf_counter_ns()
        try:
            stream = self._client.chat.completions.create(
                model=self.endpoint.model, messages=messages, max_tokens=max_tokens, temperature=0,
                stream=True, stream_options={"include_usage": True})
            for chunk in _chunks(stream):
                if getattr(chunk, "usage", None) is not None:
                    usage = chunk.usage
                for choice in chunk.choices or []:
                    text = choice.delta.content if choice.delta is not None else None
                    if text:
                        stamps.append(time.perf_counter_ns())
                        parts.append(text)
        except openai.OpenAIError as exc:
            raise self._error(exc) from None
        end = time.perf_counter_ns()
        if not stamps:
            raise EndpointError(f"endpoint {self.endpoint.name} streamed no text for a chat prompt")
        n_generated = usage.completion_tokens if usage is not None and usage.completion_tokens else len(stamps)
        span_ns = stamps[-1] - stamps[0]
        return {
            "ttft_ns": stamps[0] - t0,
            "gaps_ns": [b - a for a, b in zip(stamps, stamps[1:])],
            "e2e_ns": end - t0,
            "n_generated": n_generated,
            "n_prompt_tokens": usage.prompt_tokens if usage is not None else None,
            "ts": (n_generated - 1) * 1e9 / span_ns if n_generated > 1 and span_ns > 0 else None,
            "text": "".join(parts),
        }

    def close(self) -> None:
        self._client.close()


def _chunks(stream: Any) -> Iterator[Any]:
    with stream:
        yield from stream


# --- chat latency -----------------------------------------------------------------------------


def run_chat_bench(store: "Store", endpoint: Endpoint, *, prompts_file: Any = None, max_tokens: int = 128,
                   warmup: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S,
                   max_retries: int = DEFAULT_MAX_RETRIES, label: str | None = None,
                   on_event: Any = None, cancel: Any = None) -> dict[str, Any]:
    """``bench endpoint:NAME --chat``: each prompt streamed once (after one untimed warm-up),
    stored as a ``chat`` result of a ``bench`` run whose model is the endpoint. Returns
    ``{"status", "run_id", "row", "error"}``; a failed request fails the run with its sentence."""
    from lab import __version__
    from lab.bench import chat_figures, load_prompts
    from lab.quality import record_machine

    emit = on_event or (lambda _e: None)
    prompts = load_prompts(prompts_file)
    machine_id = record_machine(store)
    config = {"tests": ["chat"], "chat_max_tokens": max_tokens, "n_prompts": len(prompts), "timeout": timeout_s,
              "max_retries": max_retries, "endpoint": {"id": endpoint.id, "name": endpoint.name,
                                                       "url": endpoint.url, "model": endpoint.model}}
    run_id = store.create_run("bench", machine_id=machine_id, model_id=endpoint.id, model_filename=endpoint.label,
                              config=config, lab_version=__version__, label=label)
    emit({"event": "run_start", "run_id": run_id, "model_filename": endpoint.label, "index": 0, "n_runs": 1,
          "tests": ["chat"], "items": [{"test": "chat", "n_prompt": 0, "n_gen": 0, "n_depth": 0, "kind": "chat"}],
          "repetitions": len(prompts)})
    chats: list[dict[str, Any]] = []
    caller = None
    status, error, row = "ok", None, None
    try:
        caller = Caller(endpoint, timeout_s=timeout_s, max_retries=max_retries)
        if warmup:
            caller.stream_chat(prompts[0].messages, max_tokens=min(8, max_tokens))
        emit({"event": "test_start", "run_id": run_id, "index": 0, "test": "chat", "reps": len(prompts)})
        for rep, prompt in enumerate(prompts):
            if cancel is not None and cancel.is_set():
                status, error = "cancelled", "cancelled by the user"
                break
            figures = caller.stream_chat(prompt.messages, max_tokens=max_tokens)
            chats.append(figures)
            emit({"event": "rep", "run_id": run_id, "index": 0, "rep": rep, "ns": figures["e2e_ns"],
                  "ts": figures["ts"], "ttft_ns": figures["ttft_ns"], "n_generated": figures["n_generated"]})
    except EndpointError as exc:
        status, error = "failed", str(exc)
    finally:
        if caller is not None:
            caller.close()
    if status == "ok":
        row = {"run_id": run_id, "machine_id": machine_id, "model_id": endpoint.id,
               "model_filename": endpoint.label, "model_type": f"{endpoint.label} ({endpoint.model})", "test": "chat",
               "n_prompt": 0, "n_gen": 0, "n_depth": 0, **chat_figures(chats)}
        from lab.stats import NOISY_CV

        row["noisy"] = int(row.get("cv") is not None and row["cv"] > NOISY_CV)
        row["id"] = store.add_result(row)
        emit({"event": "result", "run_id": run_id, "row": row})
    store.finish_run(run_id, status, error=error)
    emit({"event": "run_end", "run_id": run_id, "status": status, "error": error, "exit_code": None, "signal": None})
    return {"status": status, "run_id": run_id, "row": row, "error": error}
