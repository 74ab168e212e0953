"""``rightsizer load``: serve a model to many users at once and judge it against a latency
objective — throughput, TTFT/ITL/e2e percentiles, goodput and SLO attainment per level."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from lab.cli.db import db_option, open_store
from lab.cli.output import Column, emit, format_option, human_bytes
from lab.errors import LabError
from lab.ids import short_id
from lab.params import parse_ints, parse_words

# -o json: one object per level with these keys (``users`` or ``rate``), then the rest
JSON_KEYS = ("requests", "completed", "failed", "output_tps", "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms",
             "itl_p95_ms", "e2e_p95_ms", "goodput_rps", "slo_attainment")
_FROM_ROW = {"requests": "load_requests", "completed": "load_completed", "failed": "load_failed"}


def _f(spec: str):
    return lambda v: format(v, spec)


COLUMNS = [
    Column("level", "level", align="left"),
    Column("n_seq", "slots"),
    Column("requests", "requests"),
    Column("completed", "done"),
    Column("failed", "failed"),
    Column("load_rps", "req/s", _f(".2f")),
    Column("output_tps", "out t/s", _f(".1f")),
    Column("ttft_p50_ms", "TTFT p50 ms", _f(".0f")),
    Column("ttft_p95_ms", "TTFT p95 ms", _f(".0f")),
    Column("itl_p95_ms", "ITL p95 ms", _f(".1f")),
    Column("e2e_p95_ms", "e2e p95 ms", _f(".0f")),
    Column("goodput_rps", "goodput req/s", _f(".2f")),
    Column("slo_attainment", "SLO %", _f(".1f")),
    Column("peak_rss_bytes", "peak RSS", human_bytes),
    Column("kv_bytes", "KV cache", human_bytes),
]


def level_record(row: dict[str, Any]) -> dict[str, Any]:
    """A stored level row as the json output's object: ``users`` or ``rate`` first, then
    :data:`JSON_KEYS`, whether the level kept the objective, then its other figures."""
    from lab.load import passes

    rec: dict[str, Any] = {"users": row["load_users"]} if row.get("load_users") is not None else {"rate": row.get("load_rate")}
    rec.update({k: row.get(_FROM_ROW.get(k, k)) for k in JSON_KEYS})
    rec["passes"] = passes(row)
    for key in ("test", "n_seq", "load_rps", "ttft_ms", "itl_p50_ms", "itl_p99_ms", "e2e_p50_ms", "e2e_p99_ms",
                "queue_p95_ms", "peak_rss_bytes", "peak_vram_bytes", "kv_bytes", "alloc_kv_bytes", "n_ctx",
                "load_max_active", "load_mean_active", "load_duration_s", "slo", "run_id", "model_filename"):
        rec[key] = row.get(key)
    return rec


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float]:
    out = []
    for word in parse_words(value or ""):
        try:
            out.append(float(word))
        except ValueError:
            raise click.BadParameter(f"takes a comma list of numbers, e.g. 0.5,1,2 ('{word}' is not one)") from None
    return out


def _users(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int]:
    try:
        return parse_ints(value or "", "--users", minimum=1)
    except LabError as exc:
        raise click.BadParameter(str(exc)) from None


class _Live:
    """One status line on stderr while a level runs (only on a terminal)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if event["event"] == "load_progress":
            def ms(v: Any) -> str:
                return "n/a" if v is None else f"{v:.0f}"
            line = (f"{event['test']}  {event['elapsed_s']:.0f}s  active {event['active']}  queue {event['queue']}  "
                    f"done {event['completed']}  failed {event['failed']}  TTFT p50/p95 {ms(event['ttft_p50_ms'])}/"
                    f"{ms(event['ttft_p95_ms'])} ms  ITL p95 {ms(event['itl_p95_ms'])} ms")
            sys.stderr.write("\r\033[K" + line[:200])
            sys.stderr.flush()
        elif event["event"] in ("level", "run_end"):
            self.clear()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


