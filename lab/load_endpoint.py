"""The same load against an ``endpoint:NAME``: closed-loop users or Poisson arrivals driven by
threads, each request streamed through the ``openai`` client, so the incumbent is measured
under the load a local model gets.

Times come from this process's monotonic clock: a request's TTFT and e2e count from its
arrival (an open-loop request that a busy machine sends late carries the delay). The server's
own queue is invisible from here, so ``queue_ms`` is NULL; it is inside TTFT as for a local
model. Memory and KV figures belong to the server's machine and are NULL too.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from lab import __version__
from lab.engine.runner import ChildOutcome
from lab.engine.serving import arrival_offsets_ns, level_name
from lab.load_figures import level_figures, request_figures, running_figures, store_level_rows
from lab.store import new_id

PROGRESS_S = 0.25


class EndpointRun:
    """One ``load`` run against an endpoint (``o`` is a :class:`lab.load.LoadOptions`);
    :meth:`serve` has the engine run's shape."""

    def __init__(self, o: Any, store: Any, emit: Any, cancel: threading.Event | None):
        from lab.bench import load_prompts
        from lab.endpoints import endpoint_name, get_endpoint
        from lab.quality import record_machine

        self.o, self.store, self.emit, self.cancel = o, store, emit, cancel
        self.endpoint = get_endpoint(store, endpoint_name(o.model) or "")
        self.prompts = load_prompts(o.prompts_file)
        self.machine_id = record_machine(store)
        e = self.endpoint
        self.model_row = {"id": e.id, "model_filename": e.label}
        config = {"endpoint": {"id": e.id, "name": e.name, "url": e.url, "model": e.model}, "users": o.users,
                  "rates": o.rates, "duration_s": o.duration_s, "max_tokens": o.max_tokens,
                  "n_prompts": len(self.prompts), "seed": o.seed, "request_timeout_s": o.request_timeout_s,
                  "find_max": o.find_max, "max_users": o.max_users if o.find_max else None}
        self.run_id = store.create_run("load", machine_id=self.machine_id, model_id=e.id, model_filename=e.label,
                                       config=config, lab_version=__version__, label=o.label,
                                       slo=o.objective.to_json())
        self.rows: list[dict[str, Any]] = []

    def serve(self, levels: list[dict[str, Any]]) -> ChildOutcome:
        from lab.endpoints import Caller, EndpointError

        try:
            caller = Caller(self.endpoint, timeout_s=self.o.request_timeout_s, max_retries=0)
        except EndpointError as exc:
            return ChildOutcome("failed", None, None, str(exc), "")
        try:
            for index, level in enumerate(levels):
                if self.cancel is not None and self.cancel.is_set():
                    return ChildOutcome("cancelled", None, None, "cancelled by the user", "")
                self._level(caller, index, level)
        except KeyboardInterrupt:
            return ChildOutcome("cancelled", None, None, "cancelled by the user", "", extra={"interrupted": True})
        finally:
            caller.close()
        return ChildOutcome("ok", 0, None, None, "")

    def _level(self, caller: Any, index: int, level: dict[str, Any]) -> None:
        import random

        from lab.endpoints import EndpointError

        o = self.o
        name = level_name(level)
        users = level.get("users")
        self.emit({"event": "level_start", "run_id": self.run_id, "test": name, "slots": None,
                   **({"users": users} if users is not None else {"rate": level["rate"]})})
        rng = random.Random(o.seed + index)
        lock = threading.Lock()
        records: list[dict[str, Any]] = []
        in_flight = [0]
        t0 = time.perf_counter_ns()
        deadline = t0 + int(o.duration_s * 1e9)

        def one(arrival: int, user: int | None) -> None:
            with lock:
                i = len(records)
                prompt = rng.randrange(len(self.prompts))
                record: dict[str, Any] = {"index": i, "user": user, "prompt": prompt, "arrival_ns": arrival - t0,
                                          "gaps_ns": [], "n_prompt_tokens": None, "n_generated": 0}
                records.append(record)
                in_flight[0] += 1
            sent = time.perf_counter_ns()
            try:
                got = caller.stream_chat(self.prompts[prompt].messages, max_tokens=o.max_tokens)
                late = sent - arrival
                record.update(ttft_ns=late + got["ttft_ns"], gaps_ns=got["gaps_ns"], e2e_ns=late + got["e2e_ns"],
                              n_generated=got["n_generated"], n_prompt_tokens=got["n_prompt_tokens"], status="ok")
            except EndpointError as exc:
                record.update(e2e_ns=None, status="timeout" if exc.timed_out else "failed", error=str(exc))
            record["end_ns"] = time.perf_counter_ns() - t0
            with lock:
                in_flight[0] -= 1

        def user_loop(user: int) -> None:
            while time.perf_counter_ns() < deadline and not (self.cancel is not None and self.cancel.is_set()):
                one(time.perf_counter_ns(), user)

        def arrivals() -> None:
            for offset in arrival_offsets_ns(level["rate"], o.duration_s, o.seed + index):
                wait = (t0 + offset - time.perf_counter_ns()) / 1e9
                if wait > 0:
                    time.sleep(wait)
                if self.cancel is not None and self.cancel.is_set():
                    return
                threading.Thread(target=one, args=(t0 + offset, None), daemon=True).start()

        target = [threading.Thread(target=user_loop, args=(u,), daemon=True) for u in range(users)] \
            if users is not None else [threading.Thread(target=arrivals, daemon=True)]
        for thread in target:
            thread.start()
        while True:
            for thread in target:
                thread.join(PROGRESS_S / len(target))
            with lock:
                done = [r for r in records if "end_ns" in r]
                busy = in_flight[0]
            figures = [{"ttft_ns": r.get("ttft_ns"), "gaps_ns": r["gaps_ns"], "status": r["status"]} for r in done]
            self.emit({"event": "load_progress", "run_id": self.run_id, "test": name,
                       "elapsed_s": (time.perf_counter_ns() - t0) / 1e9, "active": busy, "queue": None,
                       "sent": len(records), **running_figures(figures)})
            if not any(t.is_alive() for t in target) and busy == 0:
                break
        end = max((r["end_ns"] for r in records), default=time.perf_counter_ns() - t0)
        requests = []
        for r in records:
            figures = request_figures(dict(r, queue_ns=None))
            figures.update(prompt_id=self.prompts[r["prompt"]].id, meets_slo=int(o.objective.meets(figures)))
            requests.append(figures)
        e = self.endpoint
        row = {"id": new_id(), "run_id": self.run_id, "machine_id": self.machine_id, "model_id": e.id,
               "model_filename": e.label, "model_type": f"{e.label} ({e.model})", "test": name, "n_prompt": 0,
               "n_gen": o.max_tokens, "n_depth": 0, "load_users": users, "load_rate": level.get("rate"),
               "load_duration_s": o.duration_s, "endpoint_url": e.url, "peak_rss_bytes": None, "kv_bytes": None,
               **level_figures(requests, end / 1e9, o.objective)}
        store_level_rows(self.store, row, requests)
        self.rows.append(row)
        self.emit({"event": "level", "run_id": self.run_id, "row": row})

    def finish(self, status: str, error: str | None, **values: Any) -> None:
        values.pop("max_kv_bytes", None)  # the server's memory is not measured from here
        self.store.finish_run(self.run_id, status, error=error, **values)
