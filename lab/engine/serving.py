"""A continuous-batching server loop inside the engine child, as llama-server's slots serve.

Up to N slots (sequences) share one context with a unified KV cache. Every step decodes one
batch: one token for each slot that is generating, plus prompt tokens of slots that have just
taken a request (chunked to fit n_batch), so a new request joins the running batch at the next
step. Prompts are real chat messages rendered by the model's template; decoding is greedy; a
request stops at its max tokens or at an end-of-generation token.

The arrival process runs here too, so that every time stamp comes from one monotonic clock
(``time.perf_counter_ns``) and no pipe sits between a request's arrival and its queue:

* closed loop (``users``): N users, each sends its next request the moment its last one ends
  (no think time); no new request after the level's duration, the ones in flight finish;
* open loop (``rate``): Poisson arrivals at R requests/s from a seeded generator over the
  level's duration; a request waits in the queue while every slot is busy, and its queue time
  is part of its time to first token.

Per request: arrival, admission (queue time), first token (TTFT, from arrival), every
inter-token gap, end (e2e, from arrival), prompt and output tokens, and its status (``ok``,
``timeout`` when it outlived the request timeout, ``failed`` when llama.cpp refused its batch).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from lab.engine import protocol
from lab.engine.protocol import BenchJob, ChatPrompt, ContextParams, ModelParams
from lab.errors import LabError

Emit = Callable[..., None]
PROGRESS_EVERY_NS = 250_000_000  # live events: often enough for a UI, rare enough for two cores


def level_name(level: dict[str, Any]) -> str:
    """``load u4`` for four users, ``load r1.5`` for 1.5 requests/s (the results' test name)."""
    if level.get("users") is not None:
        return f"load u{int(level['users'])}"
    return f"load r{float(level['rate']):g}"


def level_slots(level: dict[str, Any]) -> int:
    """Sequences in the context: one per user in a closed loop, ``slots`` in an open one."""
    return int(level["users"]) if level.get("users") is not None else int(level["slots"])


def arrival_offsets_ns(rate: float, duration_s: float, seed: int) -> list[int]:
    """A Poisson process at ``rate`` per second over ``duration_s``: exponential gaps from a
    seeded generator (the same seed gives the same arrivals), as offsets from the level's start."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: list[int] = []
    t = 0.0
    while True:
        t += float(rng.exponential(1.0 / rate))
        if t >= duration_s:
            return out
        out.append(int(t * 1e9))


@dataclass
class _Request:
    index: int
    prompt: int  # index into the job's prompts
    arrival_ns: int
    user: int | None = None
    admit_ns: int | None = None
    stamps: list[int] = field(default_factory=list)
    end_ns: int | None = None
    n_prompt: int = 0
    n_generated: int = 0
    status: str = "ok"

    def record(self, t0: int) -> dict[str, Any]:
        """Times relative to the level's start (ns); None for what never happened."""
        def rel(t: int | None) -> int | None:
            return None if t is None else t - t0

        first = self.stamps[0] if self.stamps else None
        return {
            "index": self.index, "user": self.user, "prompt": self.prompt, "arrival_ns": rel(self.arrival_ns),
            "queue_ns": None if self.admit_ns is None else self.admit_ns - self.arrival_ns,
            "ttft_ns": None if first is None else first - self.arrival_ns,
            "gaps_ns": [b - a for a, b in zip(self.stamps, self.stamps[1:])],
            "e2e_ns": None if self.end_ns is None else self.end_ns - self.arrival_ns,
            "admit_ns": rel(self.admit_ns), "first_ns": rel(first), "end_ns": rel(self.end_ns),
            "n_prompt_tokens": self.n_prompt, "n_generated": self.n_generated, "status": self.status,
        }


@dataclass
class _Slot:
    seq: int
    req: _Request | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet decoded
    pos: int = 0
    last: int = 0  # the newest sampled token, decoded at the next step
    out: int = 0  # tokens sampled so far (EOG included)


class Server:
    """One level: slots in a context, the arrival process, the step loop."""

    def __init__(self, bench: Any, prompts: list[list[int]], level: dict[str, Any], job: dict[str, Any],
                 index: int, emit: Emit):
        self.bench, self.prompts, self.level, self.job, self.index, self.emit = bench, prompts, level, job, index, emit
        self.L = bench.llm.lib()
        self.n_slots = level_slots(level)
        self.max_tokens = int(job["max_tokens"])
        self.timeout_ns = int(float(job["request_timeout_s"]) * 1e9)
        self.duration_ns = int(float(job["duration_s"]) * 1e9)
        seed = int(job["seed"]) + index
        import random

        self.rng = random.Random(seed)  # which prompt each request sends
        self.arrivals = deque(arrival_offsets_ns(float(level["rate"]), float(job["duration_s"]), seed)
                              if level.get("users") is None else [])
        self.queue: deque[_Request] = deque()
        self.slots = [_Slot(s) for s in range(self.n_slots)]
        self.requests: list[_Request] = []
        self.max_active = 0
        self.steps = 0
        self.active_steps = 0  # sum over steps of the slots in the batch (mean = active_steps / steps)
        self._fresh: list[_Request] = []  # finished since the last progress event

    def n_ctx(self) -> int:
        """Every slot can hold the longest prompt and a full answer at once."""
        longest = max(len(p) for p in self.prompts)
        return self.n_slots * (longest + self.max_tokens + 1)

    def _new_request(self, arrival_ns: int, user: int | None) -> _Request:
        req = _Request(len(self.requests), self.rng.randrange(len(self.prompts)), arrival_ns, user)
        self.requests.append(req)
        self.queue.append(req)
        return req

    def _finish(self, slot: _Slot, now: int, status: str = "ok") -> None:
        req = slot.req
        assert req is not None
        req.end_ns, req.status = now, status
        self.L.llama_memory_seq_rm(self.ctx.mem, slot.seq, -1, -1)
        slot.req, slot.pending = None, []
        self._fresh.append(req)
        if req.user is not None and now - self.t0 < self.duration_ns:  # the user's next request
            self._new_request(now, req.user)

    def _admit(self, now: int) -> None:
        while self.arrivals and self.t0 + self.arrivals[0] <= now:
            self._new_request(self.t0 + self.arrivals.popleft(), None)
        for req in [r for r in self.queue if now - r.arrival_ns > self.timeout_ns]:
            self.queue.remove(req)
            req.end_ns, req.status = now, "timeout"
            self._fresh.append(req)
        for slot in self.slots:
            if slot.req is not None and now - slot.req.arrival_ns > self.timeout_ns:
                self._finish(slot, now, "timeout")
        for slot in self.slots:
            if slot.req is None and self.queue:
                req = self.queue.popleft()
                req.admit_ns = now
                tokens = self.prompts[req.prompt]
                req.n_prompt = len(tokens)
                slot.req, slot.pending, slot.pos, slot.out = req, list(tokens), 0, 0

    def _progress(self, now: int, force: bool = False) -> None:
        if not force and now - self._last_progress < PROGRESS_EVERY_NS:
            return
        self._last_progress = now
        done = [{"ttft_ns": r.stamps[0] - r.arrival_ns if r.stamps else None,
                 "gaps_ns": [b - a for a, b in zip(r.stamps, r.stamps[1:])],
                 "e2e_ns": r.end_ns - r.arrival_ns if r.end_ns else None, "status": r.status,
                 "n_generated": r.n_generated} for r in self._fresh]
        self._fresh = []
        self.emit(protocol.PROGRESS, index=self.index, test=level_name(self.level), elapsed_s=(now - self.t0) / 1e9,
                  active=sum(1 for s in self.slots if s.req is not None), queue=len(self.queue),
                  sent=len(self.requests), done=done)

    def run(self) -> dict[str, Any]:
        import numpy as np

        from lab.engine.batched import _Batch

        L = self.L
        self.ctx = ctx = self.bench.ctx
        cptr, n_vocab, model = ctx.ptr, self.bench.model.n_vocab, self.bench.model
        cap = max(1, min(ctx.n_batch, int(L.llama_n_ctx(cptr))))
        batch = _Batch(L, cap)
        tok, pos, seq, logits = (np.zeros(cap, dtype=np.int32), np.zeros(cap, dtype=np.int32),
                                 np.zeros(cap, dtype=np.int32), np.zeros(cap, dtype=np.int8))
        self.t0 = time.perf_counter_ns()
        self._last_progress = self.t0
        if self.level.get("users") is not None:
            for user in range(int(self.level["users"])):
                self._new_request(self.t0, user)
        try:
            while True:
                now = time.perf_counter_ns()
                self._admit(now)
                active = [s for s in self.slots if s.req is not None]
                if not active:
                    if not self.queue and not self.arrivals:
                        break
                    if self.arrivals:  # idle until the next arrival
                        time.sleep(max(0.0, (self.t0 + self.arrivals[0] - time.perf_counter_ns()) / 1e9))
                    continue
                # generating slots first (one token each), then prompt chunks in the room left
                n, owners = 0, []
                for s in active:
                    if not s.pending:
                        tok[n], pos[n], seq[n], logits[n] = s.last, s.pos, s.seq, 1
                        owners.append((n, s))
                        n += 1
                for s in active:
                    if s.pending and n < cap:
                        take = s.pending[: cap - n]
                        k = len(take)
                        tok[n:n + k], pos[n:n + k], seq[n:n + k], logits[n:n + k] = take, np.arange(s.pos, s.pos + k), s.seq, 0
                        s.pending = s.pending[k:]
                        s.pos += k
                        if not s.pending:  # the prompt's last token gives the first answer token
                            logits[n + k - 1] = 1
                            owners.append((n + k - 1, s))
                        n += k
                for i, s in owners:
                    if s.out:  # a generating slot's token now has a position
                        s.pos += 1
                batch.fill(tok[:n], pos[:n], seq[:n], logits[:n])
                rc = L.llama_decode(cptr, batch.b)
                if rc < 0:
                    raise LabError(f"llama_decode failed with code {rc} (out of memory?)")
                self.steps += 1
                self.active_steps += len(active)
                self.max_active = max(self.max_active, len(active))
                if rc != 0:  # no room in the KV cache for this batch: its requests fail
                    now = time.perf_counter_ns()
                    for s in active:
                        self._finish(s, now, "failed")
                    continue
                for i, s in owners:
                    token = int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(cptr, i), shape=(n_vocab,))))
                    now = time.perf_counter_ns()
                    req = s.req
                    assert req is not None
                    req.stamps.append(now)
                    s.out += 1
                    s.last = token
                    eog = model.is_eog(token)
                    req.n_generated = s.out - (1 if eog else 0)
                    if eog or s.out >= self.max_tokens:
                        self._finish(s, time.perf_counter_ns())
                self._progress(time.perf_counter_ns())
        finally:
            batch.free()
        end = time.perf_counter_ns()
        self._progress(end, force=True)
        return {"requests": [r.record(self.t0) for r in self.requests], "level_ns": end - self.t0,
                "max_active": self.max_active, "steps": self.steps,
                "mean_active": self.active_steps / self.steps if self.steps else None}