@click.command()
@click.argument("model")
@click.option("--users", default=None, callback=_users, help="Closed-loop levels: concurrent users, comma list (each sends its next request when the last one ends).")
@click.option("--rate", "rates", default=None, callback=_floats, help="Open-loop levels: Poisson arrivals in requests/s, comma list.")
@click.option("--slots", default=4, show_default=True, type=int, help="--rate: sequences served at once (requests beyond them queue).")
@click.option("--duration", "duration_s", default=30.0, show_default=True, type=float, help="Seconds each level sends requests (the ones in flight then finish).")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path), default=None, help="JSONL chat prompts (default: the bundled set).")
@click.option("--max-tokens", default=128, show_default=True, type=int, help="Tokens generated per request at most.")
@click.option("--slo-ttft-ms", type=float, default=None, help="Objective: time to first token (queue included), ms.")
@click.option("--slo-itl-p95-ms", type=float, default=None, help="Objective: a request's 95th-percentile inter-token gap, ms.")
@click.option("--slo-e2e-ms", type=float, default=None, help="Objective: end-to-end time of a request, ms.")
@click.option("--find-max", is_flag=True, help="Search for the most users (or the highest --rate) with SLO attainment ≥ 95%.")
@click.option("--max-users", default=64, show_default=True, type=int, help="--find-max: the most users tried.")
@click.option("--max-rate", default=64.0, show_default=True, type=float, help="--find-max with --rate: the highest rate tried.")
@click.option("-t", "--threads", type=int, default=None, help="Threads (default: physical cores).")
@click.option("-ngl", "--n-gpu-layers", default=-1, show_default=True, type=int, help="Layers offloaded to the GPU (-1: all).")
@click.option("--seed", default=1234, show_default=True, type=int, help="Seed of the arrivals and of each request's prompt.")
@click.option("--request-timeout", "request_timeout_s", default=120.0, show_default=True, type=float, help="A request still unanswered after this many seconds counts as failed.")
@click.option("--force", is_flag=True, help="Run even when the memory estimate exceeds available memory.")
@click.option("--label", default=None, help="A note stored with the run.")
@format_option(choices=("table", "md", "json", "jsonl"))
@db_option
def load(model: str, users: list[int], rates: list[float], slots: int, duration_s: float, prompts_file: Path | None,
         max_tokens: int, slo_ttft_ms: float | None, slo_itl_p95_ms: float | None, slo_e2e_ms: float | None,
         find_max: bool, max_users: int, max_rate: float, threads: int | None, n_gpu_layers: int, seed: int,
         request_timeout_s: float, force: bool, label: str | None, fmt: str, db_path: Path | None) -> None:
    """Serve MODEL (a .gguf path, a library name, 'demo' or endpoint:NAME) to many users at once.

    Each level runs for --duration seconds: --users N keeps N requests in flight (closed loop),
    --rate R sends Poisson arrivals at R requests/s (open loop; queue time counts in TTFT).
    Requests are the prompts' chat messages through the model's template, decoded greedily with
    continuous batching in one context. Goodput is the rate of requests meeting every objective.
    """
    from lab.load import LoadOptions, Objective, run_load

    source = click.get_current_context().get_parameter_source("slots")
    if users and source == click.core.ParameterSource.COMMANDLINE:
        raise LabError("--slots is for --rate levels; with --users every user has a slot")
    objective = Objective(slo_ttft_ms, slo_itl_p95_ms, slo_e2e_ms)
    options = LoadOptions(model=model, users=users, rates=rates, slots=slots, duration_s=duration_s,
                          prompts_file=prompts_file, max_tokens=max_tokens, objective=objective, find_max=find_max,
                          max_users=max_users, max_rate=max_rate, threads=threads, n_gpu_layers=n_gpu_layers,
                          seed=seed, request_timeout_s=request_timeout_s, force=force, label=label)
    store = open_store(db_path)
    live = _Live(sys.stderr.isatty())
    try:
        outcome = run_load(options, store, on_event=live)
    finally:
        live.clear()
    records = [level_record(r) for r in outcome.levels]
    rows = [dict(r, level=row["test"]) for r, row in zip(records, outcome.levels)]
    emit(rows, COLUMNS, fmt, json_rows=records)
    if fmt in ("table", "md"):
        click.echo(f"objective: {objective.describe()} (a level passes with SLO attainment ≥ 95%)")
        if find_max:
            what = "requests/s" if rates else "users"
            best = outcome.max_level or 0
            kv = outcome.max_kv_bytes
            click.echo(f"max {what} at the objective: {best:g}" + (f" (KV cache {human_bytes(kv)})" if kv else "")
                       if best else f"max {what} at the objective: none (the smallest level tried fails it)")
    click.echo(f"stored {len(outcome.levels)} levels in {store.path} (run {short_id(outcome.run_id or '')})", err=True)
    if outcome.status != "ok":
        click.echo(f"error: {outcome.error}", err=True)
        raise SystemExit(1)


COMMANDS = [load]