def _warm_up(bench: Any, prompt: list[int]) -> None:
    """One short untimed decode (prompt, then one token), as every test is warmed up."""
    ctx = bench.ctx
    ctx.decode(prompt[:32])
    ctx.decode_one(bench.model.bos if bench.model.add_bos else prompt[0])
    ctx.synchronize()
    ctx.clear()


def run_load_job(payload: dict[str, Any], emit: Emit) -> None:
    """Entry point in the child for ``kind == "load"``: load the model once, then serve each
    level in a context of its own (its peak RSS measured from a reset high-water mark)."""
    from lab.engine.workloads import Bench
    from lab.engine.worker import peak_rss_bytes, reset_peak_rss

    cp = ContextParams(**payload["ctx"])
    job = BenchJob(model=ModelParams(**payload["model"]), items=[], seed=int(payload.get("seed", 1234)),
                   prompts=[ChatPrompt(**p) for p in payload["prompts"]])
    bench = Bench(job, emit)
    try:
        bench.load()
        prompts = bench.chat_tokens()
        template = bench.model.chat_template_used()
        for index, level in enumerate(payload["levels"]):
            name = level_name(level)
            server = Server(bench, prompts, level, payload, index, emit)
            n_ctx = server.n_ctx()
            bench.release_unless(cp, n_ctx, (server.n_slots, True))
            reset_ok = reset_peak_rss()
            # the level's samples start where its high-water mark starts: after the previous
            # level's context is freed, never while it is still held
            emit(protocol.TEST_START, index=index, test=name, slots=level_slots(level))
            bench.context(cp, n_ctx, (server.n_slots, True))
            if payload.get("warmup", True):
                _warm_up(bench, prompts[0])
            figures = server.run()
            emit(protocol.TEST_END, index=index, test=name, peak_rss_bytes=peak_rss_bytes(), mono=time.monotonic(),
                 rss_reset_failed=not reset_ok, n_ctx=int(bench.llm.lib().llama_n_ctx(bench.ctx.ptr)),
                 slots=server.n_slots, chat_template=template, **bench.allocated(), **figures)
    finally:
        bench.close()
